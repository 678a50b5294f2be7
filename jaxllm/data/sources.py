"""Dataset readers: files on disk -> normalised Python records (no JAX here).

Two layers:
  * `read_rows(path)` turns a .json / .jsonl / .csv / .parquet / .txt file (optionally .gz, or a folder of
    such files) into row dicts;
  * `load(name, dataset_info, kind)` / `load_file(path, formatting, kind)` parse those rows in one of the
    formats below and return records of the `kind` the calling stage needs.

Registry: a LLaMA-Factory `dataset_info.json` (name -> {file_name, formatting, ranking, columns, tags,
num_samples}); `file_name` is relative to the registry's folder. Formats:
  alpaca          instruction / input / output (+ history, system, tools; chosen / rejected when ranking)
  sharegpt        a message list (`conversations`) with from/value tags (+ system, tools; chosen / rejected)
  text            one text column (`columns.prompt`, default "text"); .txt files give {"text": line}
  hh_rlhf         Anthropic HH transcripts "\\n\\nHuman: ...\\n\\nAssistant: ..." under chosen / rejected; turns
                  must alternate Human/Assistant, and both sides share every turn before the final Assistant one
  gsm8k           question / answer, the answer a worked solution ending "#### <number>" (<<calc>> notes kept)
  classification  text / label (remap with columns.prompt -> text, columns.response -> label)

Kinds (what `load` returns, one dict per record):
  text            {"text": str}
  chat            {"messages": [{"role", "content"}, ...], "tools": str}; roles are system | user | assistant |
                  tool (a sharegpt observation) | function_call (an assistant turn whose content is a tool call,
                  kept distinct so the chat template can render it as one)
  preference      {"messages": prompt turns ending with a user (or tool) turn, "chosen": str, "rejected": str}
  gsm8k           {"question": str, "solution": str (the full worked text), "answer": str (after the last "####",
                  commas removed)}
  classification  {"text": str, "label": str}

LLaMA-Factory semantics kept on purpose (src/llamafactory/data/parser.py, converter.py):
  * a "columns" dict replaces the defaults: alpaca columns it does not name are unset (so {"prompt": "text"}
    reads a pretraining corpus: no query, no response);
  * alpaca: the user turn is "prompt\\nquery" (empty parts dropped); history pairs become earlier turns;
  * sharegpt: a leading message tagged system_tag is the system prompt (it overrides the system column);
    then user/observation turns at odd positions and assistant/function_call at even ones (1-based); an even
    number of turns, or an odd number when ranking (the prompt; chosen/rejected are assistant/function_call
    messages); a "tags" dict leaves observation/function/system tags it does not name unset.
Additions: chosen/rejected columns default to "chosen"/"rejected"; kind="text" over an entry without
"columns" reads a "text" column when the rows have one; kind="text" over chat or preference data joins the
turns (with the chosen answer) by blank lines; `num_samples` takes the first N records (no sampling).
Bad rows raise DataError naming the file, the row and the field, or with on_bad="skip" are counted in
`LoadResult.skipped` (the first messages kept in `skip_reasons`).
"""
from __future__ import annotations

import os

from jaxllm.data.files import DataError, LoadResult, RowError, Sink, located_rows, read_rows
from jaxllm.data.formats import make_spec, row_fn, split_hh_transcript
from jaxllm.data.registry import FORMATTINGS, check_maps, load_registry, resolve

# The loading API stages and tests use; the pieces live in files.py (reading), registry.py (dataset_info.json)
# and formats.py (row parsing).
__all__ = ["DataError", "FORMATTINGS", "KINDS", "LoadResult", "load", "load_file", "load_registry", "read_rows",
           "resolve", "split_hh_transcript"]

KINDS = ("text", "chat", "preference", "gsm8k", "classification")
# Which kinds each formatting can produce (preference also needs ranking data for alpaca / sharegpt).
_KINDS_OF = {
    "alpaca": ("text", "chat", "preference"),
    "sharegpt": ("text", "chat", "preference"),
    "hh_rlhf": ("text", "chat", "preference"),
    "text": ("text",),
    "gsm8k": ("text", "chat", "gsm8k"),
    "classification": ("text", "classification"),
}


def _load(path: str, formatting: str, kind: str, columns: dict | None, tags: dict | None, ranking: bool,
          on_bad: str, cap: int | None, what: str) -> LoadResult:
  sink = Sink(on_bad)
  if kind not in KINDS:
    raise ValueError(f"{what}: kind {kind!r} is not one of {', '.join(KINDS)}")
  if formatting not in FORMATTINGS:
    raise ValueError(f"{what}: formatting {formatting!r} is not one of {', '.join(FORMATTINGS)}")
  if kind not in _KINDS_OF[formatting]:
    raise ValueError(f"{what}: {formatting} data cannot be read as kind={kind!r}; "
                     f"it gives {', '.join(_KINDS_OF[formatting])}")
  if kind == "preference" and formatting in ("alpaca", "sharegpt") and not ranking:
    raise ValueError(f"{what}: kind='preference' needs ranking data (\"ranking\": true with chosen/rejected)")
  if cap is not None and (not isinstance(cap, int) or cap < 1):
    raise ValueError(f"{what}: limit must be a positive integer or None, got {cap!r}")
  fn = row_fn(make_spec(formatting, ranking, columns, tags), kind)
  rows, source = located_rows(os.fspath(path), sink)
  records = []
  for where, row in rows:
    if cap is not None and len(records) >= cap:
      break
    try:
      records.append(fn(row))
    except RowError as e:
      sink.bad(where, str(e))
  if not records:
    raise DataError(f"{source}: no usable records (all {sink.skipped} skipped; first: {sink.reasons[:1]})")
  return LoadResult(records, sink.skipped, source, sink.reasons)


def load(name: str, dataset_info: str, kind: str, on_bad: str = "fail", limit: int | None = None) -> LoadResult:
  """Records of `kind` from the dataset `name` in the registry `dataset_info` (a dataset_info.json path).

  `num_samples` in the entry and `limit` both cap the result to its first records.
  """
  Sink(on_bad)  # validates on_bad before any reading
  entry = resolve(name, dataset_info)
  caps = [n for n in (entry.get("num_samples"), limit) if n is not None]
  return _load(entry["file_name"], entry.get("formatting", "alpaca"), kind, entry.get("columns"), entry.get("tags"),
               entry.get("ranking", False), on_bad, min(caps) if caps else None, f"dataset {name!r}")


def load_file(path: str, formatting: str, kind: str, columns: dict | None = None, tags: dict | None = None,
              on_bad: str = "fail", *, ranking: bool | None = None, limit: int | None = None) -> LoadResult:
  """`load` without a registry. `ranking` defaults to kind == "preference" (alpaca / sharegpt pairs)."""
  what = f"load_file({os.fspath(path)!r})"
  try:
    check_maps(what, columns, tags)
  except DataError as e:  # a bad argument, not bad data
    raise ValueError(str(e)) from None
  return _load(path, formatting, kind, columns, tags, kind == "preference" if ranking is None else ranking,
               on_bad, limit, what)
