"""LLaMA-Factory `dataset_info.json` registries: name -> {file_name, formatting, ranking, columns, tags,
num_samples}, validated entry by entry (`file_name` resolved relative to the registry's folder)."""
from __future__ import annotations

import json
import os

from jaxllm.data.files import DataError, short

FORMATTINGS = ("alpaca", "sharegpt", "text", "hh_rlhf", "gsm8k", "classification")
COLUMN_KEYS = ("prompt", "query", "response", "history", "messages", "system", "tools", "chosen", "rejected")
TAG_DEFAULTS = {"role_tag": "from", "content_tag": "value", "user_tag": "human", "assistant_tag": "gpt",
                "observation_tag": "observation", "function_tag": "function_call", "system_tag": "system"}
_ENTRY_KEYS = {"file_name", "formatting", "ranking", "columns", "tags", "num_samples",
               "file_sha1", "subset", "split", "folder", "revision"}  # the last five are accepted and ignored
_REMOTE_KEYS = ("hf_hub_url", "ms_hub_url", "om_hub_url", "script_url", "cloud_file_name")


def load_registry(path: str) -> dict[str, dict]:
  """A parsed dataset_info.json (`path` may also be the folder holding it)."""
  path = os.fspath(path)
  if os.path.isdir(path):
    path = os.path.join(path, "dataset_info.json")
  if not os.path.exists(path):
    raise FileNotFoundError(f"dataset registry not found: {path}")
  with open(path, encoding="utf-8-sig") as f:
    try:
      registry = json.load(f)
    except json.JSONDecodeError as e:
      raise DataError(f"{path}: line {e.lineno} column {e.colno}: invalid JSON: {e.msg}") from None
  if not isinstance(registry, dict):
    raise DataError(f"{path}: expected a JSON object mapping dataset names to entries")
  for name, entry in registry.items():
    if not isinstance(entry, dict):
      raise DataError(f"{path}: entry {name!r} must be a JSON object, got {type(entry).__name__}")
  return registry


def _check_entry(where: str, entry: dict) -> None:
  unknown = set(entry) - _ENTRY_KEYS - set(_REMOTE_KEYS)
  if unknown:
    raise DataError(f"{where}: unknown keys {sorted(unknown)}; allowed: {sorted(_ENTRY_KEYS)}")
  if "file_name" not in entry:
    remote = [k for k in _REMOTE_KEYS if k in entry]
    raise DataError(f"{where}: needs 'file_name'" + (f" (remote sources {remote} are not supported)" if remote else ""))
  if not isinstance(entry["file_name"], str) or not entry["file_name"]:
    raise DataError(f"{where}: 'file_name' must be a non-empty string, got {short(entry['file_name'])}")
  if entry.get("formatting", "alpaca") not in FORMATTINGS:
    raise DataError(f"{where}: formatting {entry['formatting']!r} is not one of {', '.join(FORMATTINGS)}")
  if not isinstance(entry.get("ranking", False), bool):
    raise DataError(f"{where}: 'ranking' must be true or false, got {short(entry['ranking'])}")
  n = entry.get("num_samples")
  if n is not None and (not isinstance(n, int) or isinstance(n, bool) or n < 1):
    raise DataError(f"{where}: 'num_samples' must be a positive integer, got {short(n)}")
  check_maps(where, entry.get("columns"), entry.get("tags"))


def check_maps(where: str, columns: dict | None, tags: dict | None) -> None:
  for key, value, allowed in (("columns", columns, COLUMN_KEYS), ("tags", tags, tuple(TAG_DEFAULTS))):
    if value is None:
      continue
    if not isinstance(value, dict):
      raise DataError(f"{where}: '{key}' must be an object, got {type(value).__name__}")
    bad = [k for k in value if k not in allowed]
    if bad:
      raise DataError(f"{where}: unknown or unsupported {key} {bad}; allowed: {', '.join(allowed)}")
    bad = {k: v for k, v in value.items() if not isinstance(v, str)}
    if bad:
      raise DataError(f"{where}: {key} values must be strings, got {bad}")


def resolve(name: str, dataset_info: str) -> dict:
  """The registry entry for `name`, validated, with "file_name" made absolute (relative to the registry)."""
  dataset_info = os.fspath(dataset_info)
  registry = load_registry(dataset_info)
  path = os.path.join(dataset_info, "dataset_info.json") if os.path.isdir(dataset_info) else dataset_info
  if name not in registry:
    raise DataError(f"{path}: unknown dataset {name!r}; known datasets: {', '.join(sorted(registry))}")
  entry = dict(registry[name])
  _check_entry(f"{path}: dataset {name!r}", entry)
  entry["file_name"] = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(path)), entry["file_name"]))
  return entry
