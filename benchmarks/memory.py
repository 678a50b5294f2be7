"""Fine-tuning memory, side by side: full AdamW, LoRA (f32 / bf16 base), QLoRA (int8 / NF4 base), GaLore.

  python benchmarks/memory.py [--out=benchmarks/results/memory.json]   # d_model 1024, 2 layers, vocab 8k, seq 256
  python benchmarks/memory.py --size=full    # the issue's d_model 1024, 12 layers, vocab 32k, seq 512 (see SIZES)
  python benchmarks/memory.py --size=full --compile_only   # its byte accounting only: no step is run
  python benchmarks/memory.py --smoke        # tiny: every row and the qwix comparison run
  python benchmarks/memory.py --rows=qlora_nf4,galore --steps=3

Each row runs in its own subprocess (peak memories never mix) and builds its state and jitted step exactly as
train.fit does (`benchmarks/train_step.jax_step`: init_state with its shardings, donation), then reports:
  params / frozen / opt_state   bytes of each part of the TrainState (QLoRA's frozen: codes + scales + the
                                untargeted weights, i.e. the norms and, with lora.quantize_embeddings=False, the
                                embedding and output head, in model.param_dtype)
  quantized_base                bytes of the targeted projections' base alone (as stored: codes + scales, or the
                                plain weights for the LoRA rows)
  tables                        bytes of the embedding and output head (quantized or plain)
  xla_*                         compiled.memory_analysis() of the train step: argument, output, alias (donated),
                                temp (activations, gradients, dequantized matrices) bytes
  peak_rss_mb                   host VmHWM over the whole row (init + compile + steps), and peak_rss_steps_mb over
                                the timed steps alone (after the warm-up step, glibc's freed arenas are returned
                                with malloc_trim and VmHWM is reset via /proc/self/clear_refs): what the step
                                needs, the base weights, runtime and compiled program included
The base weights are made one tensor at a time (`_random_base`), as init_from reads them; QLoRA rows quantize
each as it is placed.
  step_s                        median of --steps timed steps after one warm-up, run through the compiled step
                                (GaLore: the warm-up step is a refresh step with its SVDs, reported as
                                refresh_step_s); with --compile_only no step runs (peak RSS: init + compile)
Rows: LoRA rank 16 on q,k,v,o,gate,up,down; QLoRA with block 64 and double-quantized scales, the embedding and
output head quantized as well (lora.quantize_embeddings), and once with them in bf16 as bitsandbytes' QLoRA keeps
them (qlora_nf4_16bit_tables); GaLore rank 128, full parameters. Batch 1 row, f32 compute.
A last row, `qwix_vs_jaxllm`, holds the same projections' NF4 storage and a forward + input-gradient product
through qwix (qwix.quantize(..., 'nf4') + qwix.dot_general) against jaxllm's (quant.py + the model's
frozen_matmul, which dequantizes a slice at a time in both passes): the evaluation docs/memory.md reports.
Results: docs/memory.md.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, "benchmarks"))

SIZES = {
    # The size: 205M params. On the shared 2-core machine a row got ~7% of a core and would have taken
    # most of an hour, so the measured table (docs/memory.md) uses `default`.
    "full": dict(vocab=32768, d_model=1024, n_layers=12, n_heads=16, n_kv_heads=8, mlp=2816, seq=512, batch=1),
    # The same matrices (d_model 1024, 16/8 heads, mlp 2816: every projection's shape, so every per-matrix
    # ratio, is the full size's) in 2 blocks, an 8k vocabulary and 256-token rows: 40M params.
    "default": dict(vocab=8192, d_model=1024, n_layers=2, n_heads=16, n_kv_heads=8, mlp=2816, seq=256, batch=1),
    "smoke": dict(vocab=512, d_model=128, n_layers=2, n_heads=4, n_kv_heads=2, mlp=256, seq=64, batch=2),
}
ROWS = {  # row -> config overrides
    "full_adamw": {},
    "lora_f32": {"lora.rank": 16},
    "lora_bf16": {"lora.rank": 16, "model.param_dtype": "bfloat16"},
    "qlora_int8": {"lora.rank": 16, "model.param_dtype": "bfloat16", "lora.quantize": "int8"},
    "qlora_nf4": {"lora.rank": 16, "model.param_dtype": "bfloat16", "lora.quantize": "nf4"},
    "qlora_nf4_16bit_tables": {"lora.rank": 16, "model.param_dtype": "bfloat16", "lora.quantize": "nf4",
                               "lora.quantize_embeddings": False},
    "galore": {"optim.name": "galore", "optim.galore_rank": 128},
}
SMOKE_GALORE_RANK = 16
MARK = "@@memory "


def _env(s: dict, overrides: dict):
  import jax
  from configs import base
  from jaxllm import sharding
  from jaxllm.checkpoint import Pretrained
  from jaxllm.config import validate
  from jaxllm.model import ModelConfig, Transformer
  from jaxllm.runtime import Env

  c = base.get_config()
  c.model.update(vocab_size=s["vocab"], d_model=s["d_model"], n_layers=s["n_layers"], n_heads=s["n_heads"],
                 n_kv_heads=s["n_kv_heads"], head_dim=s["d_model"] // s["n_heads"], mlp_dim=s["mlp"],
                 max_seq_len=s["seq"])
  c.data.update(batch_size=s["batch"], seq_len=s["seq"])
  c.sampling.max_new_tokens = s["seq"] // 2  # unused here, but config.validate wants it below max_seq_len
  c.mesh.data = -1
  c.steps = 1000
  c.lora.alpha = 32.0
  c.update_from_flattened_dict(overrides)
  validate(c, jax.device_count())
  cfg = ModelConfig.from_config(c)
  env = Env(config=c, mesh=sharding.make_mesh(c.mesh), tokenizer=None, model_cfg=cfg,
            model=Transformer(cfg, deterministic=True), train_model=Transformer(cfg, deterministic=True),
            pretrained=None)
  env.pretrained = Pretrained(config=c, weights=_random_base(env, c.seed), workdir="", extras={})
  return env


def _random_base(env, seed: int) -> dict:
  """The base model's weights made one tensor at a time, as init_from reads a checkpoint or a Hugging Face
  folder (QLoRA rows: each quantized as it is made, as runtime.prepare does), and distributed as the model's own
  init (normal(init_std) matrices, unit norm scales, zero biases).
  Why not the model's jitted init (train.init_state without init_from): it builds every weight in one XLA
  program whose random-bit temporaries peaked at ~2.5 GB at the full size, above any row's train step, so every
  row's peak RSS was that init's rather than its step's."""
  import jax
  import jax.numpy as jnp
  import flax.linen as nn

  from jaxllm import lora as lora_lib

  abstract, shardings = nn.meta.unbox(env.abstract_weights()), env.weight_shardings()
  cfg, key, lora = env.model_cfg, jax.random.PRNGKey(seed), env.config.lora
  convert = lambda path, x: x
  if lora.rank and lora.quantize != "none":  # QLoRA: quantized as it is made, as runtime.prepare reads init_from
    convert = lora_lib.tensor_quantizer(lora, shardings, env.mesh)
  leaves = jax.tree_util.tree_flatten_with_path(abstract)[0]
  made = []
  for i, ((path, leaf), sh) in enumerate(zip(leaves, jax.tree.leaves(shardings))):
    name = path[-1].key
    if name == "scale":  # RMSNorm: 1, or 0 under (1 + w)
      fill = lambda k, leaf=leaf: jnp.full(leaf.shape, 0.0 if cfg.norm_plus_one else 1.0, leaf.dtype)
    elif name == "b":
      fill = lambda k, leaf=leaf: jnp.zeros(leaf.shape, leaf.dtype)
    else:
      fill = lambda k, leaf=leaf: (cfg.init_std * jax.random.normal(k, leaf.shape, jnp.float32)).astype(leaf.dtype)
    made.append(convert(tuple(p.key for p in path), jax.jit(fill, out_shardings=sh)(jax.random.fold_in(key, i))))
  return jax.tree.unflatten(jax.tree.structure(abstract), made)


