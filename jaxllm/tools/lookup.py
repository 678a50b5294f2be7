"""The `lookup` tool: a value from a local table, by key (case and surrounding spaces ignored).

The table is a JSON object {key: value} or a two-column CSV (key,value; a header row `key,value` is skipped),
named by `tools.table`; '' = the built-in world's table (jaxllm/data/synthetic_tools.py: the price of each item).
"""
from __future__ import annotations

import csv
import json
import os

NAME = "lookup"
DESCRIPTION = "Looks up a value in a local table by its key."
PARAMETERS = {"type": "object", "properties": {"key": {"type": "string"}}, "required": ["key"]}
MAX_KEY_CHARS = 200


def load_table(path: str) -> dict[str, str]:
  """{normalised key: value} from a JSON or CSV file; a bad file raises ValueError naming it."""
  if not os.path.isfile(path):
    raise ValueError(f"tools.table: no such file {path!r}")
  with open(path, encoding="utf-8") as f:
    if path.endswith(".json"):
      try:
        raw = json.load(f)
      except json.JSONDecodeError as e:
        raise ValueError(f"tools.table: {path}: not JSON ({e.msg}, line {e.lineno})") from None
      if not isinstance(raw, dict):
        raise ValueError(f"tools.table: {path}: expected a JSON object {{key: value}}, got {type(raw).__name__}")
      rows = list(raw.items())
    else:
      rows = []
      for i, row in enumerate(csv.reader(f)):
        if len(row) != 2:
          raise ValueError(f"tools.table: {path}: row {i + 1} has {len(row)} columns, expected key,value")
        if i == 0 and [c.strip().lower() for c in row] == ["key", "value"]:
          continue
        rows.append((row[0], row[1]))
  return {str(k).strip().lower(): str(v) for k, v in rows}


def make(table: dict[str, str]):
  """The tool's entry over `table`: {"key": "..."} -> the value, or an error string."""
  def run(arguments: dict) -> str:
    key = arguments.get("key")
    if set(arguments) != {"key"} or not isinstance(key, str):
      return 'error: lookup takes {"key": "..."}'
    if len(key) > MAX_KEY_CHARS:
      return f"error: key longer than {MAX_KEY_CHARS} characters"
    value = table.get(key.strip().lower())
    return value if value is not None else f"error: no entry for {key!r}"
  return run
