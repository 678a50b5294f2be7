"""A checkpoint folder's checksum manifest: the size and SHA-256 of every file in it, written once the save is
complete and checked before a restore, so flipped bits or a truncated file are found instead of trained on.

A folder without a manifest (the run was killed between orbax finishing the save and the manifest being
written) is not verified by checksum; the restore then relies on orbax's own checks and on the restored state
being finite.
"""
from __future__ import annotations

import hashlib
import json
import os

NAME = "jaxllm_manifest.json"
_CHUNK = 1 << 20


def _digest(path: str) -> str:
  h = hashlib.sha256()
  with open(path, "rb") as f:
    while chunk := f.read(_CHUNK):
      h.update(chunk)
  return h.hexdigest()


def _files(folder: str) -> list[str]:
  out = []
  for root, _, names in os.walk(folder):
    for name in names:
      rel = os.path.relpath(os.path.join(root, name), folder)
      if rel != NAME:
        out.append(rel)
  return sorted(out)


def write(folder: str) -> None:
  """Write `folder/NAME` atomically (temp file + rename)."""
  entries = {rel: {"bytes": os.path.getsize(os.path.join(folder, rel)), "sha256": _digest(os.path.join(folder, rel))}
             for rel in _files(folder)}
  tmp = os.path.join(folder, NAME + ".tmp")
  with open(tmp, "w") as f:
    json.dump({"files": entries}, f, indent=1, sort_keys=True)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, os.path.join(folder, NAME))


def verify(folder: str) -> str | None:
  """None if `folder` matches its manifest (or has none); else the first problem found, one line."""
  path = os.path.join(folder, NAME)
  if not os.path.exists(path):
    return None
  try:
    with open(path) as f:
      entries = json.load(f)["files"]
  except (OSError, ValueError, KeyError) as e:
    return f"{NAME} is unreadable: {e}"
  for rel, want in sorted(entries.items()):
    file = os.path.join(folder, rel)
    if not os.path.exists(file):
      return f"{rel} is missing"
    size = os.path.getsize(file)
    if size != want["bytes"]:
      return f"{rel} has {size} bytes, the manifest says {want['bytes']} (truncated?)"
    if _digest(file) != want["sha256"]:
      return f"{rel} does not match its SHA-256 in {NAME} (corrupted)"
  return None
