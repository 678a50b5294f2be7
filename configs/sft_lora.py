"""LoRA supervised fine-tuning on the built-in task world: rank-8 adapters on every projection, base frozen.

  python run.py --config=configs/sft_lora.py --config.workdir=/tmp/jaxllm/sft_lora --config.init_from=/tmp/jaxllm/pt
  python run.py --config=configs/sft_lora.py:tiny --config.workdir=W --config.init_from=TINY_PRETRAIN_WORKDIR

The checkpoints hold only the adapters (and their optimizer state); config.json points at the base via
init_from, and a later stage's init_from=W gets the merged weights. Same data and evaluation as configs/sft.py;
adapters want a larger learning rate than full fine-tuning.
"""

from configs import sft


def get_config(arg: str | None = None):
  c = sft.get_config(arg)
  c.unlock()
  c.lora.update(rank=8, alpha=16.0, dropout=0.0, targets="q,k,v,o,gate,up,down")
  c.optim.update(lr=3e-3, weight_decay=0.0)
  if arg == "tiny":
    c.lora.rank = 4
  c.lock()
  return c
