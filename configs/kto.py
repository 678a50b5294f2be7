"""KTO: optimise a policy against its frozen starting point on single answers tagged desirable or undesirable
(jaxllm/losses/kto.py, data in jaxllm/data/kto.py).

  python run.py --config=configs/kto.py --config.init_from=SFT_WORKDIR --config.workdir=/tmp/jaxllm/kto
  python run.py --config=configs/kto.py --config.init_from=W --config.workdir=K \
      --config.data.name=kto_en_demo --config.data.dataset_info=PATH/dataset_info.json   # LLaMA-Factory kto_tag data
  python run.py --config=configs/kto.py:tiny --config.init_from=W --config.workdir=K    # smoke test

With no data.name the answers are the built-in world's preference pairs split in two: each correct worked answer
tagged desirable, each wrong one undesirable. The reference policy is init_from's model (under LoRA: the base
without adapters). Held-out metrics: `accuracy` (share of answers whose implicit reward falls on the side of
the KL reference point their tag asks for), `kl`, `desirable_reward` / `undesirable_reward`.
"""
import ml_collections

from configs import base


def get_config(arg: str | None = None):
  c = base.get_config()
  c.stage = "kto"
  c.steps = 200
  c.optim.lr = 1e-4
  c.optim.warmup_steps = 20
  c.optim.weight_decay = 0.0  # decay would pull the policy away from the reference on its own
  c.data.seq_len = 104  # one row per answer: the prompt once, its answer, and another example's (the KL sample)
  c.data.train_examples = 8000  # built-in world: tagged answers (half of them desirable)
  c.data.eval_examples = 256  # built-in world: held-out tagged answers
  c.eval.every = 50
  c.eval.batches = 16  # 16 x 16 = all 256 held-out answers
  c.checkpoint.every = 100
  c.sample.num = 0

  c.kto = ml_collections.ConfigDict()
  c.kto.beta = 0.1  # scale of the implicit reward log pi/ref around the KL reference point
  # lambda_D, lambda_U: the paper keeps lambda_D n_D / (lambda_U n_U) in [1, 4/3] for n_D desirable and n_U
  # undesirable examples; the built-in world has as many of each
  c.kto.desirable_weight = 1.0
  c.kto.undesirable_weight = 1.0
  if arg == "tiny":
    c.steps = 10
    base.use_tiny_model(c)
    c.data.update(batch_size=8, seq_len=128, train_examples=200, eval_examples=16)
    c.eval.update(every=5, batches=2)
    c.checkpoint.every = 5
    c.log.every = 5
  c.lock()
  return c
