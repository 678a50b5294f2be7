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

import codecs
import csv
import dataclasses
import functools
import gzip
import io
import json
import os
import re
from typing import Any, Callable

FORMATTINGS = ("alpaca", "sharegpt", "text", "hh_rlhf", "gsm8k", "classification")
KINDS = ("text", "chat", "preference", "gsm8k", "classification")
EXTENSIONS = (".json", ".jsonl", ".csv", ".parquet", ".txt")  # each also as .gz
# Which kinds each formatting can produce (preference also needs ranking data for alpaca / sharegpt).
_KINDS_OF = {
    "alpaca": ("text", "chat", "preference"),
    "sharegpt": ("text", "chat", "preference"),
    "hh_rlhf": ("text", "chat", "preference"),
    "text": ("text",),
    "gsm8k": ("text", "chat", "gsm8k"),
    "classification": ("text", "classification"),
}
COLUMN_KEYS = ("prompt", "query", "response", "history", "messages", "system", "tools", "chosen", "rejected")
TAG_DEFAULTS = {"role_tag": "from", "content_tag": "value", "user_tag": "human", "assistant_tag": "gpt",
                "observation_tag": "observation", "function_tag": "function_call", "system_tag": "system"}
_ENTRY_KEYS = {"file_name", "formatting", "ranking", "columns", "tags", "num_samples",
               "file_sha1", "subset", "split", "folder", "revision"}  # the last five are accepted and ignored
_REMOTE_KEYS = ("hf_hub_url", "ms_hub_url", "om_hub_url", "script_url", "cloud_file_name")
_MAX_REASONS = 20
_JOIN = "\n\n"  # between turns when chat data is read as plain text


class DataError(ValueError):
  """A data file or registry is malformed: the message names the file, the row and the field at fault."""


@dataclasses.dataclass
class LoadResult:
  records: list[dict]
  skipped: int  # rows skipped because on_bad="skip"
  source: str  # file path(s) read
  skip_reasons: list[str] = dataclasses.field(default_factory=list)  # the first _MAX_REASONS skip messages


class _RowError(Exception):
  """Raised by the row parsers; turned into a DataError (or a skip) with the file and row added."""


class _Sink:
  """Routes a bad row to an exception (on_bad="fail") or to the skip count (on_bad="skip")."""

  def __init__(self, on_bad: str):
    if on_bad not in ("fail", "skip"):
      raise ValueError(f"on_bad must be 'fail' or 'skip', got {on_bad!r}")
    self.fail = on_bad == "fail"
    self.skipped = 0
    self.reasons: list[str] = []

  def bad(self, where: str, msg: str) -> None:
    if self.fail:
      raise DataError(f"{where}: {msg}")
    self.skipped += 1
    if len(self.reasons) < _MAX_REASONS:
      self.reasons.append(f"{where}: {msg}")


def _short(value: Any, n: int = 60) -> str:
  text = repr(value)
  return text if len(text) <= n else text[:n] + "..."


# ---------------------------------------------------------------------------------------------- file reading

def _file_bytes(path: str) -> bytes:
  with open(path, "rb") as f:
    data = f.read()
  if path.endswith(".gz"):
    try:
      data = gzip.decompress(data)
    except (OSError, EOFError) as e:
      raise DataError(f"{path}: not a valid gzip file ({e})") from None
  return data[len(codecs.BOM_UTF8):] if data.startswith(codecs.BOM_UTF8) else data


