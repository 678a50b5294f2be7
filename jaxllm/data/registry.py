"""LLaMA-Factory `dataset_info.json` registries: name -> {file_name | hf_hub_url | script_url, formatting, ranking,
columns, tags, num_samples, subset, split, folder, revision}, validated entry by entry (`file_name` and
`script_url` resolved relative to the registry's folder; `hf_hub_url` and `script_url` are read by hub.py)."""
from __future__ import annotations

import json
import os

from jaxllm.data.files import DataError, short

FORMATTINGS = ("alpaca", "sharegpt", "messages", "prompt_completion", "preference", "text", "hh_rlhf", "gsm8k",
               "classification")
# kto_tag: LLaMA-Factory's boolean desirable / undesirable column of single-answer data (read by data/kto.py)
COLUMN_KEYS = ("prompt", "query", "response", "history", "messages", "system", "tools", "chosen", "rejected",
               "kto_tag")
TAG_DEFAULTS = {"role_tag": "from", "content_tag": "value", "user_tag": "human", "assistant_tag": "gpt",
                "observation_tag": "observation", "function_tag": "function_call", "system_tag": "system"}
_ENTRY_KEYS = {"file_name", "hf_hub_url", "script_url", "formatting", "ranking", "columns", "tags", "num_samples",
               "subset", "split", "folder", "revision", "file_sha1"}  # file_sha1 is accepted and ignored
_UNSUPPORTED_KEYS = ("ms_hub_url", "om_hub_url", "cloud_file_name")  # ModelScope, Modelers, S3/GCS
_SOURCE_KEYS = ("file_name", "hf_hub_url", "script_url")


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
  unknown = set(entry) - _ENTRY_KEYS - set(_UNSUPPORTED_KEYS)
  if unknown:
    raise DataError(f"{where}: unknown keys {sorted(unknown)}; allowed: {sorted(_ENTRY_KEYS)}")
  given = [k for k in _SOURCE_KEYS if k in entry]
  if not given:
    other = [k for k in _UNSUPPORTED_KEYS if k in entry]
    raise DataError(f"{where}: needs one of {', '.join(_SOURCE_KEYS)}" +
                    (f" ({', '.join(other)} sources are not supported)" if other else ""))
  if len(given) > 1:
    raise DataError(f"{where}: give one of {', '.join(given)}, not several")
  for key in given + [k for k in ("subset", "split", "folder", "revision") if k in entry]:
    if not isinstance(entry[key], str) or not entry[key]:
      raise DataError(f"{where}: '{key}' must be a non-empty string, got {short(entry[key])}")
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


def resolve(name: str, dataset_info: str, allow_outside: bool = False) -> dict:
  """The registry entry for `name`, validated, with "file_name" made absolute (relative to the registry) and
  "registry_dir" added (where hub.py resolves local hf_hub_url / script_url folders).

  A file_name that leaves the registry's folder (`../x`, an absolute path) is refused unless `allow_outside`
  (config data.allow_outside_paths): a registry someone else wrote must not make a run read arbitrary files."""
  dataset_info = os.fspath(dataset_info)
  registry = load_registry(dataset_info)
  path = os.path.join(dataset_info, "dataset_info.json") if os.path.isdir(dataset_info) else dataset_info
  if name not in registry:
    raise DataError(f"{path}: unknown dataset {name!r}; known datasets: {', '.join(sorted(registry))}")
  entry = dict(registry[name])
  _check_entry(f"{path}: dataset {name!r}", entry)
  entry["registry_dir"] = os.path.dirname(os.path.abspath(path))
  if "file_name" in entry:
    folder = entry["registry_dir"]
    file_name = os.path.abspath(os.path.join(folder, entry["file_name"]))
    if not allow_outside and os.path.commonpath([folder, file_name]) != folder:
      raise DataError(f"{path}: dataset {name!r}: file_name {entry['file_name']!r} points outside the registry's "
                      f"folder {folder} (set data.allow_outside_paths=True to allow it)")
    entry["file_name"] = file_name
  return entry
