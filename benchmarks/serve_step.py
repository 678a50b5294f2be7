"""The serving engine's decode step alone: milliseconds per step of all `--slots` rows over the first n blocks of
the block KV cache (serve/slots.py), against one block of the whole context (attention over every slot, as
before the block cache). No HTTP, no prefill: what a step costs at each block count.

  python benchmarks/serve_step.py            # serve.py's model, 32 slots of 256 tokens, blocks of 64: a minute
  python benchmarks/serve_step.py --smoke    # tiny, seconds (tests/test_benchmarks_smoke.py)

Each variant is timed as the median of --steps steps after two warm-up steps (compilation not timed).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, "benchmarks"))

from serve import FULL, SMOKE  # noqa: E402  (sizes only: importing it loads no framework)


def step_ms(model, weights, slots: int, context: int, block: int, blocks: int, steps: int) -> float:
  import jax
  import numpy as np

  from jaxllm.serve import slots as slots_lib

  state = [slots_lib.empty_slots(model, slots, context, block)]

  def one() -> float:
    start = time.perf_counter()
    state[0], drawn = slots_lib.decode(model, weights, state[0], model.cfg.vocab_size, 1, blocks)
    jax.block_until_ready(drawn)
    return time.perf_counter() - start

  one(), one()
  return 1000 * float(np.median([one() for _ in range(steps)]))


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--slots", type=int, default=32)
  parser.add_argument("--context", type=int, default=256)
  parser.add_argument("--block", type=int, default=64)
  parser.add_argument("--steps", type=int, default=30)
  parser.add_argument("--smoke", action="store_true")
  parser.add_argument("--out", default="", help="write the results as JSON here")
  args = parser.parse_args(argv)
  if args.smoke:
    args.slots, args.context, args.block, args.steps = 4, 64, 16, 3
  import flax.linen as nn
  import jax
  import jax.numpy as jnp

  from jaxllm.model import ModelConfig, Transformer

  sizes = SMOKE if args.smoke else FULL
  model = Transformer(ModelConfig(vocab_size=1024, max_seq_len=args.context, **sizes))
  weights = nn.meta.unbox(model.init(jax.random.PRNGKey(0), jnp.zeros((1, 4), jnp.int32))["params"])
  n_blocks = -(-args.context // args.block)
  rows = {f"{n} x {args.block} slots": step_ms(model, weights, args.slots, args.context, args.block, n, args.steps)
          for n in range(1, n_blocks + 1)}
  rows[f"1 x {args.context} slots (whole context)"] = step_ms(model, weights, args.slots, args.context,
                                                               args.context, 1, args.steps)
  print(f"decode step of {args.slots} rows, context {args.context}:")
  for name, ms in rows.items():
    print(f"  attending over {name:>28}: {ms:6.2f} ms")
  result = {"slots": args.slots, "context": args.context, "model": sizes, "step_ms": rows}
  if args.out:
    with open(args.out, "w") as f:
      json.dump(result, f, indent=1)
  return result


if __name__ == "__main__":
  main()