def _lines(path: str, data: bytes, sink: _Sink, parse: Callable[[str], Any]) -> list[tuple[str, Any]]:
  rows = []
  for n, raw in enumerate(data.splitlines(), 1):  # bytes.splitlines: only \n, \r\n, \r end a line
    if not raw.strip():
      continue
    try:
      rows.append((f"{path}: line {n}", parse(raw.decode("utf-8"))))
    except (ValueError, _RowError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
      sink.bad(f"{path}: line {n}", f"{e}")
  return rows


def _json_line(line: str) -> dict:
  try:
    obj = json.loads(line)
  except json.JSONDecodeError as e:
    raise _RowError(f"invalid JSON ({e.msg} at column {e.colno}): {_short(line)}") from None
  if not isinstance(obj, dict):
    raise _RowError(f"expected a JSON object, got {type(obj).__name__}: {_short(obj)}")
  return obj


def _read_json(path: str, data: bytes, sink: _Sink) -> list[tuple[str, Any]]:
  try:
    doc = json.loads(data.decode("utf-8"))
  except UnicodeDecodeError as e:
    raise DataError(f"{path}: not UTF-8 text ({e})") from None
  except json.JSONDecodeError as e:
    if e.msg == "Extra data":  # several top-level values: JSON Lines saved as .json (LLaMA-Factory reads these)
      return _lines(path, data, sink, _json_line)
    raise DataError(f"{path}: line {e.lineno} column {e.colno}: invalid JSON: {e.msg}") from None
  if isinstance(doc, dict) and isinstance(doc.get("data"), list):
    doc = doc["data"]
  if not isinstance(doc, list):
    raise DataError(f"{path}: expected a JSON list of objects (or an object with a list under 'data'), "
                    f"got {type(doc).__name__}")
  rows = []
  for i, obj in enumerate(doc):
    where = f"{path}: index {i} (0-based)"
    if isinstance(obj, dict):
      rows.append((where, obj))
    else:
      sink.bad(where, f"expected a JSON object, got {type(obj).__name__}: {_short(obj)}")
  return rows


def _read_csv(path: str, data: bytes, sink: _Sink) -> list[tuple[str, Any]]:
  try:
    text = data.decode("utf-8")
  except UnicodeDecodeError as e:
    raise DataError(f"{path}: not UTF-8 text ({e})") from None
  reader = csv.reader(io.StringIO(text, newline=""))
  rows, header, line = [], None, 1
  while True:
    try:
      fields = next(reader)
    except StopIteration:
      break
    except csv.Error as e:
      raise DataError(f"{path}: line {line}: malformed CSV ({e})") from None
    where, line = f"{path}: line {line}", reader.line_num + 1  # `line`: where the next record starts
    if not fields:  # blank line
      continue
    if header is None:
      header = fields
      if len(set(header)) != len(header):
        raise DataError(f"{where}: duplicate column names in the header {header}")
    elif len(fields) != len(header):
      sink.bad(where, f"expected {len(header)} fields ({', '.join(header)}), got {len(fields)}: {_short(fields)}")
    else:
      rows.append((where, dict(zip(header, fields))))
  return rows


def _read_parquet(path: str, data: bytes, sink: _Sink) -> list[tuple[str, Any]]:
  import pyarrow as pa  # pylint: disable=g-import-not-at-top
  import pyarrow.parquet as pq  # pylint: disable=g-import-not-at-top
  try:
    table = pq.read_table(pa.BufferReader(data))
  except (pa.ArrowException, OSError) as e:
    raise DataError(f"{path}: cannot read Parquet ({e})") from None
  return [(f"{path}: row {i} (0-based)", row) for i, row in enumerate(table.to_pylist())]


_READERS = {".json": _read_json, ".jsonl": functools.partial(_lines, parse=_json_line), ".csv": _read_csv,
            ".parquet": _read_parquet, ".txt": functools.partial(_lines, parse=lambda line: {"text": line})}


def _extension(path: str) -> str:
  base = path[:-3] if path.endswith(".gz") else path
  return os.path.splitext(base)[1].lower()


def _files(path: str) -> list[str]:
  if os.path.isdir(path):
    files = sorted(os.path.join(path, f) for f in os.listdir(path) if _extension(f) in EXTENSIONS)
    if not files:
      raise DataError(f"{path}: folder holds no data files ({', '.join(EXTENSIONS)}, optionally .gz)")
    return files
  if not os.path.exists(path):
    raise FileNotFoundError(f"dataset file not found: {path}")
  if _extension(path) not in EXTENSIONS:
    raise DataError(f"{path}: unsupported file type; expected one of {', '.join(EXTENSIONS)} (optionally .gz)")
  return [path]


def _read(path: str, sink: _Sink) -> tuple[list[tuple[str, Any]], str]:
  """(location, row) pairs from a file or a folder of files, and the source description."""
  files = _files(path)
  rows = []
  for file in files:
    rows += _READERS[_extension(file)](file, _file_bytes(file), sink)
  if not rows:
    why = f"all {sink.skipped} rows were bad, e.g. {sink.reasons[0]}" if sink.skipped else "no rows"
    raise DataError(f"{path}: empty ({why})")
  return rows, ", ".join(files)


def read_rows(path: str, on_bad: str = "fail") -> LoadResult:
  """Rows of a .json / .jsonl / .csv / .parquet / .txt file (optionally .gz) or of a folder of them."""
  sink = _Sink(on_bad)
  rows, source = _read(os.fspath(path), sink)
  return LoadResult([row for _, row in rows], sink.skipped, source, sink.reasons)


# ------------------------------------------------------------------------------------------------- registry

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
    raise DataError(f"{where}: 'file_name' must be a non-empty string, got {_short(entry['file_name'])}")
  if entry.get("formatting", "alpaca") not in FORMATTINGS:
    raise DataError(f"{where}: formatting {entry['formatting']!r} is not one of {', '.join(FORMATTINGS)}")
  if not isinstance(entry.get("ranking", False), bool):
    raise DataError(f"{where}: 'ranking' must be true or false, got {_short(entry['ranking'])}")
  n = entry.get("num_samples")
  if n is not None and (not isinstance(n, int) or isinstance(n, bool) or n < 1):
    raise DataError(f"{where}: 'num_samples' must be a positive integer, got {_short(n)}")
  _check_maps(where, entry.get("columns"), entry.get("tags"))


def _check_maps(where: str, columns: dict | None, tags: dict | None) -> None:
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


# ---------------------------------------------------------------------------------------------- row parsing

@dataclasses.dataclass(frozen=True)
class _Spec:
  formatting: str
  ranking: bool
  columns: dict  # resolved column names (None = unset)
  tags: dict  # resolved tags (None = unset)
  columns_given: bool


def _spec(formatting: str, ranking: bool, columns: dict | None, tags: dict | None) -> _Spec:
  given = columns is not None
  cols = dict(columns or {})
  if formatting == "alpaca":  # a columns dict replaces the defaults, as in LLaMA-Factory
    defaults = {} if given else {"prompt": "instruction", "query": "input", "response": "output"}
    resolved = {k: cols.get(k, defaults.get(k)) for k in ("prompt", "query", "response", "history", "system",
                                                           "tools")}
  elif formatting == "sharegpt":
    resolved = {"messages": cols.get("messages", "conversations"), "system": cols.get("system"),
                "tools": cols.get("tools")}
  elif formatting in ("gsm8k", "classification", "text"):
    prompt, response = {"gsm8k": ("question", "answer"), "classification": ("text", "label"),
                        "text": ("text", None)}[formatting]
    resolved = {"prompt": cols.get("prompt", prompt), "response": cols.get("response", response)}
  else:
    resolved = {}
  resolved["chosen"] = cols.get("chosen", "chosen")
  resolved["rejected"] = cols.get("rejected", "rejected")
  tag = dict(TAG_DEFAULTS)
  if tags is not None:  # role/content/user/assistant tags cannot meaningfully be unset: keep their defaults
    tag.update({k: tags.get(k) for k in ("observation_tag", "function_tag", "system_tag")})
    tag.update({k: v for k, v in tags.items() if v is not None})
  return _Spec(formatting, ranking, resolved, tag, given)


def _get(row: dict, col: str, *, required: bool = True, nonempty: str = "") -> str | None:
  """row[col] as a string; None when absent or null and not required. `nonempty` names an empty value."""
  value = row.get(col)
  if value is None:
    if required:
      raise _RowError(f"missing required column {col!r} (row has {', '.join(map(repr, row)) or 'no columns'})")
    return None
  if not isinstance(value, str):
    raise _RowError(f"column {col!r} must be a string, got {type(value).__name__}: {_short(value)}")
  if nonempty and not value.strip():
    raise _RowError(f"{nonempty} (column {col!r} is {_short(value)})")
  return value


def _tools(row: dict, col: str | None) -> str:
  value = row.get(col) if col else None
  if value is None:
    return ""
  if isinstance(value, (list, dict)):
    return json.dumps(value, ensure_ascii=False)
  if not isinstance(value, str):
    raise _RowError(f"column {col!r} must be a string (or JSON list), got {type(value).__name__}")
  return value


def _check(conv: dict) -> dict:
  """Rules shared by every chat-like format: users say something, answers are non-empty and pairs differ."""
  for i, m in enumerate(conv["prompt"]):
    if m["role"] == "user" and not m["content"].strip():
      raise _RowError(f"empty user prompt (turn {i + 1}: {_short(m['content'])})")
  names = ("chosen", "rejected") if len(conv["response"]) == 2 else ("answer",)
  for name, m in zip(names, conv["response"]):
    if not m["content"].strip():
      raise _RowError(f"empty {name} ({_short(m['content'])})" if name == "answer" else
                      f"empty {name} answer ({_short(m['content'])})")
  if len(conv["response"]) == 2 and conv["response"][0]["content"] == conv["response"][1]["content"]:
    raise _RowError(f"chosen and rejected are identical: {_short(conv['response'][0]['content'])}")
  return conv


def _alpaca(row: dict, spec: _Spec, need_answer: bool) -> dict:
  c = spec.columns
  prompt = []
  history = row.get(c["history"]) if c["history"] else None
  if history is not None:
    if not isinstance(history, list):
      raise _RowError(f"column {c['history']!r} must be a list of [prompt, response] pairs, got {_short(history)}")
    for i, pair in enumerate(history):
      if not (isinstance(pair, (list, tuple)) and len(pair) == 2 and all(isinstance(p, str) for p in pair)):
        raise _RowError(f"{c['history']}[{i}] must be a [prompt, response] pair of strings, got {_short(pair)}")
      prompt += [{"role": "user", "content": pair[0]}, {"role": "assistant", "content": pair[1]}]
  parts = [_get(row, c["prompt"]) if c["prompt"] else None,
           _get(row, c["query"], required=False) if c["query"] else None]
  prompt.append({"role": "user", "content": "\n".join(p for p in parts if p)})  # "prompt\nquery"
  if spec.ranking:
    response = [{"role": "assistant", "content": _get(row, c[side])} for side in ("chosen", "rejected")]
  elif c["response"] and (need_answer or row.get(c["response"]) is not None):
    response = [{"role": "assistant", "content": _get(row, c["response"])}]
  else:  # unsupervised, e.g. {"prompt": "text"} for pretraining
    response = []
  system = (_get(row, c["system"], required=False) if c["system"] else None) or ""
  return _check({"system": system, "prompt": prompt, "response": response, "tools": _tools(row, c["tools"])})


def _sharegpt(row: dict, spec: _Spec, need_answer: bool) -> dict:
  c, t = spec.columns, spec.tags
  col = c["messages"]
  messages = row.get(col)
  if messages is None:
    raise _RowError(f"missing required column {col!r} (row has {', '.join(map(repr, row))})")
  if not isinstance(messages, list):
    raise _RowError(f"column {col!r} must be a list of messages, got {type(messages).__name__}")
  role_of = {t["user_tag"]: "user", t["assistant_tag"]: "assistant", t["observation_tag"]: "tool",
             t["function_tag"]: "function_call", t["system_tag"]: "system"}
  role_of.pop(None, None)
  odd = tuple(x for x in (t["user_tag"], t["observation_tag"]) if x is not None)  # 1st, 3rd, ... turn
  even = tuple(x for x in (t["assistant_tag"], t["function_tag"]) if x is not None)

  def turn(m: Any, label: str) -> tuple[Any, str]:
    if not isinstance(m, dict):
      raise _RowError(f"{label} must be a message object, got {type(m).__name__}: {_short(m)}")
    for key in (t["role_tag"], t["content_tag"]):
      if key not in m:
        raise _RowError(f"{label} has no {key!r} key (keys: {', '.join(map(repr, m))})")
    if not isinstance(m[t["content_tag"]], str):
      raise _RowError(f"{label}[{t['content_tag']!r}] must be a string, got {_short(m[t['content_tag']])}")
    return m[t["role_tag"]], m[t["content_tag"]]

  turns = [turn(m, f"{col}[{i}]") for i, m in enumerate(messages)]
  start = 1 if t["system_tag"] is not None and turns and turns[0][0] == t["system_tag"] else 0
  system = turns[0][1] if start else ((_get(row, c["system"], required=False) if c["system"] else None) or "")
  turns = turns[start:]
  for j, (tag, _) in enumerate(turns):
    allowed = (odd, even)[j % 2]
    if tag not in allowed:
      raise _RowError(f"{col}[{j + start}]: role {_short(tag)} at turn {j + 1} (after an optional system turn) "
                      f"must be one of {list(allowed)} (turns alternate {list(odd)} / {list(even)})")
  if not turns:
    raise _RowError(f"column {col!r} has no turns")
  if len(turns) % 2 != int(spec.ranking):
    raise _RowError(f"column {col!r} has {len(turns)} turns; " +
                    ("a ranking prompt must end with a user turn (odd count)" if spec.ranking else
                     "a conversation must end with an assistant turn (even count)"))
  prompt = [{"role": role_of[tag], "content": content} for tag, content in turns]
  if spec.ranking:
    response = []
    for side in ("chosen", "rejected"):
      if row.get(c[side]) is None:
        raise _RowError(f"missing required column {c[side]!r} (row has {', '.join(map(repr, row))})")
      tag, content = turn(row[c[side]], c[side])
      if tag not in even:
        raise _RowError(f"{c[side]}: role {_short(tag)} must be one of {list(even)}")
      response.append({"role": role_of[tag], "content": content})
  else:
    prompt, response = prompt[:-1], prompt[-1:]
  return _check({"system": system, "prompt": prompt, "response": response, "tools": _tools(row, c["tools"])})


_HH_TURN = re.compile(r"(?:\A\s*|\n\n)(Human|Assistant):")


def split_hh_transcript(text: str) -> list[dict]:
  """'\\n\\nHuman: a\\n\\nAssistant: b' -> [{"role": "user", "content": "a"}, {"role": "assistant", ...}].

  Turns start at "\\n\\nHuman:" / "\\n\\nAssistant:"; contents are stripped; they must alternate, starting with
  Human and ending with Assistant (ValueError otherwise).
  """
  pieces = _HH_TURN.split(text)
  if pieces[0].strip() or len(pieces) < 3:
    raise ValueError(f"transcript must start with 'Human:', got {_short(text)}")
  turns = []
  for i, (who, content) in enumerate(zip(pieces[1::2], pieces[2::2])):
    expected = ("Human", "Assistant")[i % 2]
    if who != expected:
      raise ValueError(f"turn {i + 1} is {who!r}, expected {expected!r} (turns must alternate)")
    turns.append({"role": "user" if who == "Human" else "assistant", "content": content.strip()})
  if turns[-1]["role"] != "assistant":
    raise ValueError(f"transcript must end with an 'Assistant:' turn ({len(turns)} turns)")
  return turns


def _hh_rlhf(row: dict, spec: _Spec, need_answer: bool) -> dict:
  sides = []
  for side in ("chosen", "rejected"):
    col = spec.columns[side]
    try:
      sides.append(split_hh_transcript(_get(row, col)))
    except ValueError as e:
      raise _RowError(f"column {col!r}: {e}") from None
  (chosen, rejected) = sides
  if chosen[:-1] != rejected[:-1]:
    k = next((i for i, (a, b) in enumerate(zip(chosen[:-1], rejected[:-1])) if a != b),
             min(len(chosen), len(rejected)) - 1)
    raise _RowError(f"chosen and rejected differ before their final Assistant turn (first at turn {k + 1}: "
                    f"{_short(chosen[k]['content'], 40)} vs {_short(rejected[k]['content'], 40)})")
  return _check({"system": "", "prompt": chosen[:-1], "response": [chosen[-1], rejected[-1]], "tools": ""})


def _gsm8k(row: dict, spec: _Spec) -> dict:
  question = _get(row, spec.columns["prompt"], nonempty="empty user prompt")
  solution = _get(row, spec.columns["response"], nonempty="empty answer")
  if "####" not in solution:
    raise _RowError(f"column {spec.columns['response']!r} has no '####' final-answer marker: {_short(solution)}")
  answer = solution.rsplit("####", 1)[1].strip().replace(",", "")
  if not answer:
    raise _RowError(f"empty answer after '####' in column {spec.columns['response']!r}")
  return {"question": question, "solution": solution, "answer": answer}


def _classification(row: dict, spec: _Spec, with_label: bool) -> dict:
  text = _get(row, spec.columns["prompt"], nonempty="empty text")
  if not with_label:
    return {"text": text}
  col = spec.columns["response"]
  if isinstance(row.get(col), int) and not isinstance(row[col], bool):
    row = {**row, col: str(row[col])}  # integer labels from JSON / Parquet
  return {"text": text, "label": _get(row, col, nonempty="empty label").strip()}


# -------------------------------------------------------------------------------------- kinds from conversations

def _messages(conv: dict) -> list[dict]:
  return ([{"role": "system", "content": conv["system"]}] if conv["system"] else []) + conv["prompt"]


def _as_chat(conv: dict) -> dict:
  if not conv["response"]:
    raise _RowError("no answer (the dataset has no response column); chat needs one")
  return {"messages": _messages(conv) + conv["response"][:1], "tools": conv["tools"]}  # ranking: the chosen one


def _as_preference(conv: dict) -> dict:
  return {"messages": _messages(conv), "chosen": conv["response"][0]["content"],
          "rejected": conv["response"][1]["content"]}


def _as_text(conv: dict) -> dict:
  text = _JOIN.join(m["content"] for m in _messages(conv) + conv["response"][:1] if m["content"].strip())
  if not text.strip():
    raise _RowError("empty text")
  return {"text": text}


_AS = {"chat": _as_chat, "preference": _as_preference, "text": _as_text}
_PARSERS = {"alpaca": _alpaca, "sharegpt": _sharegpt, "hh_rlhf": _hh_rlhf}


def _row_fn(spec: _Spec, kind: str) -> Callable[[dict], dict]:
  f = spec.formatting
  if f == "text":
    return lambda row: {"text": _get(row, spec.columns["prompt"], nonempty="empty text")}
  if f == "classification":
    return lambda row: _classification(row, spec, with_label=kind == "classification")
  if f == "gsm8k":
    def gsm8k(row: dict) -> dict:
      rec = _gsm8k(row, spec)
      if kind == "gsm8k":
        return rec
      return _AS[kind]({"system": "", "prompt": [{"role": "user", "content": rec["question"]}],
                        "response": [{"role": "assistant", "content": rec["solution"]}], "tools": ""})
    return gsm8k
  parse = _PARSERS[f]

  def chat_like(row: dict) -> dict:
    if kind == "text" and f == "alpaca" and not spec.columns_given and "text" in row and "instruction" not in row:
      return {"text": _get(row, "text", nonempty="empty text")}  # a plain {"text"} corpus without a remap
    return _AS[kind](parse(row, spec, kind != "text"))
  return chat_like


def _load(path: str, formatting: str, kind: str, columns: dict | None, tags: dict | None, ranking: bool,
          on_bad: str, cap: int | None, what: str) -> LoadResult:
  sink = _Sink(on_bad)
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
  fn = _row_fn(_spec(formatting, ranking, columns, tags), kind)
  rows, source = _read(os.fspath(path), sink)
  records = []
  for where, row in rows:
    if cap is not None and len(records) >= cap:
      break
    try:
      records.append(fn(row))
    except _RowError as e:
      sink.bad(where, str(e))
  if not records:
    raise DataError(f"{source}: no usable records (all {sink.skipped} skipped; first: {sink.reasons[:1]})")
  return LoadResult(records, sink.skipped, source, sink.reasons)


def load(name: str, dataset_info: str, kind: str, on_bad: str = "fail", limit: int | None = None) -> LoadResult:
  """Records of `kind` from the dataset `name` in the registry `dataset_info` (a dataset_info.json path).

  `num_samples` in the entry and `limit` both cap the result to its first records.
  """
  _Sink(on_bad)  # validates on_bad before any reading
  entry = resolve(name, dataset_info)
  caps = [n for n in (entry.get("num_samples"), limit) if n is not None]
  return _load(entry["file_name"], entry.get("formatting", "alpaca"), kind, entry.get("columns"), entry.get("tags"),
               entry.get("ranking", False), on_bad, min(caps) if caps else None, f"dataset {name!r}")


def load_file(path: str, formatting: str, kind: str, columns: dict | None = None, tags: dict | None = None,
              on_bad: str = "fail", *, ranking: bool | None = None, limit: int | None = None) -> LoadResult:
  """`load` without a registry. `ranking` defaults to kind == "preference" (alpaca / sharegpt pairs)."""
  what = f"load_file({os.fspath(path)!r})"
  try:
    _check_maps(what, columns, tags)
  except DataError as e:  # a bad argument, not bad data
    raise ValueError(str(e)) from None
  return _load(path, formatting, kind, columns, tags, kind == "preference" if ranking is None else ranking,
               on_bad, limit, what)