def _nbytes(tree) -> int:
  import jax
  return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(tree))


def _targeted_base_bytes(state) -> int:
  """Bytes of the targeted projections' frozen base: the quantized tree, or the plain `w`s of q..down."""
  from jaxllm import lora as lora_lib
  if "quant" in state.frozen:
    return _nbytes({k: v for k, v in state.frozen["quant"].items() if k not in lora_lib.TABLES})
  if "model" not in state.frozen:
    return 0
  found = lora_lib._walk(state.frozen["model"], lambda path, proj: {"w": proj["w"]})
  return _nbytes(found)


def _tables_bytes(state) -> int:
  """Bytes of the embedding and output head, wherever the state holds them (quantized or not)."""
  from jaxllm import lora as lora_lib
  trees = [state.frozen.get("quant", {}), state.frozen.get("model", {}), state.params.get("model", {})]
  return sum(_nbytes(tree[name]) for tree in trees for name in lora_lib.TABLES if name in tree)


def worker(row: str, s: dict, steps: int, compile_only: bool = False) -> dict:
  import jax
  from train_step import jax_step, lm_batches, peak_rss_mb, reset_peak_rss
  from jaxllm import sharding

  overrides = dict(ROWS[row])
  if s is SIZES["smoke"] and row == "galore":
    overrides["optim.galore_rank"] = SMOKE_GALORE_RANK
  env = _env(s, overrides)
  state, step_fn = jax_step(env, "pretrain")
  out = {"params_bytes": _nbytes(state.params), "frozen_bytes": _nbytes(state.frozen),
         "opt_state_bytes": _nbytes(state.opt_state), "quantized_base_bytes": _targeted_base_bytes(state),
         "tables_bytes": _tables_bytes(state)}
  batches = [sharding.put_batch(b, env.mesh) for b in lm_batches(s, s["vocab"], steps + 1)]
  with env.mesh_context():
    t = time.perf_counter()
    compiled = step_fn.lower(state, batches[0]).compile()
    out["compile_s"] = time.perf_counter() - t
    mem = compiled.memory_analysis()
    out.update(xla_argument_bytes=mem.argument_size_in_bytes, xla_output_bytes=mem.output_size_in_bytes,
               xla_alias_bytes=mem.alias_size_in_bytes, xla_temp_bytes=mem.temp_size_in_bytes)
    if compile_only:
      out["peak_rss_mb"] = peak_rss_mb()  # init + compile
      return out
    t = time.perf_counter()
    state, metrics = compiled(state, batches[0])
    jax.block_until_ready(metrics)
    out["refresh_step_s" if row == "galore" else "warmup_step_s"] = time.perf_counter() - t
    out["peak_rss_mb"] = peak_rss_mb()  # init + compile + first step
    _return_freed_memory()
    reset_peak_rss()
    times = []
    for b in batches[1:]:
      t = time.perf_counter()
      state, metrics = compiled(state, b)
      jax.block_until_ready(metrics)
      times.append(time.perf_counter() - t)
  out.update(step_s=statistics.median(times), loss=float(metrics["loss"]), peak_rss_steps_mb=peak_rss_mb())
  out["peak_rss_mb"] = max(out["peak_rss_mb"], out["peak_rss_steps_mb"])
  return out


