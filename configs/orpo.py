"""ORPO: supervised fine-tuning and preference optimisation in one reference-free stage (jaxllm/losses/orpo.py).

  python run.py --config=configs/orpo.py --config.init_from=SFT_WORKDIR --config.workdir=/tmp/jaxllm/orpo
  python run.py --config=configs/orpo.py --config.init_from=W --config.workdir=S --config.lora.rank=8
  python run.py --config=configs/orpo.py:tiny --config.init_from=W --config.workdir=S    # smoke test

The same pairs and schedule as configs/dpo.py, but no reference policy: the state holds one copy of the weights
and a step runs one forward pass per pair row. ORPO needs no SFT stage before it (init_from may be a pretrained
model); from an SFT model it refines. Held-out metrics: `accuracy` (share of pairs whose chosen answer has the
larger log-odds), `log_odds_ratio`, `chosen_nll`.
"""
import ml_collections

from configs import base


def get_config(arg: str | None = None):
  c = base.get_config()
  c.stage = "orpo"
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

  c.orpo = ml_collections.ConfigDict()
  c.orpo.lam = 0.1  # weight of the odds-ratio term beside the chosen answers' NLL (the paper's lambda)
  if arg == "tiny":
    c.steps = 10
    base.use_tiny_model(c)
    c.data.update(batch_size=8, seq_len=128, train_examples=200, eval_examples=16)
    c.eval.update(every=5, batches=2)
    c.checkpoint.every = 5
    c.log.every = 5
  c.lock()
  return c
