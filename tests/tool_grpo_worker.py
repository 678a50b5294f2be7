"""A tiny GRPO run whose sampler is forced to call the calculator (round 0: a call, then an answer), so the
tool loop, its masks and the grpo loss run on whatever devices this process has (tests/test_tools.py starts it
with 1 and with 8 fake CPU devices).

  python tests/tool_grpo_worker.py WORKDIR TOKENIZER_DIR DATA FSDP TENSOR
"""
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from jaxllm import sampling  # noqa: E402
from jaxllm.tools import calls, rollouts  # noqa: E402


def forced_generate(tokenizer):
  """A stand-in for sampling.generate: every row first calls the calculator, then answers (rows alternate
  between a right and a wrong answer so groups carry signal)."""
  call = tokenizer.encode(calls.format_call("calculator", {"expression": "2 + 3"})) + [tokenizer.im_end_id]

  def generate(model, weights, prompts, params, rng, lora=None, pad_id=0, samples_per_prompt=1, **_):
    rows = len(prompts) * samples_per_prompt
    first = samples_per_prompt > 1  # round 0 samples G per prompt; continuations one per row
    out = np.full((rows, params.max_new_tokens), pad_id, np.int32)
    lengths = np.zeros(rows, np.int32)
    for r in range(rows):
      ids = call if first else tokenizer.encode(f"#### {5 if r % 2 else 4}") + [tokenizer.im_end_id]
      ids = ids[:params.max_new_tokens]
      out[r, :len(ids)], lengths[r] = ids, len(ids)
    return sampling.Generation(out, np.where(out != pad_id, -1.0, 0.0).astype(np.float32), lengths,
                               np.ones(rows, bool))
  return generate


def main() -> None:
  workdir, tokenizer_dir, data, fsdp, tensor = sys.argv[1:6]
  from conftest import tiny_config
  from jaxllm.stages import grpo
  from jaxllm.tokenizer import Tokenizer

  config = tiny_config("grpo", workdir, tokenizer_dir, steps=2, **{
      "tools.names": "calculator", "sampling.max_new_tokens": 96, "data.seq_len": 256, "model.max_seq_len": 256,
      "mesh.data": int(data), "mesh.fsdp": int(fsdp), "mesh.tensor": int(tensor), "sample.num": 0,
      "eval.every": 100, "rl.eval_prompts": 0, "checkpoint.every": 2})
  rollouts.sampling.generate = forced_generate(Tokenizer.load(tokenizer_dir))
  grpo.run(config)


if __name__ == "__main__":
  main()