def _return_freed_memory() -> None:
  """malloc_trim(0): glibc keeps what init and compile freed in its arenas (~0.8 GB at the full size), which
  would count in the steps' peak RSS as if the step held it."""
  import ctypes
  try:
    ctypes.CDLL("libc.so.6").malloc_trim(0)
  except (OSError, AttributeError):  # not glibc: the steps' peak then includes that memory
    pass


def qwix_worker(s: dict, repeats: int) -> dict:
  """NF4 storage and x @ W forward + input gradient for the model's projection shapes: qwix against jaxllm."""
  import jax
  import jax.numpy as jnp
  import numpy as np
  import qwix
  from jaxllm import quant
  from jaxllm.frozen_matmul import frozen_matmul

  d, f, hd = s["d_model"], s["mlp"], s["d_model"]
  kv = s["n_kv_heads"] * (s["d_model"] // s["n_heads"])
  shapes = [(d, hd), (d, kv), (d, kv), (hd, d), (d, f), (d, f), (f, d)]  # q k v o gate up down
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(s["batch"] * s["seq"], d)).astype(np.float32))

  def timed(fn, *args):
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
      t = time.perf_counter()
      jax.block_until_ready(fn(*args))
      times.append(time.perf_counter() - t)
    return statistics.median(times)

  out = {"qwix_bytes": 0, "jaxllm_bytes": 0, "bf16_bytes": 0, "qwix_s": 0.0, "jaxllm_s": 0.0,
         "max_abs_diff": 0.0}
  for k, n in shapes:
    w = jnp.asarray(rng.normal(0, 0.02, (k, n)).astype(np.float32))
    xin = x[:, :k] if k <= d else jnp.tile(x, (1, -(-k // d)))[:, :k]
    qw = jax.jit(lambda w: qwix.quantize(w, "nf4", channelwise_axes=(1,), tiled_axes={0: 64}))(w)
    ours = jax.jit(lambda w: quant.quantize(w, "nf4", 1, 64, True))(w)
    dims = (((1,), (0,)), ((), ()))
    qwix_loss = jax.jit(jax.value_and_grad(lambda x, q: qwix.dot_general(x, q, dims).sum()))
    ours_loss = jax.jit(jax.value_and_grad(lambda x, q: frozen_matmul(x, q, 1, (n,), jnp.float32).sum()))
    out["qwix_bytes"] += sum(a.on_device_size_in_bytes() for a in jax.tree.leaves(qw))
    out["jaxllm_bytes"] += sum(a.on_device_size_in_bytes() for a in jax.tree.leaves(ours))
    out["bf16_bytes"] += k * n * 2
    out["qwix_s"] += timed(qwix_loss, xin, qw)
    out["jaxllm_s"] += timed(ours_loss, xin, ours)
    deq_q = np.asarray(qwix.dequantize(qw))
    deq_o = np.asarray(quant.dequantize(ours, (k, n)))
    out["max_abs_diff"] = max(out["max_abs_diff"], float(np.abs(deq_q - deq_o).max()))
  return out


def run_row(row: str, args) -> dict:
  cmd = [sys.executable, os.path.abspath(__file__), f"--worker={row}", f"--steps={args.steps}", f"--size={args.size}"]
  if args.smoke:
    cmd.append("--smoke")
  if args.compile_only:
    cmd.append("--compile_only")
  proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
  lines = [l for l in proc.stdout.splitlines() if l.startswith(MARK)]
  if proc.returncode != 0 or not lines:
    raise RuntimeError(f"row {row} failed:\n{proc.stderr[-4000:]}")
  return json.loads(lines[-1][len(MARK):])


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--rows", default=",".join(list(ROWS) + ["qwix_vs_jaxllm"]))
  p.add_argument("--steps", type=int, default=2, help="timed steps per row after one warm-up step")
  p.add_argument("--smoke", action="store_true")
  p.add_argument("--compile_only", action="store_true", help="state bytes and XLA's accounting only, no steps")
  p.add_argument("--size", default="default", choices=sorted(SIZES))
  p.add_argument("--out", default=os.path.join(REPO, "benchmarks", "results", "memory.json"))
  p.add_argument("--worker", default="")
  args = p.parse_args()
  size = SIZES["smoke" if args.smoke else args.size]
  if args.worker:
    from train_step import peak_rss_mb
    if args.worker == "qwix_vs_jaxllm":
      res = qwix_worker(size, max(args.steps, 1))
      res["peak_rss_mb"] = peak_rss_mb()
    else:
      res = worker(args.worker, size, args.steps, args.compile_only)
    print(MARK + json.dumps(res), flush=True)
    return
  results = {}
  for row in args.rows.split(","):
    t = time.perf_counter()
    results[row] = run_row(row, args)
    print(f"{row}: {json.dumps(results[row])} ({time.perf_counter() - t:.0f} s)", flush=True)
  bf16 = results.get("lora_bf16", {}).get("quantized_base_bytes")
  adamw = results.get("full_adamw", {}).get("opt_state_bytes")
  ratios = {}
  if bf16:
    for row in ("qlora_int8", "qlora_nf4", "qlora_nf4_16bit_tables"):
      if row in results:
        ratios[f"{row}_base_vs_bf16"] = results[row]["quantized_base_bytes"] / bf16
        ratios[f"{row}_frozen_vs_bf16"] = results[row]["frozen_bytes"] / results["lora_bf16"]["frozen_bytes"]
  if adamw and "galore" in results:
    ratios["galore_opt_state_vs_adamw"] = results["galore"]["opt_state_bytes"] / adamw
  report = {"size": size, "steps": 0 if args.compile_only else args.steps, "rows": results, "ratios": ratios,
            "date": time.strftime("%Y-%m-%d"), "machine": f"{os.cpu_count()} CPUs (shared)"}
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  with open(args.out, "w") as f:
    json.dump(report, f, indent=2)
  print(json.dumps(ratios, indent=2))


if __name__ == "__main__":
  main()
