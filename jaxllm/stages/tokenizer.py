"""Stage `tokenizer`: train a byte-level BPE on the configured corpus and save it to workdir/tokenizer.

  python run.py --config=configs/tokenizer.py --config.workdir=W   # later stages: --config.tokenizer.path=W
"""
from __future__ import annotations

import json
import os
import time

import ml_collections

from jaxllm import runtime
from jaxllm.data.corpus import train_tokenizer


def run(config: ml_collections.ConfigDict) -> dict:
  workdir = runtime.default_workdir(config)
  start = time.perf_counter()
  tokenizer = train_tokenizer(config)
  seconds = time.perf_counter() - start
  os.makedirs(workdir, exist_ok=True)
  tokenizer.save(os.path.join(workdir, "tokenizer"))
  with open(os.path.join(workdir, "config.json"), "w") as f:
    json.dump({**config.to_dict(), "workdir": workdir}, f, indent=2, sort_keys=True)
  sample = "Mia has 7 apples. 判断这条评论 <|im_end|> 🙂"
  ids = tokenizer.encode(sample)
  print(f"tokenizer: {tokenizer.n_vocab} tokens, trained in {seconds:.1f}s; {sample!r} -> {len(ids)} ids")
  return {"n_vocab": tokenizer.n_vocab, "train_seconds": seconds}
