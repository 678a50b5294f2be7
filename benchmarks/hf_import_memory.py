"""Peak host memory of importing a 0.5B-class Hugging Face checkpoint in bf16 (issue 7: under 2x its size), and
of loading it sharded over 2 processes x 4 devices (issue 33: within 1.3x of a process's shard).

  python benchmarks/hf_import_memory.py                  # ~1 GB of random weights in a temp folder, ~2-4 min
  python benchmarks/hf_import_memory.py --out=FILE.json  # where the JSON record goes
  python benchmarks/hf_import_memory.py --smoke --out=X   # a tiny model, seconds (checks the script works)

A folder with Qwen2-0.5B's real config (hidden 896, 24 layers, 14 heads / 2 kv heads, mlp 4864, vocab 151936,
tied embeddings) and random bf16 weights is written tensor by tensor (no torch model is built). Each import
then runs in a fresh process on the CPU backend, where the placed weights themselves live in host memory, and
reports its peak RSS (VmHWM) next to its RSS before loading (Python + jax + jaxllm imported):

  jaxllm      hf.load(path, dtype="bfloat16"): one tensor read, converted and placed at a time
  reference   safetensors.numpy.load_file (the whole checkpoint at once), then jax.device_put of the tree

Both peaks include the interpreter baseline; "added" is peak minus baseline, i.e. what loading itself costs.

Sharded (2 processes x 4 CPU devices under jax.distributed on localhost, mesh data 1 x fsdp 4 x tensor 2, so a
process's devices hold about half the weights), every process measured the same way:

  hf sharded          hf.load(path, shardings=...): each device's block read with get_slice
  checkpoint sharded  checkpoint.load_pretrained(workdir, shardings): an orbax partial restore of the params of
                      a jaxllm workdir holding the same weights (written once, on 1 process)

"shard" is what a process's devices hold (its addressable shards' bytes); the row reports the process with the
larger peak, and added/shard is the issue-33 ratio (target <= 1.3).
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

QWEN2_0_5B = {
    "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_act": "silu", "hidden_size": 896,
    "intermediate_size": 4864, "num_hidden_layers": 24, "num_attention_heads": 14, "num_key_value_heads": 2,
    "vocab_size": 151936, "max_position_embeddings": 32768, "rope_theta": 1000000.0, "rms_norm_eps": 1e-6,
    "tie_word_embeddings": True, "use_sliding_window": False, "sliding_window": 32768, "max_window_layers": 21,
    "torch_dtype": "bfloat16",
}

# A child's peak RSS: /proc/self/status VmHWM, the high-water mark of its own address space. (ru_maxrss is not:
# Linux carries the parent's peak into a child across fork/exec, so it would report the benchmark driver's.)
_PEAK_RSS = """
def peak_rss():
  with open("/proc/self/status") as f:
    return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))
"""

# Run in a child process: the measured import, then one JSON line with the numbers.
_CHILD = """
import json, sys, time
import psutil
import jax, numpy as np
from jaxllm import hf
jax.devices()
baseline = psutil.Process().memory_info().rss
start = time.perf_counter()
if sys.argv[2] == "jaxllm":
  cfg, weights = hf.load(sys.argv[1], dtype="bfloat16")
else:
  from safetensors.numpy import load_file
  weights = jax.device_put(load_file(sys.argv[1] + "/model.safetensors"))
jax.block_until_ready(weights)
seconds = time.perf_counter() - start
placed = sum(x.nbytes for x in jax.tree.leaves(weights))
print(json.dumps({"baseline_rss": baseline, "peak_rss": peak_rss(),
                  "final_rss": psutil.Process().memory_info().rss, "placed_bytes": placed, "seconds": seconds}))
