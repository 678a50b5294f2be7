"""Stage `export`: write init_from (a jaxllm workdir or checkpoint, LoRA merged; or an HF folder) as a Hugging
Face model folder at config.export.path.

  python run.py --config=configs/export.py --config.init_from=W --config.export.path=OUT
"""
from __future__ import annotations

import os
import time

import ml_collections

from jaxllm import hf
from jaxllm.checkpoint import load_pretrained
from jaxllm.tokenizer import Tokenizer


def run(config: ml_collections.ConfigDict) -> dict:
  e = config.export
  start = time.perf_counter()
  if hf.is_hf_folder(config.init_from):
    model_cfg, weights = hf.load(config.init_from, dtype=e.dtype)
    tokenizer = hf.load_tokenizer(config.init_from)
  else:
    pretrained = load_pretrained(config.init_from)  # LoRA adapters merged into their base
    model_cfg, weights = pretrained.config.model.to_dict(), pretrained.weights
    tokenizer = Tokenizer.load(os.path.join(pretrained.workdir, "tokenizer"))
    if pretrained.extras:
      print(f"export: not exported (no Hugging Face equivalent): {sorted(pretrained.extras)}", flush=True)
  if config.tokenizer.path:
    tokenizer = Tokenizer.load(config.tokenizer.path)
  files = hf.export(e.path, model_cfg, weights, tokenizer, max_shard_bytes=int(e.max_shard_gb * 2**30),
                    dtype=e.dtype)
  seconds = time.perf_counter() - start
  print(f"export: {config.init_from} -> {e.path} ({', '.join(files)}) in {seconds:.1f}s", flush=True)
  return {"path": e.path, "files": len(files), "seconds": seconds}
