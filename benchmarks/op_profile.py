"""Where a jaxllm train step's time goes, op by op: a profiler trace of the jitted step, summed per XLA op kind.

  python benchmarks/op_profile.py --size=pipeline            # the quickstart's model; --size as in train_step.py
  taskset -c 0 python benchmarks/op_profile.py --size=pipeline --top=12   # one core: no overlap between ops
  python benchmarks/op_profile.py --ops="copy_bitcast_fusion|bitcast_select_fusion"   # other op kinds singly
  python benchmarks/op_profile.py --smoke                    # tiny, seconds (tests/test_benchmarks_smoke.py)
  python benchmarks/op_profile.py --decode=32                # sampling.generate at batch 32 (decode.py's model)

Builds the `jax_full` row of `train_step.py` (the step exactly as `train.fit` jits it), runs --warmup steps, traces
--steps more with `jax.profiler`, and reads the trace back with `jax.profiler.ProfileData`. Prints, per step: the
wall time, then the time of every executed op summed by kind (the op name without its `.N` suffix:
`ynn_fusion` = products XLA:CPU hands to YNNPACK, `dot` / `dot_general` = products it runs itself, `*_fusion` =
fused elementwise work), and the --top single ops of the kinds --ops names (default: the products) with the HLO op they come from. Op times are summed over
every thread, so with several cores they can exceed the wall time (ops overlap); on one core they come to about
the wall time (the traced steps run a little slower than the timed ones).

With --decode=B it profiles one `sampling.generate` call instead (decode.py's model, B prompts of 128 tokens,
--new greedy tokens) and sums the products by the jax op they lower, layers merged and prefill apart from the
decode loop (`while/body`), so the table says what a decode step spends its time on.
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
import time
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


def profile_decode(batch: int, new: int) -> dict:
  """Wall s of one generate call, op ms by kind, and product ms by (prefill | decode, jax op) over the call."""
  import flax.linen as nn
  import jax
  import jax.numpy as jnp
  import numpy as np
  from decode import FULL

  from jaxllm.model import Transformer
  from jaxllm.sampling import SamplingParams, _generate_jit

  model = Transformer(FULL)
  weights = nn.meta.unbox(jax.jit(model.init)(jax.random.PRNGKey(0), jnp.zeros((1, 8), jnp.int32))["params"])
  prompts = np.random.default_rng(batch).integers(0, FULL.vocab_size, (batch, 128)).astype(np.int32)
  args = (model, weights, prompts, np.full((batch,), 128, np.int32), SamplingParams(max_new_tokens=new),
          jax.random.PRNGKey(0))
  hlo = _generate_jit.lower(*args).compile().as_text()
  run = lambda: jax.block_until_ready(_generate_jit(*args))
  run()
  start = time.perf_counter()
  run()
  wall = time.perf_counter() - start
  by_kind, by_origin = collections.Counter(), collections.Counter()
  with tempfile.TemporaryDirectory() as trace_dir:
    with jax.profiler.trace(trace_dir):
      run()
    for name, ns in _op_events(trace_dir):
      by_kind[re.sub(r"\.\d+$", "", name)] += ns / 1e6
      if re.match(rf"({PRODUCTS})(\.\d+)?$", name):
        origin = _hlo_origin(hlo, name).split(" ", 1)[-1]
        phase = "decode" if "/while/body/" in origin else "prefill"
        op = re.sub(r"layers_\d+", "layers_*", origin.rsplit("Transformer/", 1)[-1])
        by_origin[f"{phase}: {op}"] += ns / 1e6
  return {"batch": batch, "new_tokens": new, "wall_s": wall, "tokens_per_s": batch * new / wall,
          "cores": len(os.sched_getaffinity(0)), "ops_ms": dict(by_kind.most_common()),
          "products_ms": dict(by_origin.most_common())}


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--size", default="pipeline")
  parser.add_argument("--smoke", action="store_true", help="--size=smoke, 1 traced step")
  parser.add_argument("--steps", type=int, default=3, help="traced (and, before them, timed) steps")
  parser.add_argument("--warmup", type=int, default=2, help="untimed steps (compilation included)")
  parser.add_argument("--top", type=int, default=10, help="single ops listed")
  parser.add_argument("--ops", default=PRODUCTS, help="regex of the op kinds listed singly (default: the products)")
  parser.add_argument("--decode", type=int, default=0, help="profile sampling.generate at this batch instead")
  parser.add_argument("--new", type=int, default=256, help="--decode: new tokens")
  parser.add_argument("--out", default="", help="write the results as JSON here")
  args = parser.parse_args(argv)
  if args.decode:
    result = profile_decode(args.decode, args.new)
    total = sum(result["ops_ms"].values())
    print(f"generate, batch {args.decode}, 128-token prompts, {args.new} new: {result['wall_s']:.2f} s wall "
          f"({result['tokens_per_s']:.0f} new tokens/s), ops {total:.0f} ms summed over threads")
    print("| op kind | ms | share of op time |\n|---|---:|---:|")
    for kind, ms in list(result["ops_ms"].items())[:8]:
      print(f"| {kind} | {ms:.0f} | {ms / total:.0%} |")
    print("| products by jax op | ms | share of op time |\n|---|---:|---:|")
    for op, ms in result["products_ms"].items():
      print(f"| {op} | {ms:.0f} | {ms / total:.0%} |")
    if args.out:
      with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    return result
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
