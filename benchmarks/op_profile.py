"""Where a jaxllm train step's time goes, op by op: a profiler trace of the jitted step, summed per XLA op kind.

  python benchmarks/op_profile.py --size=pipeline            # the quickstart's model; --size as in train_step.py
  taskset -c 0 python benchmarks/op_profile.py --size=pipeline --top=12   # one core: no overlap between ops
  python benchmarks/op_profile.py --ops="copy_bitcast_fusion|bitcast_select_fusion"   # other op kinds singly
  python benchmarks/op_profile.py --smoke                    # tiny, seconds (tests/test_benchmarks_smoke.py)

Builds the `jax_full` row of `train_step.py` (the step exactly as `train.fit` jits it), runs --warmup steps, traces
--steps more with `jax.profiler`, and reads the trace back with `jax.profiler.ProfileData`. Prints, per step: the
wall time, then the time of every executed op summed by kind (the op name without its `.N` suffix:
`ynn_fusion` = products XLA:CPU hands to YNNPACK, `dot` / `dot_general` = products it runs itself, `*_fusion` =
fused elementwise work), and the --top single ops of the kinds --ops names (default: the products) with the HLO op they come from. Op times are summed over
every thread, so with several cores they can exceed the wall time (ops overlap); on one core they come to about
the wall time (the traced steps run a little slower than the timed ones).
"""
from __future__ import annotations

import argparse
import collections
import glob
import json
import os
import re
import sys
import tempfile
import types

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, "benchmarks"))

PRODUCTS = "dot|dot_general|ynn_fusion"  # op kinds that are matrix products on XLA:CPU


def _op_events(trace_dir: str):
  """(name, duration ns) of every op executed in the trace (XLA's runtime threads; Python frames left out)."""
  import jax

  [path] = glob.glob(os.path.join(trace_dir, "**", "*.xplane.pb"), recursive=True)
  for plane in jax.profiler.ProfileData.from_file(path).planes:
    for line in plane.lines:
      if line.name == "python":
        continue
      for event in line.events:
        if not event.name.startswith(("ThunkExecutor", "SlinkyThreadPool", "ThreadpoolListener", "end: ")):
          yield event.name, event.duration_ns


def _hlo_origin(hlo_text: str, op: str) -> str:
  """`shape = dot(...)` and the jax op it lowers, from the compiled HLO."""
  for line in hlo_text.split("\n"):
    if re.search(rf"%{re.escape(op)} = ", line):
      shape = line.split(" = ", 1)[1].split(" ", 1)[0]
      origin = re.search(r'op_name="([^"]+)"', line)
      return f"{shape} {origin[1] if origin else ''}"
  return "(inside a fusion)"


def profile(size: str, steps: int, warmup: int, top: int, ops: str = PRODUCTS) -> dict:
  """Wall ms per step, op ms per step by kind, and the `top` single ops whose kind matches the regex `ops`."""
  import jax
  import train_step
  from jaxllm import sharding

  single = re.compile(rf"({ops})(\.\d+)?$")
  s = train_step.SIZES[size]
  args = types.SimpleNamespace(dtype="", remat="none", chunk_size=0)
  env = train_step._jax_env(s, args, "pretrain")
  state, step_fn = train_step.jax_step(env, "pretrain")
  host_batch = train_step.lm_batches(s, env.config.model.vocab_size, 1)[0]
  with env.mesh_context():  # before the first step donates `state`
    hlo = step_fn.lower(state, sharding.put_batch(host_batch, env.mesh)).compile().as_text()
  run, _ = train_step.step_loop(env, state, step_fn, [host_batch])
  run(warmup)
  wall_ms = 1000 * run(steps) / steps
  with tempfile.TemporaryDirectory() as trace_dir:
    with jax.profiler.trace(trace_dir):
      run(steps)
    by_kind, by_op = collections.Counter(), collections.Counter()
    for name, ns in _op_events(trace_dir):
      by_kind[re.sub(r"\.\d+$", "", name)] += ns / 1e6 / steps
      if single.match(name):
        by_op[name] += ns / 1e6 / steps
  return {"size": size, "steps": steps, "wall_ms": wall_ms, "cores": len(os.sched_getaffinity(0)),
          "ops_ms": dict(by_kind.most_common()),
          "top_ops": [{"op": op, "ms": ms, "hlo": _hlo_origin(hlo, op)} for op, ms in by_op.most_common(top)]}


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--size", default="pipeline")
  parser.add_argument("--smoke", action="store_true", help="--size=smoke, 1 traced step")
  parser.add_argument("--steps", type=int, default=3, help="traced (and, before them, timed) steps")
  parser.add_argument("--warmup", type=int, default=2, help="untimed steps (compilation included)")
  parser.add_argument("--top", type=int, default=10, help="single ops listed")
  parser.add_argument("--ops", default=PRODUCTS, help="regex of the op kinds listed singly (default: the products)")
  parser.add_argument("--out", default="", help="write the results as JSON here")
  args = parser.parse_args(argv)
  if args.smoke:
    args.size, args.steps, args.warmup, args.top = "smoke", 1, 1, 3
  result = profile(args.size, args.steps, args.warmup, args.top, args.ops)
  total = sum(result["ops_ms"].values())
  print(f"size {result['size']}, {result['cores']} core(s): step {result['wall_ms']:.0f} ms wall, "
        f"ops {total:.0f} ms summed over threads")
  print("| op kind | ms per step | share of op time |\n|---|---:|---:|")
  for kind, ms in list(result["ops_ms"].items())[:15]:
    print(f"| {kind} | {ms:.1f} | {ms / total:.0%} |")
  print(f"\nlargest single ops of kind {args.ops} (ms per step):")
  for p in result["top_ops"]:
    print(f"  {p['ms']:6.1f}  {p['op']:16s} {p['hlo'][:150]}")
  if args.out:
    with open(args.out, "w") as f:
      json.dump(result, f, indent=1)
  return result


if __name__ == "__main__":
  main()
