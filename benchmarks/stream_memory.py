"""Streamed pretraining's host memory does not grow with the corpus, and its input pipeline keeps up with the step.

  python benchmarks/stream_memory.py                          # 20 MB and 2 GB corpora (~5-10 min on 2 cores)
  python benchmarks/stream_memory.py --sizes_mb=20,200 --out=X.json   # a quicker look

For each size a JSONL corpus of that many bytes (8 shards, documents of 20-600 random words drawn by a seeded
generator) is written to a temp folder; then, in a fresh process each, configs/pretrain.py:tiny runs --steps
steps with data.streaming=True over it and reports its peak RSS (ru_maxrss), and the input pipeline alone
(data/stream.py's batches, built and tokenized, no train step) is timed over --pipeline_batches batches. Printed
and saved: peak RSS per size and its ratio to the smallest corpus's (target <= 1.2), pipeline tokens/s next to
the train step's tokens/s (the pipeline keeps up when its rate is the larger).
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

WORDS = ("the a of to and in is was for on that with as by at from his her it an were are which this be or has "
         "had not but after first new one two three years city time people world war state school river music "
         "film team season game system government party family church village population country").split()

# Run in a child process: streamed pretraining and the pipeline alone, then one JSON line with the numbers.
_CHILD = """
import json, resource, sys, time
sys.path.insert(0, {repo!r})
from configs import pretrain as pretrain_config
from jaxllm import runtime
from jaxllm.stages import pretrain
c = pretrain_config.get_config("tiny")
c.unlock()
c.update_from_flattened_dict({{"workdir": {workdir!r}, "tokenizer.path": {tok!r}, "data.name": {name!r},
    "data.streaming": True, "data.eval_examples": 16, "steps": {steps}, "eval.every": 10**6,
    "checkpoint.every": 10**6, "sample.num": 0, "log.tensorboard": False, "log.every": {steps}}})
c.lock()
env = runtime.prepare(c)
batches, _, _ = pretrain.streamed_batches(env)
batches.next()  # the first batch opens the stream
start, n = time.perf_counter(), {pipeline_batches}
for _ in range(n):
  b = batches.next()
pipeline_tps = n * b["tokens"].size / (time.perf_counter() - start)
summary = pretrain.run(c)
print(json.dumps({{"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "pipeline_tokens_per_sec": pipeline_tps, "step_tokens_per_sec": summary["train_tokens_per_sec"]}}))
"""


def write_corpus(folder: str, size_bytes: int, seed: int = 0, shards: int = 8) -> int:
  """JSONL shards of random-word documents, `size_bytes` in all; returns the document count."""
  rng = np.random.default_rng(seed)
  words = np.array(WORDS)
  per_shard, docs = size_bytes // shards, 0
  for s in range(shards):
    with open(os.path.join(folder, f"shard-{s:02d}.jsonl"), "w") as f:
      written = 0
      while written < per_shard:
        lines = []
        for n in rng.integers(20, 600, size=256):
          lines.append(json.dumps({"text": " ".join(words[rng.integers(0, len(words), size=n)]) + "."}))
        block = "\n".join(lines) + "\n"
        f.write(block)
        written += len(block)
        docs += len(lines)
  return docs


def measure(folder: str, tok: str, steps: int, pipeline_batches: int) -> dict:
  with tempfile.TemporaryDirectory() as workdir:
    script = _CHILD.format(repo=REPO, workdir=workdir, tok=tok, name=os.path.join(folder, "*.jsonl"), steps=steps,
                           pipeline_batches=pipeline_batches)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env={**os.environ, "JAX_PLATFORMS": "cpu"})
  if proc.returncode != 0:
    raise RuntimeError(proc.stderr[-3000:])
  return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--sizes_mb", default="20,2048")
  parser.add_argument("--steps", type=int, default=30)
  parser.add_argument("--pipeline_batches", type=int, default=2000)
  parser.add_argument("--out", default=os.path.join(REPO, "benchmarks", "results", "stream_memory.json"))
  args = parser.parse_args()
  from configs import pretrain as pretrain_config  # pylint: disable=g-import-not-at-top
  from jaxllm.data.corpus import train_tokenizer  # pylint: disable=g-import-not-at-top

  rows = []
  with tempfile.TemporaryDirectory() as tmp:
    tok = os.path.join(tmp, "tokenizer")
    train_tokenizer(pretrain_config.get_config("tiny")).save(tok)
    for size_mb in [int(s) for s in args.sizes_mb.split(",")]:
      folder = os.path.join(tmp, f"corpus_{size_mb}mb")
      os.makedirs(folder)
      start = time.perf_counter()
      docs = write_corpus(folder, size_mb << 20)
      written_s = time.perf_counter() - start
      result = measure(folder, tok, args.steps, args.pipeline_batches)
      rows.append({"corpus_mb": size_mb, "documents": docs, "write_seconds": written_s, **result})
      print(json.dumps(rows[-1]), flush=True)
      for f in os.listdir(folder):
        os.remove(os.path.join(folder, f))
  base = rows[0]["peak_rss_mb"]
  print(f"\n{'corpus':>9} {'peak RSS':>10} {'vs first':>9} {'pipeline tok/s':>15} {'step tok/s':>11}")
  for r in rows:
    r["rss_ratio"] = r["peak_rss_mb"] / base
    print(f"{r['corpus_mb']:>6} MB {r['peak_rss_mb']:>7.0f} MB {r['rss_ratio']:>8.2f}x "
          f"{r['pipeline_tokens_per_sec']:>15,.0f} {r['step_tokens_per_sec']:>11,.0f}")
  record = {"date": time.strftime("%Y-%m-%d"), "command": " ".join(["python", "benchmarks/stream_memory.py"] +
                                                                   sys.argv[1:]), "rows": rows}
  os.makedirs(os.path.dirname(args.out), exist_ok=True)
  with open(args.out, "w") as f:
    json.dump(record, f, indent=2)


if __name__ == "__main__":
  main()
