"""SimPO: reference-free preference optimisation of a policy on preference pairs (jaxllm/losses/simpo.py).

  python run.py --config=configs/simpo.py --config.init_from=SFT_WORKDIR --config.workdir=/tmp/jaxllm/simpo
  python run.py --config=configs/simpo.py --config.init_from=W --config.workdir=S --config.lora.rank=8
  python run.py --config=configs/simpo.py:tiny --config.init_from=W --config.workdir=S    # smoke test

The same pairs and schedule as configs/dpo.py, but no reference policy: the state holds one copy of the weights
and a step runs one forward pass per pair row. Held-out metrics: `accuracy` (share of pairs whose chosen answer
has the larger per-token log-probability), `margin`, `chosen_logp`.
"""
import ml_collections

from configs import base


def get_config(arg: str | None = None):
  c = base.get_config()
  c.stage = "simpo"
  c.steps = 200
  c.optim.lr = 1e-4
  c.optim.warmup_steps = 20
  c.optim.weight_decay = 0.0
  c.data.seq_len = 104  # one row per pair (prompt once, both answers): <= 100 tokens on the built-in world
  c.data.train_examples = 8000  # built-in world: training pairs
  c.data.eval_examples = 256  # built-in world: held-out pairs
  c.eval.every = 50
  c.eval.batches = 16  # 16 x 16 = all 256 held-out pairs
  c.checkpoint.every = 100
  c.sample.num = 0

  c.simpo = ml_collections.ConfigDict()
  c.simpo.beta = 2.0  # scale of the per-token log-prob difference (the paper's range: 2 - 2.5)
  c.simpo.gamma = 1.0  # target reward margin; the paper keeps gamma / beta near 0.5
  if arg == "tiny":
    c.steps = 10
    base.use_tiny_model(c)
    c.data.update(batch_size=8, seq_len=128, train_examples=200, eval_examples=16)
    c.eval.update(every=5, batches=2)
    c.checkpoint.every = 5
    c.log.every = 5
  c.lock()
  return c
