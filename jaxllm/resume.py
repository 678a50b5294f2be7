"""What a workdir keeps of the run that made it, and the check that a later run may resume it.

The resolved `config.json` and `tokenizer/` are written once, atomically (temp + rename; the tokenizer with a
checksum manifest), when a run starts a workdir without checkpoints, and never rewritten by a resume: a resume
loads the workdir's own tokenizer and is refused if its config differs from the stored one in any key that
changes the computation. Only the keys in `MAY_CHANGE` may differ on resume.
"""
from __future__ import annotations

import json
import os
import shutil
from typing import Any

import ml_collections

from jaxllm import manifest
from jaxllm.errors import UserError

# Keys (dotted; a trailing '.' is a whole section) that may differ between a workdir's run and its resume:
# how long to train, how often to log / evaluate / save, where output goes, how the job is laid out on devices.
# `steps` also sets the schedule length when optim.decay_steps=0; the resume says so when it changes it.
MAY_CHANGE = ("steps", "workdir", "log.", "eval.every", "eval.batches", "checkpoint.every", "checkpoint.keep",
              "train.max_skipped_steps", "sample.", "sampling.lookahead", "dist.", "mesh.")


class ResumeRefused(UserError, ValueError):
  pass


def _flat(tree: Any, prefix: str = "") -> dict[str, Any]:
  if isinstance(tree, dict):
    out = {}
    for k, v in tree.items():
      out.update(_flat(v, f"{prefix}{k}."))
    return out
  return {prefix[:-1]: tree}


def _may_change(key: str) -> bool:
  return any(key == k or (k.endswith(".") and key.startswith(k)) for k in MAY_CHANGE)


def has_checkpoints(workdir: str) -> bool:
  folder = os.path.join(workdir, "checkpoints")
  return os.path.isdir(folder) and any(name.isdigit() for name in os.listdir(folder))


def read_stored_config(workdir: str) -> dict:
  path = os.path.join(workdir, "config.json")
  try:
    with open(path) as f:
      stored = json.load(f)
  except FileNotFoundError:
    raise ResumeRefused(f"{path}: missing, but the workdir holds checkpoints; the run that wrote them cannot be "
                        "checked, so it is not resumed (use a new workdir)") from None
  except ValueError as e:
    raise ResumeRefused(f"{path}: not valid JSON ({e}); the workdir's run cannot be checked (use a new "
                        "workdir)") from None
  if not isinstance(stored, dict):
    raise ResumeRefused(f"{path}: not a JSON object")
  return stored


def differing_keys(stored: dict, config: ml_collections.ConfigDict) -> list[str]:
  """'key: stored -> now' for every computation-changing key that differs (keys one side lacks are skipped:
  they were added or removed by a code change, not by the user)."""
  before = _flat(stored)
  now = _flat(json.loads(json.dumps(config.to_dict())))
  return [f"{k}: {before[k]!r} -> {now[k]!r}" for k in sorted(before.keys() & now.keys())
          if before[k] != now[k] and not _may_change(k)]


def check(stored: dict, config: ml_collections.ConfigDict, log) -> None:
  diffs = differing_keys(stored, config)
  if diffs:
    raise ResumeRefused(f"workdir {config.workdir!r} holds checkpoints of a run whose config differs in "
                        f"{len(diffs)} key(s) that change the computation: " + "; ".join(diffs)
                        + f". Use a new workdir, or the stored values to resume (keys that may change: "
                        f"{', '.join(MAY_CHANGE)})")
  if stored.get("steps") != config.steps and not config.optim.decay_steps:
    log(f"resume: steps {stored.get('steps')} -> {config.steps} with optim.decay_steps=0 stretches the "
        f"learning-rate schedule to {config.steps} steps (set optim.decay_steps to keep the old one)")


def write_config(workdir: str, config: ml_collections.ConfigDict) -> None:
  path = os.path.join(workdir, "config.json")
  with open(path + ".tmp", "w") as f:
    json.dump(config.to_dict(), f, indent=2, sort_keys=True)
    f.flush()
    os.fsync(f.fileno())
  os.replace(path + ".tmp", path)


def write_tokenizer(workdir: str, tokenizer) -> None:
  """Save into a temp folder with a manifest, then rename it over `workdir/tokenizer`."""
  final = os.path.join(workdir, "tokenizer")
  tmp = final + f".tmp{os.getpid()}"
  shutil.rmtree(tmp, ignore_errors=True)
  tokenizer.save(tmp)
  manifest.write(tmp)
  if os.path.isdir(final):  # a fresh start over a workdir that never got a checkpoint: replace the old one
    old = final + f".old{os.getpid()}"
    os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old)
  else:
    os.replace(tmp, final)


def load_tokenizer(workdir: str):
  from jaxllm.tokenizer import Tokenizer

  folder = os.path.join(workdir, "tokenizer")
  if not os.path.isdir(folder):
    raise ResumeRefused(f"{folder}: missing, but the workdir holds checkpoints trained with it (use a new workdir)")
  problem = manifest.verify(folder)
  if problem:
    raise ResumeRefused(f"{folder}: {problem}; the checkpoints were trained with the original (use a new workdir)")
  return Tokenizer.load(folder)
