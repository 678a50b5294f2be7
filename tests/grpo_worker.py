"""One process of tests/test_grpo_scaling.py: `python run.py` itself (configs/grpo.py with the --config.* flags
given, dist.* included), plus a test reward and a dump of each rollout's rows.

  python tests/grpo_worker.py DUMP_DIR --config=configs/grpo.py:tiny [--config.<key>=<value> ...]

Before run.py's main starts it registers the `test_fives` reward (how often a reply says "5": signal even for
a random policy) and wraps rl.rollout so each process writes the rows it holds of rollout k to
DUMP_DIR/rollout{k}_p{process}.npz.
"""
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import jax  # noqa: E402
import numpy as np  # noqa: E402
from absl import app  # noqa: E402

import run  # noqa: E402
from jaxllm import rewards, rl  # noqa: E402

DUMPED = ("tokens", "segment_ids", "advantages", "ref_logprobs", "sampler_logprobs", "loss_mask")


@rewards.register("test_fives")
def _fives(completions, references):
  return np.array([min(c.count("5"), 4) / 4 for c in completions], np.float32)


def _dumping(rollout, out: str):
  count = [0]

  def wrapped(*args, **kwargs):
    result = rollout(*args, **kwargs)
    np.savez(os.path.join(out, f"rollout{count[0]}_p{jax.process_index()}.npz"),
             **{k: result.batch[k] for k in DUMPED if k in result.batch})
    count[0] += 1
    return result
  return wrapped


if __name__ == "__main__":
  out = sys.argv.pop(1)
  os.makedirs(out, exist_ok=True)
  rl.rollout = _dumping(rl.rollout, out)
  os.chdir(REPO)
  app.run(run.main, flags_parser=run.parse_flags)
