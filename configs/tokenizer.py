"""Train the byte-level BPE tokenizer.

  python run.py --config=configs/tokenizer.py --config.workdir=/tmp/jaxllm/tok
  python run.py --config=configs/tokenizer.py --config.workdir=W --config.tokenizer.vocab_size=8192 \
      --config.data.name=https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt

Built-in task world, 1k vocab: a few seconds on 2 CPU cores. Writes W/tokenizer/ (tokenizer.tiktoken + config).
"""

from configs import base


def get_config(arg: str | None = None):
  c = base.get_config()
  c.stage = "tokenizer"
  if arg == "tiny":
    c.tokenizer.train_docs = 2000
    c.tokenizer.vocab_size = 512
  c.lock()
  return c
