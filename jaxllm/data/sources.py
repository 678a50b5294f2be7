"""Dataset readers: files on disk or Hugging Face datasets -> normalised Python records (no JAX here).

Two layers:
  * `read_rows(path)` turns a .json / .jsonl / .csv / .parquet / .txt file (optionally .gz, or a folder of
    such files) into row dicts; hub.py does the same through `datasets` for hub ids (hf:org/name), URLs,
    save_to_disk / Parquet / Arrow folders, globs and hf_hub_url / script_url registry entries;
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
  messages, prompt_completion, preference   the TRL / OpenAI formats (trl_formats.py)
Without a formatting (no "formatting" and no "columns" in the entry, formatting=None, sft.formatting=auto) the
format is told from the first row's columns (detect.py); an explicit one always wins.

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

import dataclasses
import os

from typing import Any, Callable, Iterator

from jaxllm.data import detect, hub
from jaxllm.data.files import DataError, DataNotFoundError, LoadResult, RowError, Sink, located_rows, read_rows, short
from jaxllm.data.formats import make_spec, row_fn, split_hh_transcript
from jaxllm.data.registry import FORMATTINGS, check_maps, load_registry, resolve

# The loading API stages and tests use; the pieces live in files.py (reading), registry.py (dataset_info.json)
# and formats.py (row parsing).
__all__ = ["DataError", "DataNotFoundError", "FORMATTINGS", "KINDS", "LoadResult", "Sink", "load", "load_config",
           "load_file", "load_registry", "read_rows", "resolve", "split_hh_transcript", "text_stream"]

KINDS = ("text", "chat", "preference", "gsm8k", "classification")
# A kind, or a function of the (given or detected) formatting that picks it (SFT reads classification data as
# classification records and everything else as chat).
KindArg = str | Callable[[str], str]
# Which kinds each formatting can produce (preference also needs ranking data for alpaca / sharegpt).
_KINDS_OF = {
    "alpaca": ("text", "chat", "preference"),
    "sharegpt": ("text", "chat", "preference"),
    "messages": ("text", "chat"),
    "prompt_completion": ("text", "chat"),
    "preference": ("text", "chat", "preference"),
    "hh_rlhf": ("text", "chat", "preference"),
    "text": ("text",),
    "gsm8k": ("text", "chat", "gsm8k"),
    "classification": ("text", "classification"),
}


def _check_kind(what: str, formatting: str, kind: str, ranking: bool) -> None:
  if kind not in KINDS:
    raise ValueError(f"{what}: kind {kind!r} is not one of {', '.join(KINDS)}")
  if formatting not in FORMATTINGS:
    raise ValueError(f"{what}: formatting {formatting!r} is not one of {', '.join(FORMATTINGS)}")
  if kind not in _KINDS_OF[formatting]:
    raise ValueError(f"{what}: {formatting} data cannot be read as kind={kind!r}; "
                     f"it gives {', '.join(_KINDS_OF[formatting])}")
  if kind == "preference" and formatting in ("alpaca", "sharegpt") and not ranking:
    raise ValueError(f"{what}: kind='preference' needs ranking data (\"ranking\": true with chosen/rejected)")


def _rows(where: str | dict, sink: Sink, split: str, subset: str,
          streaming: bool) -> tuple[Iterator[tuple[str, Any]], str]:
  """(location, row) pairs of a path (files.py, or datasets for hub ids / Arrow / globs) or a registry entry."""
  if isinstance(where, dict):  # a registry entry
    if "file_name" not in where:
      return hub.located_rows(hub.source_for_entry(where, where["registry_dir"], where["what"]), streaming)
    where = where["file_name"]
  if streaming or hub.wants_datasets(where):
    return hub.located_rows(hub.source_for_name(where, subset, split), streaming)
  rows, source = located_rows(where, sink)
  return iter(rows), source


def _load(where: str | dict, formatting: str | None, kind: KindArg, columns: dict | None, tags: dict | None,
          ranking: bool | None, on_bad: str, cap: int | None, what: str, split: str = "train", subset: str = "",
          streaming: bool = False) -> LoadResult:
  """Records of `kind`; formatting None = detected from the first row (with the ranking it implies)."""
  sink = Sink(on_bad)
  kind_of = kind if callable(kind) else lambda formatting: kind
  if formatting is not None:
    kind = kind_of(formatting)
    _check_kind(what, formatting, kind, bool(ranking))
  if cap is not None and (not isinstance(cap, int) or cap < 1):
    raise ValueError(f"{what}: limit must be a positive integer or None, got {cap!r}")
  rows, source = _rows(where, sink, split, subset, streaming)
  fn, records, locations = None, [], []
  for where_row, row in rows:
    if cap is not None and len(records) >= cap:
      break
    if fn is None:
      if formatting is None:
        found = detect.detect(row, source)
        formatting, columns, tags = found.formatting, columns or found.columns, tags or found.tags
        ranking = found.ranking if ranking is None else ranking
        kind = kind_of(formatting)
        _check_kind(f"{what} (detected {formatting} data)", formatting, kind, ranking)
      fn = row_fn(make_spec(formatting, bool(ranking), columns, tags), kind)
    try:
      records.append(fn(row))
      locations.append(where_row)
    except RowError as e:
      sink.bad(where_row, str(e))
  if not records:
    raise DataError(f"{source}: no usable records (all {sink.skipped} skipped; first: {sink.reasons[:1]})")
  return LoadResult(records, sink.skipped, source, sink.reasons, formatting, locations)


def entry_formatting(entry: dict) -> str | None:
  """An entry's formatting: its own, alpaca when it remaps columns (LLaMA-Factory's default), else detected."""
  return entry.get("formatting") or ("alpaca" if "columns" in entry else None)


def load(name: str, dataset_info: str, kind: KindArg, on_bad: str = "fail", limit: int | None = None,
         streaming: bool = False, allow_outside: bool = False) -> LoadResult:
  """Records of `kind` from the dataset `name` in the registry `dataset_info` (a dataset_info.json path).

  `num_samples` in the entry and `limit` both cap the result to its first records; `allow_outside` lets the
  entry's file_name leave the registry's folder (data.allow_outside_paths).
  """
  Sink(on_bad)  # validates on_bad before any reading
  entry = resolve(name, dataset_info, allow_outside)
  caps = [n for n in (entry.get("num_samples"), limit) if n is not None]
  formatting = entry_formatting(entry)
  ranking = entry.get("ranking", False if formatting else None)
  return _load({**entry, "what": f"dataset {name!r}"}, formatting, kind, entry.get("columns"), entry.get("tags"),
               ranking, on_bad, min(caps) if caps else None, f"dataset {name!r}", streaming=streaming)


def load_file(path: str, formatting: str | None, kind: KindArg, columns: dict | None = None, tags: dict | None = None,
              on_bad: str = "fail", *, ranking: bool | None = None, limit: int | None = None, split: str = "train",
              subset: str = "", streaming: bool = False) -> LoadResult:
  """`load` without a registry: a file, folder or glob, or a hub id / URL (hub.py). formatting None = detected
  from the first row; else `ranking` defaults to kind == "preference" (alpaca / sharegpt pairs)."""
  what = f"load_file({os.fspath(path)!r})"
  try:
    check_maps(what, columns, tags)
  except DataError as e:  # a bad argument, not bad data
    raise ValueError(str(e)) from None
  if formatting is not None and ranking is None:
    ranking = kind == "preference"
  where = os.fspath(path)
  return _load(where, formatting, kind, columns, tags, ranking, on_bad, limit, what, split, subset, streaming)


def load_config(data: Any, kind: KindArg, formatting: str = "", limit: int | None = None,
                split: str = "") -> LoadResult:
  """Records of `kind` for a config's `data` section: data.name in data.dataset_info, else a path, glob, hub id
  (hf:org/name with data.subset) or URL; data.split (or `split`), data.streaming. formatting '' / 'auto' =
  detected (with data.dataset_info the registry entry decides)."""
  fmt = None if formatting in ("", "auto") else formatting
  if data.dataset_info:  # the registry entry says how to read it
    return load(data.name, data.dataset_info, kind, on_bad=data.on_bad_row, limit=limit, streaming=data.streaming,
                allow_outside=data.allow_outside_paths)
  else:
    name = data.name
    if not (name.startswith(hub.HUB_PREFIX) or hub.wants_datasets(name) or os.path.exists(name)):
      raise DataNotFoundError(f"config.data.name={name!r} is not a file, folder, glob, hf:<org>/<name> hub id or "
                              f"URL (set config.data.dataset_info to a dataset_info.json to use dataset names)")
    return load_file(name, fmt, kind, on_bad=data.on_bad_row, limit=limit, split=split or data.split,
                       subset=data.subset, streaming=data.streaming)



def text_stream(data: Any) -> tuple[Callable[[], Any], Callable[[dict], str | None], str, Sink]:
  """(open: a fresh streamed datasets.IterableDataset of data.name, text_of: row -> its text or None for a
  blank or (with on_bad_row=skip) bad row, source, the Sink counting skipped rows) for streamed pretraining;
  the format is the registry entry's or told from the first row."""
  entry = resolve(data.name, data.dataset_info) if data.dataset_info else None
  what = f"dataset {data.name!r}" if entry else data.name
  if entry is None:
    src = hub.source_for_name(data.name, data.subset, data.split)
  elif "file_name" in entry:
    src = dataclasses.replace(hub.source_for_name(entry["file_name"]), what=what)
  else:
    src = hub.source_for_entry(entry, entry["registry_dir"], what)

  def open_stream() -> Any:
    return hub.open_dataset(src, streaming=True)

  first = next(iter(open_stream()), None)
  if first is None:
    raise DataError(f"{what}: the corpus is empty")
  formatting = entry_formatting(entry) if entry else None
  columns, tags = (entry.get("columns"), entry.get("tags")) if entry else (None, None)
  ranking = entry.get("ranking", False) if entry else False
  if formatting is None:
    found = detect.detect(first, what)
    formatting, columns, tags, ranking = found.formatting, columns or found.columns, tags or found.tags, found.ranking
  _check_kind(what, formatting, "text", ranking)
  fn = row_fn(make_spec(formatting, ranking, columns, tags), "text")
  sink = Sink(data.on_bad_row)

  def text_of(row: dict) -> str | None:
    try:
      text = fn(row)["text"]
    except RowError as e:
      if "empty text" in str(e):  # blank lines and empty documents carry nothing to learn
        return None
      sink.bad(f"{what}: streamed row {short(row)}", str(e))
      return None
    return text if text.strip() else None

  return open_stream, text_of, what, sink
