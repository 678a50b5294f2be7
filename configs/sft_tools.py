"""SFT on the built-in world with calculator demonstrations: each arithmetic step is a `<tool_call>` whose result
comes back as a `tool` turn (jaxllm/data/synthetic_tools.py); generation runs the calculator (jaxllm/tools/).

  python run.py --config=configs/pretrain.py --config.workdir=/tmp/jaxllm/pt
  python run.py --config=configs/sft_tools.py --config.workdir=/tmp/jaxllm/sft_tools --config.init_from=/tmp/jaxllm/pt
  python run.py --config=configs/eval.py --config.init_from=/tmp/jaxllm/sft_tools --config.tools.names=calculator \\
      --config.data.tools=calculator

Same token budget as configs/sft.py (200 steps of 4096 tokens) in 8 rows x 512 tokens, since a two-step
demonstration (~280 tokens) does not fit a 256-token row whole; every assistant turn (calls and the answer)
carries loss, tool results none. Result and command: docs/tools.md.
"""

from configs import sft


def get_config(arg: str | None = None):
  c = sft.get_config(arg)
  c.unlock()
  c.data.tools = "calculator"
  c.tools.names = "calculator"
  c.data.update(batch_size=8, seq_len=512)
  c.sft.train_on = "all"  # the calls are assistant turns to learn, not only the final answer
  # a call turn is ~75 tokens of a tokenizer trained on this world's prose (its JSON is spelt nearly letter by
  # letter); each turn of a reply gets this many new tokens
  c.sampling.max_new_tokens = 96
  if arg == "tiny":  # a smoke test in the tiny model's 128 tokens: demonstrations are cut, replies end on a call
    c.data.update(batch_size=8, seq_len=128)
    c.sampling.max_new_tokens = 48
  c.lock()
  return c
