"""Data files on disk -> row dicts: .json / .jsonl / .csv / .parquet / .txt, optionally .gz, or a folder of them.

Every row comes with its location ("file: line 7", "file: index 3 (0-based)") so that a bad one is reported by
file and row; `Sink` decides whether a bad row raises `DataError` (on_bad="fail") or is counted and skipped
(on_bad="skip", the first messages kept). `sources.py` builds dataset loading on top of this.
"""
from __future__ import annotations

import codecs
import csv
import dataclasses
import functools
import gzip
import io
import itertools
import json
import os
from typing import Any, Callable

from jaxllm.errors import UserError

EXTENSIONS = (".json", ".jsonl", ".csv", ".parquet", ".txt")  # each also as .gz
_MAX_REASONS = 20


class DataError(UserError, ValueError):
  """A data file or registry is malformed: the message names the file, the row and the field at fault."""


class DataNotFoundError(DataError, FileNotFoundError):
  """A data file, folder or dataset named by the user does not exist."""


@dataclasses.dataclass
class LoadResult:
  records: list[dict]
  skipped: int  # rows skipped because on_bad="skip"
  source: str  # file path(s) read
  skip_reasons: list[str] = dataclasses.field(default_factory=list)  # the first _MAX_REASONS skip messages
  formatting: str = ""  # the format the records were read in (given or detected)
  locations: list[str] = dataclasses.field(default_factory=list)  # each record's file and row, for later checks


class RowError(Exception):
  """Raised by the row parsers; turned into a DataError (or a skip) with the file and row added."""


class Sink:
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


def short(value: Any, n: int = 60) -> str:
  text = repr(value)
  return text if len(text) <= n else text[:n] + "..."


def _file_bytes(path: str) -> bytes:
  with open(path, "rb") as f:
    data = f.read()
  if path.endswith(".gz"):
    try:
      data = gzip.decompress(data)
    except (OSError, EOFError) as e:
      raise DataError(f"{path}: not a valid gzip file ({e})") from None
  return data[len(codecs.BOM_UTF8):] if data.startswith(codecs.BOM_UTF8) else data


def _lines(path: str, data: bytes, sink: Sink, parse: Callable[[str], Any]) -> list[tuple[str, Any]]:
  rows = []
  for n, raw in enumerate(data.splitlines(), 1):  # bytes.splitlines: only \n, \r\n, \r end a line
    if not raw.strip():
      continue
    try:
      rows.append((f"{path}: line {n}", parse(raw.decode("utf-8"))))
    except (ValueError, RowError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
      sink.bad(f"{path}: line {n}", f"{e}")
  return rows


def _json_line(line: str) -> dict:
  try:
    obj = json.loads(line)
  except json.JSONDecodeError as e:
    raise RowError(f"invalid JSON ({e.msg} at column {e.colno}): {short(line)}") from None
  if not isinstance(obj, dict):
    raise RowError(f"expected a JSON object, got {type(obj).__name__}: {short(obj)}")
  return obj


def _read_json(path: str, data: bytes, sink: Sink) -> list[tuple[str, Any]]:
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
      sink.bad(where, f"expected a JSON object, got {type(obj).__name__}: {short(obj)}")
  return rows


def _read_csv(path: str, data: bytes, sink: Sink) -> list[tuple[str, Any]]:
  """Rows of a CSV file, never merged by a stray quote. A quoted field may span lines, but a quote that is never
  closed (it would swallow the rest of the file), text after a closing quote, or a record that spans lines and
  has the wrong number of fields is reported as one bad row at the line it starts, and reading restarts on the
  line after it. (A stray quote closed by another stray quote further down, giving the right number of fields,
  reads like a field with line breaks and cannot be told from one.)"""
  try:
    text = data.decode("utf-8")
  except UnicodeDecodeError as e:
    raise DataError(f"{path}: not UTF-8 text ({e})") from None
  lines = io.StringIO(text, newline="").readlines()  # physical lines, endings kept (quoted fields hold them)
  rows, header, start = [], None, 0  # start: 0-based index of the line the current reader began at
  while start < len(lines):
    reader = csv.reader(itertools.islice(lines, start, None), strict=True)
    restart, consumed = None, 0
    while True:
      try:
        fields = next(reader)
      except StopIteration:
        break
      except csv.Error as e:
        restart = start + consumed + 1  # 1-based line of the bad record = 0-based index of the line after it
        sink.bad(f"{path}: line {restart}", f"unbalanced quote ({e})")
        break
      first, spans = start + consumed + 1, reader.line_num - consumed  # 1-based first line; lines it took
      consumed = reader.line_num
      where = f"{path}: line {first}"
      if not fields:  # blank line
        continue
      if header is None:
        header = fields
        if len(set(header)) != len(header):
          raise DataError(f"{where}: duplicate column names in the header {header}")
      elif len(fields) != len(header) and spans > 1:
        sink.bad(where, f"unbalanced quote: a quoted field runs over the next {spans - 1} lines and gives "
                        f"{len(fields)} fields instead of {len(header)}")
        restart = first  # the 0-based index of the line after `first`
        break
      elif len(fields) != len(header):
        sink.bad(where, f"expected {len(header)} fields ({', '.join(header)}), got {len(fields)}: {short(fields)}")
      else:
        rows.append((where, dict(zip(header, fields))))
    if restart is None:
      break
    start = restart
  return rows


def _read_parquet(path: str, data: bytes, sink: Sink) -> list[tuple[str, Any]]:
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


def located_rows(path: str, sink: Sink) -> tuple[list[tuple[str, Any]], str]:
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
  sink = Sink(on_bad)
  rows, source = located_rows(os.fspath(path), sink)
  return LoadResult([row for _, row in rows], sink.skipped, source, sink.reasons)