"""


# One process of the sharded case: jax.distributed on localhost, then the measured load into the mesh's shardings.
_SHARDED_CHILD = """
import json, sys, time
import psutil
import jax, numpy as np
path, method, coordinator, process_id, hf_folder = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
jax.distributed.initialize(coordinator_address=coordinator, num_processes=2, process_id=process_id)
from jaxllm import hf, sharding
from jaxllm.checkpoint import load_pretrained
from jaxllm.model import ModelConfig, Transformer
cfg = hf.model_config_from_hf(hf.read_hf_config(hf_folder))
model = Transformer(ModelConfig(**{**cfg, "param_dtype": "bfloat16"}))
mesh = jax.sharding.Mesh(np.asarray(jax.devices()).reshape(1, 4, 2), sharding.MESH_AXES)
abstract = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jax.numpy.zeros((1, 8), jax.numpy.int32)))
shardings = sharding.logical_shardings(abstract["params"], mesh)
baseline = psutil.Process().memory_info().rss
start = time.perf_counter()
if method == "hf":
  _, weights = hf.load(path, dtype="bfloat16", shardings=shardings)
else:
  weights = load_pretrained(path, shardings).weights
jax.block_until_ready(weights)
seconds = time.perf_counter() - start
shard = sum(s.data.nbytes for x in jax.tree.leaves(weights) for s in x.addressable_shards)
print(json.dumps({"baseline_rss": baseline, "peak_rss": peak_rss(),
                  "final_rss": psutil.Process().memory_info().rss, "shard_bytes": shard,
                  "placed_bytes": sum(x.nbytes for x in jax.tree.leaves(weights)), "seconds": seconds}))
jax.distributed.shutdown()
"""

# Writes a jaxllm workdir (config.json + an orbax checkpoint of the params) holding the HF folder's weights.
_TO_WORKDIR = """
import json, os, sys
import jax, orbax.checkpoint as ocp
from jaxllm import hf
folder, workdir = sys.argv[1], sys.argv[2]
cfg, weights = hf.load(folder, dtype="bfloat16")
ocp.PyTreeCheckpointer().save(os.path.join(workdir, "checkpoints", "0", "state"), {"params": {"model": weights}})
with open(os.path.join(workdir, "config.json"), "w") as f:
  json.dump({"model": cfg, "init_from": "", "lora": {"rank": 0}}, f)
