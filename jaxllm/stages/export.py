"""Stage `export`: write init_from (a jaxllm workdir or checkpoint, LoRA merged; or an HF folder) as a Hugging
Face model folder at config.export.path.

  python run.py --config=configs/export.py --config.init_from=W --config.export.path=OUT
"""
from __future__ import annotations

import os
import shutil
import time

import ml_collections

from jaxllm import hf
from jaxllm.checkpoint import load_pretrained
from jaxllm.errors import ConfigError
from jaxllm.tokenizer import Tokenizer


def run(config: ml_collections.ConfigDict) -> dict:
  e = config.export
  target = os.path.abspath(e.path)
  if os.path.isdir(target) and os.listdir(target) and not e.overwrite:
    raise ConfigError(f"config.export.path: {target} is not empty ({len(os.listdir(target))} entries); refusing "
                      "to replace what is there (set export.overwrite=True, or pick an empty folder)")
  if os.path.exists(target) and not os.path.isdir(target):
    raise ConfigError(f"config.export.path: {target} is a file, not a folder")
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
  # Written into a sibling temp folder and renamed at the end: an interrupted export never leaves a half-written
  # model where a loader would take it for a whole one.
  tmp = f"{target}.tmp{os.getpid()}"
  shutil.rmtree(tmp, ignore_errors=True)
  files = hf.export(tmp, model_cfg, weights, tokenizer, max_shard_bytes=int(e.max_shard_gb * 2**30), dtype=e.dtype)
  if os.path.isdir(target):  # empty, or export.overwrite=True
    old = f"{target}.old{os.getpid()}"
    os.replace(target, old)
    os.replace(tmp, target)
    shutil.rmtree(old)
  else:
    os.replace(tmp, target)
  seconds = time.perf_counter() - start
  print(f"export: {config.init_from} -> {e.path} ({', '.join(files)}) in {seconds:.1f}s", flush=True)
  return {"path": e.path, "files": len(files), "seconds": seconds}
