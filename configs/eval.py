"""Evaluate a workdir or a Hugging Face model folder (see jaxllm/stages/eval.py for every task).

  python run.py --config=configs/eval.py --config.init_from=W --config.eval.task=accuracy

Prints one JSON object on the last stdout line. Built-in held-out answer accuracy on 200 problems: about a
minute on 2 CPU cores for a 3M-parameter model.
"""

from configs import base


def get_config(arg: str | None = None):
  c = base.get_config()
  c.stage = "eval"
  c.steps = 0
  c.eval.task = "accuracy"
  c.eval.examples = 200  # held-out items evaluated (answer / classification tasks)
  c.eval.batch_size = 32  # prompts generated together
  c.sampling.system = ""  # system turn before each GSM8K question ('' = the built-in world's)
  c.eval.instruction = ""  # classification: text put before each item, e.g. the SFT instruction
  c.eval.batches = 8  # perplexity / pair accuracy: held-out batches
  c.sample.num = 0
  if arg == "tiny":
    c.eval.update(examples=16, batch_size=16, batches=2)
    c.sampling.max_new_tokens = 32
    c.data.update(batch_size=8, seq_len=64, eval_examples=50)
  c.lock()
  return c