"""


SMOKE = {**QWEN2_0_5B, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
         "num_attention_heads": 4, "vocab_size": 1024}


def write_checkpoint(folder: str, hf_config: dict, seed: int = 0) -> int:
  """config.json + model.safetensors with random bf16 weights, one tensor generated at a time; returns bytes."""
  from jaxllm import hf

  rng = np.random.default_rng(seed)
  cfg = hf.model_config_from_hf(hf_config)
  spec = hf.weights.tensor_map(cfg, o_bias=False)
  tensors = []
  for name, (path, layout) in spec.items():
    shape = hf.weights.hf_shape(cfg, path, layout)
    tensors.append((name, shape, lambda shape=shape: rng.standard_normal(shape, np.float32) * 0.02))
  os.makedirs(folder, exist_ok=True)
  hf.write_safetensors(os.path.join(folder, "model.safetensors"), tensors, "bfloat16")
  with open(os.path.join(folder, "config.json"), "w") as f:
    json.dump(hf_config, f, indent=2)
  return os.path.getsize(os.path.join(folder, "model.safetensors"))


def measure(folder: str, method: str) -> dict:
  env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": REPO}
  proc = subprocess.run([sys.executable, "-c", _PEAK_RSS + _CHILD, folder, method], env=env, capture_output=True,
                        text=True, check=False)
  if proc.returncode != 0:
    raise RuntimeError(f"{method} import failed:\n{proc.stderr[-3000:]}")
  return json.loads(proc.stdout.strip().splitlines()[-1])


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def measure_sharded(path: str, method: str, hf_folder: str) -> dict:
  """Both processes' records of one sharded load; the row keeps the process with the larger peak."""
  env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": REPO,
         "XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
  coordinator = f"127.0.0.1:{_free_port()}"
  procs = [subprocess.Popen([sys.executable, "-c", _PEAK_RSS + _SHARDED_CHILD, path, method, coordinator, str(i),
                             hf_folder], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
           for i in range(2)]
  outputs = [p.communicate() for p in procs]
  for p, (_, err) in zip(procs, outputs):
    if p.returncode != 0:
      raise RuntimeError(f"{method} sharded load failed:\n{err[-3000:]}")
  records = [json.loads(out.strip().splitlines()[-1]) for out, _ in outputs]
  return max(records, key=lambda r: r["peak_rss"])


def write_workdir(folder: str, workdir: str) -> None:
  env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": REPO}
  proc = subprocess.run([sys.executable, "-c", _TO_WORKDIR, folder, workdir], env=env, capture_output=True,
                        text=True, check=False)
  if proc.returncode != 0:
    raise RuntimeError(f"writing the jaxllm workdir failed:\n{proc.stderr[-3000:]}")


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--out", default=os.path.join(REPO, "benchmarks", "results", "hf_import_memory.json"))
  parser.add_argument("--folder", default="", help="where to write the checkpoint (default: a temp folder)")
  parser.add_argument("--smoke", action="store_true", help="a tiny model instead of the 0.5B one")
  args = parser.parse_args()
  with tempfile.TemporaryDirectory() as tmp:
    folder = args.folder or os.path.join(tmp, "hf")
    start = time.perf_counter()
    size = write_checkpoint(folder, SMOKE if args.smoke else QWEN2_0_5B)
    print(f"wrote {size / 2**20:.1f} MiB of random bf16 weights in {time.perf_counter() - start:.0f}s")
    rows = {method: measure(folder, method) for method in ("jaxllm", "reference")}
    workdir = os.path.join(tmp, "workdir")
    write_workdir(folder, workdir)
    sharded = {"hf sharded": measure_sharded(folder, "hf", folder),
               "checkpoint sharded": measure_sharded(workdir, "ckpt", folder)}
  mib = lambda n: n / 2**20
  print(f"\n{'import':<10} {'baseline MiB':>12} {'peak MiB':>9} {'added MiB':>10} {'peak/size':>9} "
        f"{'added/size':>10} {'seconds':>8}")
  for method, r in rows.items():
    r["peak_over_size"] = r["peak_rss"] / size
    r["added_over_size"] = (r["peak_rss"] - r["baseline_rss"]) / size
    print(f"{method:<10} {mib(r['baseline_rss']):>12.0f} {mib(r['peak_rss']):>9.0f} "
          f"{mib(r['peak_rss'] - r['baseline_rss']):>10.0f} {r['peak_over_size']:>9.2f} "
          f"{r['added_over_size']:>10.2f} {r['seconds']:>8.1f}")
  verdict = "(smoke: the interpreter dominates)" if args.smoke else \
      "met" if rows["jaxllm"]["peak_over_size"] < 2 else "NOT met"
  print(f"checkpoint: {mib(size):.1f} MiB; target: jaxllm peak < 2x checkpoint size -> {verdict}")
  print(f"\n{'2 processes x 4 devices':<20} {'shard MiB':>9} {'baseline MiB':>12} {'peak MiB':>9} {'added MiB':>10} "
        f"{'peak/shard':>10} {'added/shard':>11} {'seconds':>8}")
  for method, r in sharded.items():
    r["peak_over_shard"] = r["peak_rss"] / r["shard_bytes"]
    r["added_over_shard"] = (r["peak_rss"] - r["baseline_rss"]) / r["shard_bytes"]
    print(f"{method:<20} {mib(r['shard_bytes']):>9.0f} {mib(r['baseline_rss']):>12.0f} {mib(r['peak_rss']):>9.0f} "
          f"{mib(r['peak_rss'] - r['baseline_rss']):>10.0f} {r['peak_over_shard']:>10.2f} "
          f"{r['added_over_shard']:>11.2f} {r['seconds']:>8.1f}")
  worst = max(r["added_over_shard"] for r in sharded.values())
  verdict = "(smoke: the interpreter dominates)" if args.smoke else "met" if worst <= 1.3 else "NOT met"
  print(f"target: a process's added memory <= 1.3x its shard -> {verdict}")
  rows.update(sharded)
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  with open(args.out, "w") as f:
    json.dump({"model": "tiny (smoke)" if args.smoke else "Qwen2-0.5B shape, random bf16",
               "checkpoint_bytes": size, "results": rows, "python": sys.version.split()[0]}, f, indent=2)
  print(f"wrote {args.out}")


if __name__ == "__main__":
  main()
