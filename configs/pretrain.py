"""Pretrain a small decoder on the built-in task world (or data.name) with next-token prediction.

  python run.py --config=configs/pretrain.py --config.workdir=/tmp/jaxllm/pt
  python run.py --config=configs/pretrain.py --config.workdir=W --config.tokenizer.path=TOKENIZER_WORKDIR
  python run.py --config=configs/pretrain.py:tiny --config.workdir=W      # smoke test, well under a minute

Default (4 layers, d_model 256, ~3M params, 300 steps of 16 x 128 tokens): a few minutes on 2 CPU cores; the
held-out loss falls from ~7 (uniform over the vocab) to well under 1 on the task world.
"""

from configs import base


def get_config(arg: str | None = None):
  c = base.get_config()
  c.stage = "pretrain"
  c.steps = 300
  c.eval.every = 100
  c.checkpoint.every = 100
  c.sampling.max_new_tokens = 48  # the printed samples' continuations
  if arg == "tiny":
    c.steps = 20
    base.use_tiny_model(c)
    c.data.update(batch_size=8, seq_len=64, train_examples=2000, eval_examples=50)
    c.eval.update(every=10, batches=2)
    c.checkpoint.every = 10
    c.log.every = 5
  c.lock()
  return c
