"""Peak host memory of importing a 0.5B-class Hugging Face checkpoint in bf16 (issue 7: under 2x its size).

  python benchmarks/hf_import_memory.py                  # ~1 GB of random weights in a temp folder, ~1-2 min
  python benchmarks/hf_import_memory.py --out=FILE.json  # where the JSON record goes
  python benchmarks/hf_import_memory.py --smoke --out=X   # a tiny model, seconds (checks the script works)

A folder with Qwen2-0.5B's real config (hidden 896, 24 layers, 14 heads / 2 kv heads, mlp 4864, vocab 151936,
tied embeddings) and random bf16 weights is written tensor by tensor (no torch model is built). Each import
then runs in a fresh process on the CPU backend, where the placed weights themselves live in host memory, and
reports its peak RSS (ru_maxrss) next to its RSS before loading (Python + jax + jaxllm imported):

  jaxllm      hf.load(path, dtype="bfloat16"): one tensor read, converted and placed at a time
  reference   safetensors.numpy.load_file (the whole checkpoint at once), then jax.device_put of the tree

Both peaks include the interpreter baseline; "added" is peak minus baseline, i.e. what loading itself costs.
"""
from __future__ import annotations

import argparse
import json
import os
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

# Run in a child process: the measured import, then one JSON line with the numbers.
_CHILD = """
import json, resource, sys, time
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
print(json.dumps({"baseline_rss": baseline, "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                  "final_rss": psutil.Process().memory_info().rss, "placed_bytes": placed, "seconds": seconds}))
"""


SMOKE = {**QWEN2_0_5B, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
         "num_attention_heads": 4, "vocab_size": 1024}


def write_checkpoint(folder: str, hf_config: dict, seed: int = 0) -> int:
  """config.json + model.safetensors with random bf16 weights, one tensor generated at a time; returns bytes."""
  from jaxllm import hf

  rng = np.random.default_rng(seed)
  cfg = hf.model_config_from_hf(hf_config)
  spec = hf._tensor_map(cfg, o_bias=False)
  tensors = []
  for name, (path, layout) in spec.items():
    shape = hf._hf_shape(cfg, path, layout)
    tensors.append((name, shape, lambda shape=shape: rng.standard_normal(shape, np.float32) * 0.02))
  os.makedirs(folder, exist_ok=True)
  hf.write_safetensors(os.path.join(folder, "model.safetensors"), tensors, "bfloat16")
  with open(os.path.join(folder, "config.json"), "w") as f:
    json.dump(hf_config, f, indent=2)
  return os.path.getsize(os.path.join(folder, "model.safetensors"))


def measure(folder: str, method: str) -> dict:
  env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": REPO}
  proc = subprocess.run([sys.executable, "-c", _CHILD, folder, method], env=env, capture_output=True, text=True,
                        check=False)
  if proc.returncode != 0:
    raise RuntimeError(f"{method} import failed:\n{proc.stderr[-3000:]}")
  return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--out", default=os.path.join(REPO, "benchmarks", "results", "hf_import_memory.json"))
  parser.add_argument("--folder", default="", help="where to write the checkpoint (default: a temp folder)")
  parser.add_argument("--smoke", action="store_true", help="a tiny model instead of the 0.5B one")
  args = parser.parse_args()
  with tempfile.TemporaryDirectory() as tmp:
    folder = args.folder or tmp
    start = time.perf_counter()
    size = write_checkpoint(folder, SMOKE if args.smoke else QWEN2_0_5B)
    print(f"wrote {size / 2**20:.1f} MiB of random bf16 weights in {time.perf_counter() - start:.0f}s")
    rows = {method: measure(folder, method) for method in ("jaxllm", "reference")}
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
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  with open(args.out, "w") as f:
    json.dump({"model": "tiny (smoke)" if args.smoke else "Qwen2-0.5B shape, random bf16",
               "checkpoint_bytes": size, "results": rows, "python": sys.version.split()[0]}, f, indent=2)
  print(f"wrote {args.out}")


if __name__ == "__main__":
  main()
