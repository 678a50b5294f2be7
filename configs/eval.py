"""Evaluate a workdir or a Hugging Face model folder (see jaxllm/stages/eval.py for every task).

  python run.py --config=configs/eval.py --config.init_from=W --config.eval.task=accuracy
  python run.py --config=configs/eval.py --config.init_from=W --config.eval.task=lm_eval:hellaswag,arc_easy

Prints one JSON object on the last stdout line. Built-in held-out answer accuracy on 200 problems: about a
minute on 2 CPU cores for a 3M-parameter model. lm_eval tasks: docs/evaluation.md.
"""

from configs import base


def get_config(arg: str | None = None):
  c = base.get_config()
  c.stage = "eval"
  c.steps = 0
  c.eval.task = "accuracy"
  c.eval.examples = 200  # held-out items evaluated (answer / classification tasks)
  c.eval.batch_size = 32  # prompts generated together
  c.eval.unanswerable = 0  # built-in world, task accuracy: held-out problems missing a number (refusal_rate)
  c.sampling.system = ""  # system turn before each GSM8K question ('' = the built-in world's; lm_eval: none)
  c.eval.instruction = ""  # classification: text put before each item, e.g. the SFT instruction
  c.eval.batches = 8  # perplexity / pair accuracy: held-out batches
  c.eval.lm_eval_include = ""  # lm_eval: a folder of extra task YAML files ('' = lm_eval's own tasks only)
  c.eval.lm_eval_chat = False  # lm_eval: render prompts with the model's chat template (sampling.system as system turn)
  c.eval.lm_eval_fewshot = -1  # lm_eval: few-shot examples per prompt (-1 = each task's default)
  c.eval.lm_eval_limit = 0  # lm_eval: at most this many documents per task (0 = all)
  c.sample.num = 0
  if arg == "tiny":
    c.eval.update(examples=16, batch_size=16, batches=2)
    c.sampling.max_new_tokens = 32
    c.data.update(batch_size=8, seq_len=64, eval_examples=50)
  c.lock()
  return c
