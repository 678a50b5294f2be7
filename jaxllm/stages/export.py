"""Stage `export`: write init_from (a jaxllm workdir or checkpoint, LoRA merged; or an HF folder) as a Hugging
Face model folder at config.export.path; a classify run (last-token pooling) as the family's
...ForSequenceClassification, its head as `score.weight` and its class names as id2label.

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
from jaxllm.losses import classify
from jaxllm.tokenizer import Tokenizer


def exported_classifier(pretrained) -> tuple | None:
  """(head [D, C], class names) of a classify run whose head transformers computes (last-token pooling), else
  None: a mean-pooled head has no transformers class, so the trunk is exported as a causal LM and the head left
  out (said on stdout)."""
  if classify.HEAD not in pretrained.extras:
    return None
  k = pretrained.config.classify
  if k.pooling != "last":
    print(f"export: the classify head is mean-pooled (classify.pooling={k.pooling!r}), which no transformers "
          "...ForSequenceClassification computes (they read the last token)", flush=True)
    return None
  return pretrained.extras[classify.HEAD]["w"], classify.parse_labels(k.labels)


def run(config: ml_collections.ConfigDict) -> dict:
  e = config.export
  target = os.path.abspath(e.path)
  if os.path.isdir(target) and os.listdir(target) and not e.overwrite:
    raise ConfigError(f"config.export.path: {target} is not empty ({len(os.listdir(target))} entries); refusing "
                      "to replace what is there (set export.overwrite=True, or pick an empty folder)")
  if os.path.exists(target) and not os.path.isdir(target):
    raise ConfigError(f"config.export.path: {target} is a file, not a folder")
  start = time.perf_counter()
  classifier = None
  if hf.is_hf_folder(config.init_from):
    model_cfg, weights = hf.load(config.init_from, dtype=e.dtype)
    tokenizer = hf.load_tokenizer(config.init_from)
  else:
    pretrained = load_pretrained(config.init_from)  # LoRA adapters merged into their base
    model_cfg, weights = pretrained.config.model.to_dict(), pretrained.weights
    tokenizer = Tokenizer.load(os.path.join(pretrained.workdir, "tokenizer"))
    classifier = exported_classifier(pretrained)
    left_out = sorted(set(pretrained.extras) - ({classify.HEAD} if classifier else set()))
    if left_out:
      print(f"export: not exported (no Hugging Face equivalent): {left_out}", flush=True)
  if config.tokenizer.path:
    tokenizer = Tokenizer.load(config.tokenizer.path)
  # Written into a sibling temp folder and renamed at the end: an interrupted export never leaves a half-written
  # model where a loader would take it for a whole one.
  tmp = f"{target}.tmp{os.getpid()}"
  shutil.rmtree(tmp, ignore_errors=True)
  files = hf.export(tmp, model_cfg, weights, tokenizer, max_shard_bytes=int(e.max_shard_gb * 2**30), dtype=e.dtype,
                    classifier=classifier)
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
