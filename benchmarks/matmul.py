"""The train step's matrix products alone, jax (XLA:CPU) against torch.mm: how fast each kernel runs, and the
ceiling that puts on a jaxllm step against the PyTorch reference.

  python benchmarks/matmul.py                      # train_step.py's default size: about a minute on 2 cores
  python benchmarks/matmul.py --size=pipeline      # the sizes of train_step.py
  python benchmarks/matmul.py --train_step_json=benchmarks/results/train_step.json   # + the bound on the ratio
  python benchmarks/matmul.py --xla_flags=--xla_cpu_experimental_ynn_fusion_type=    # another XLA:CPU GEMM path
  python benchmarks/matmul.py --smoke              # tiny, seconds (tests/test_benchmarks_smoke.py)

The products of one `jax_full` step at the size (T = batch x seq tokens): for every projection W [in, out] of a
layer (q, k, v, o, gate, up, down) and for the output head, the forward x @ W ([T, in] x [in, out]), the input
gradient g @ W^T ([T, out] x [out, in], W read transposed) and the weight gradient x^T @ g ([in, T] x [T, out],
x read transposed) — the layouts `model.matmul_2d` and its transpose give XLA. They are 93% of the default
size's model FLOPs; attention's batched products (which torch runs inside its fused SDPA kernel) and all
elementwise work are left out. Each distinct product is timed as the best of --repeats calls (jitted `jnp.dot`
of transposed views in jax, `torch.mm` of transposed views in torch: neither copies), in one subprocess per
framework and round, the frameworks alternating, the best over --rounds kept; f32, torch with as many threads
as the cores jax uses.

Products per step = sum over the step's products of their time. A jaxllm step cannot take less than its
products, so with a measured torch-eager step S (from --train_step_json, run on the same machine) jaxllm's
throughput is at most S / (jax products per step) of torch eager's while the kernels run at these speeds.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "benchmarks"))

from train_step import SIZES  # noqa: E402  (numbers only: importing it loads neither jax nor torch)

MARK = "@@matmul "


def step_products(s: dict) -> list[dict]:
  """The distinct products of one full train step: (m, k, n), which operand is read transposed, how many a step
  runs and which projections they come from."""
  t, d, f, v = s["batch"] * s["seq"], s["d_model"], s["mlp"], s["vocab"]
  dh = d // s["n_heads"]
  weights = {"q": (d, s["n_heads"] * dh), "k": (d, s["n_kv_heads"] * dh), "v": (d, s["n_kv_heads"] * dh),
             "o": (s["n_heads"] * dh, d), "gate": (d, f), "up": (d, f), "down": (f, d), "head": (d, v)}
  products: dict[tuple, dict] = {}
  for name, (n_in, n_out) in weights.items():
    per_step = 1 if name == "head" else s["n_layers"]
    for kind, mkn, trans in (("fwd", (t, n_in, n_out), ""), ("dx", (t, n_out, n_in), "b"),
                             ("dw", (n_in, t, n_out), "a")):
      p = products.setdefault((kind, mkn, trans), {"kind": kind, "mkn": mkn, "transposed": trans, "count": 0,
                                                   "names": []})
      p["count"] += per_step
      p["names"].append(name)
  return list(products.values())


def _key(p: dict) -> str:
  return f"{p['kind']}:{'x'.join(map(str, p['mkn']))}"


def _operands(p: dict):
  """Shapes of the stored operands: A [m, k] (or [k, m] read transposed), B [k, n] (or [n, k])."""
  m, k, n = p["mkn"]
  return ((k, m) if "a" in p["transposed"] else (m, k)), ((n, k) if "b" in p["transposed"] else (k, n))


def _best(fn, repeats: int) -> float:
  fn()  # compile / warm up
  best = float("inf")
  for _ in range(repeats):
    t = time.perf_counter()
    fn()
    best = min(best, time.perf_counter() - t)
  return best


def jax_times(products: list[dict], repeats: int) -> dict:
  import jax
  import jax.numpy as jnp

  out = {}
  for i, p in enumerate(products):
    a_shape, b_shape = _operands(p)
    a = jax.random.normal(jax.random.PRNGKey(2 * i), a_shape)
    b = jax.random.normal(jax.random.PRNGKey(2 * i + 1), b_shape)
    ta, tb = "a" in p["transposed"], "b" in p["transposed"]
    f = jax.jit(lambda a, b: jnp.dot(a.T if ta else a, b.T if tb else b))
    out[_key(p)] = _best(lambda: f(a, b).block_until_ready(), repeats)
  return out


def torch_times(products: list[dict], repeats: int, threads: int) -> dict:
  import torch

  torch.set_num_threads(threads)
  gen = torch.Generator().manual_seed(0)
  out = {}
  with torch.no_grad():
    for p in products:
      a_shape, b_shape = _operands(p)
      a, b = torch.randn(a_shape, generator=gen), torch.randn(b_shape, generator=gen)
      a_op, b_op = (a.t() if "a" in p["transposed"] else a), (b.t() if "b" in p["transposed"] else b)
      out[_key(p)] = _best(lambda: torch.mm(a_op, b_op), repeats)
  return out


def _run_worker(framework: str, argv: list[str], xla_flags: str) -> dict:
  env = {**os.environ, **({"XLA_FLAGS": xla_flags} if xla_flags and framework == "jax" else {})}
  proc = subprocess.run([sys.executable, os.path.abspath(__file__), f"--worker={framework}"] + argv, cwd=REPO,
                        env=env, capture_output=True, text=True)
  lines = [l for l in proc.stdout.splitlines() if l.startswith(MARK)]
  if proc.returncode or not lines:
    raise RuntimeError(f"{framework} worker failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
  return json.loads(lines[-1][len(MARK):])


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--size", default="default", choices=sorted(SIZES))
  parser.add_argument("--smoke", action="store_true", help="--size=smoke, 1 round, 2 repeats")
  parser.add_argument("--rounds", type=int, default=2)
  parser.add_argument("--repeats", type=int, default=5, help="timed calls per product per round (best kept)")
  parser.add_argument("--torch_threads", type=int, default=len(os.sched_getaffinity(0)),
                      help="default: the cores jax uses")
  parser.add_argument("--xla_flags", default="", help="XLA_FLAGS of the jax worker (experiments)")
  parser.add_argument("--train_step_json", default="", help="train_step.py's JSON from this machine: prints the "
                      "bound its torch-eager step puts on the jaxllm / torch ratio")
  parser.add_argument("--out", default="", help="write the results as JSON here")
  parser.add_argument("--worker", default="", help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  if args.smoke:
    args.size, args.rounds, args.repeats = "smoke", 1, 2
  s = SIZES[args.size]
  products = step_products(s)
  if args.worker:
    times = (jax_times(products, args.repeats) if args.worker == "jax"
             else torch_times(products, args.repeats, args.torch_threads))
    print(MARK + json.dumps(times), flush=True)
    return times

  forward = [f"--size={args.size}", f"--repeats={args.repeats}", f"--torch_threads={args.torch_threads}"]
  best = {"jax": {}, "torch": {}}
  for _ in range(args.rounds):
    for framework in ("jax", "torch"):
      for key, sec in _run_worker(framework, forward, args.xla_flags).items():
        best[framework][key] = min(best[framework].get(key, float("inf")), sec)

  rows, total = [], {"jax": 0.0, "torch": 0.0}
  for p in products:
    m, k, n = p["mkn"]
    flops, key = 2 * m * k * n, _key(p)
    row = {**p, "flops": flops, **{f"{fw}_s": best[fw][key] for fw in best}}
    for fw in total:
      total[fw] += p["count"] * best[fw][key]
    rows.append(row)
  step_flops = sum(r["count"] * r["flops"] for r in rows)
  print(f"size {args.size}: {s['batch'] * s['seq']} tokens a step, f32, {args.rounds} rounds x {args.repeats} "
        f"calls, best; torch threads {args.torch_threads}; XLA_FLAGS {args.xla_flags or '(none)'}")
  print("| product | [m, k] x [k, n] | transposed | per step | from | jax GFLOP/s | torch GFLOP/s | jax / torch |")
  print("|---|---|---|---:|---|---:|---:|---:|")
  for r in rows:
    m, k, n = r["mkn"]
    jax_rate, torch_rate = r["flops"] / r["jax_s"] / 1e9, r["flops"] / r["torch_s"] / 1e9
    print(f"| {r['kind']} | [{m}, {k}] x [{k}, {n}] | {r['transposed'].upper() or '-'} | {r['count']} | "
          f"{','.join(r['names'])} | {jax_rate:.0f} | {torch_rate:.0f} | {jax_rate / torch_rate:.2f}x |")
  print(f"products per step ({step_flops / 1e9:.1f} GFLOP): jax {1000 * total['jax']:.0f} ms "
        f"({step_flops / total['jax'] / 1e9:.0f} GFLOP/s), torch {1000 * total['torch']:.0f} ms "
        f"({step_flops / total['torch'] / 1e9:.0f} GFLOP/s): jax / torch throughput {total['torch'] / total['jax']:.2f}x")
  result = {"size": args.size, "model": s, "args": {k: v for k, v in vars(args).items() if k != "worker"},
            "products": rows, "products_s": total, "products_flops": step_flops}
  if args.train_step_json:
    with open(args.train_step_json) as f:
      step = json.load(f)["rows"]
    torch_step, jax_step = step["torch_eager"]["step_s"], step.get("jax_full", {}).get("step_s")
    result["bound_vs_torch_eager"] = torch_step / total["jax"]
    print(f"torch eager step {1000 * torch_step:.0f} ms ({args.train_step_json}): a jaxllm step of at least "
          f"{1000 * total['jax']:.0f} ms of products is at most {result['bound_vs_torch_eager']:.2f}x torch eager"
          + (f"; the measured jaxllm step {1000 * jax_step:.0f} ms spends {1000 * (jax_step - total['jax']):.0f} ms "
             f"outside them" if jax_step else ""))
  if args.out:
    with open(args.out, "w") as f:
      json.dump(result, f, indent=2)
  return result


if __name__ == "__main__":
  main()
