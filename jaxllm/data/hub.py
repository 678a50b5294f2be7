"""Rows read through Hugging Face `datasets`: hub ids (`hf:<org>/<name>`), data-file URLs, `save_to_disk`
folders, folders of Parquet / Arrow files, globs of data files, and dataset_info.json entries with `hf_hub_url` /
`script_url`; whole (`Dataset`) or streamed (`IterableDataset`, nothing cached or held in memory).

A source that needs the network is checked first: with HF_HUB_OFFLINE / HF_DATASETS_OFFLINE set it must already
be in the datasets cache, and otherwise the hub (or the URL's host) must answer within NETWORK_TIMEOUT_S, so an
offline machine gets one clear error at once instead of a long retrying hang.
"""
from __future__ import annotations

import dataclasses
import glob
import os
import socket
import urllib.parse
from typing import Any, Iterator

from jaxllm.data.files import DataError, DataNotFoundError

HUB_PREFIX = "hf:"
NETWORK_TIMEOUT_S = 3.0
# datasets' packaged builders for local files, by extension
_BUILDERS = {".parquet": "parquet", ".arrow": "arrow", ".json": "json", ".jsonl": "json", ".csv": "csv",
             ".txt": "text"}
_SAVED_MARKERS = ("state.json", "dataset_dict.json")  # what Dataset(Dict).save_to_disk writes


@dataclasses.dataclass(frozen=True)
class Source:
  """Where `datasets` reads from: load_dataset(path, name, data_dir, data_files, split, revision) or
  load_from_disk(path) when `saved`."""
  what: str  # how errors name it
  path: str
  name: str | None = None  # subset (config name)
  data_dir: str | None = None
  data_files: list[str] | None = None
  split: str = "train"
  revision: str | None = None
  saved: bool = False  # a save_to_disk folder
  remote: str = ""  # the host it needs ('' = local)


def is_saved_folder(path: str) -> bool:
  return os.path.isdir(path) and any(os.path.exists(os.path.join(path, m)) for m in _SAVED_MARKERS)


def _builder_files(paths: list[str], what: str) -> tuple[str, list[str]]:
  kinds = {_BUILDERS.get(os.path.splitext(p[:-3] if p.endswith(".gz") else p)[1].lower()) for p in paths}
  kinds.discard(None)
  if len(kinds) != 1:
    raise DataError(f"{what}: expected data files of one type ({', '.join(sorted(set(_BUILDERS)))}), "
                    f"got {', '.join(os.path.basename(p) for p in paths[:5])}")
  return kinds.pop(), paths


def wants_datasets(name: str) -> bool:
  """Whether a data.name is read through `datasets` rather than by files.py."""
  if name.startswith((HUB_PREFIX, "http://", "https://")) or glob.has_magic(name):
    return True
  if is_saved_folder(name) or name.endswith(".arrow"):
    return True
  if os.path.isdir(name):  # a folder of Parquet / Arrow shards (JSON / CSV / text folders keep line numbers)
    files = [f for f in os.listdir(name) if not f.startswith(".")]
    return bool(files) and all(f.endswith((".parquet", ".arrow")) for f in files)
  return False


def source_for_name(name: str, subset: str = "", split: str = "train") -> Source:
  """The Source of a data.name that `wants_datasets`."""
  if name.startswith(HUB_PREFIX):
    repo = name[len(HUB_PREFIX):]
    if repo.count("/") > 1 or not repo.strip("/"):
      raise DataError(f"data.name={name!r}: expected hf:<org>/<name> (a Hugging Face dataset id)")
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    return Source(name, repo, subset or None, split=split, remote=urllib.parse.urlparse(endpoint).hostname or "")
  if name.startswith(("http://", "https://")):  # a file: datasets names its only split "train"
    builder, _ = _builder_files([urllib.parse.urlparse(name).path], name)
    return Source(name, builder, data_files=[name], remote=urllib.parse.urlparse(name).hostname or "")
  if is_saved_folder(name):
    return Source(name, name, split=split, saved=True)
  if os.path.isdir(name):
    files = sorted(os.path.join(name, f) for f in os.listdir(name) if not f.startswith("."))
  else:
    files = sorted(glob.glob(name, recursive=True)) if glob.has_magic(name) else [name]
  if not files or not all(os.path.exists(f) for f in files):
    raise DataNotFoundError(f"data.name={name!r}: no data files found")
  builder, files = _builder_files(files, name)
  return Source(name, builder, data_files=files)


def source_for_entry(entry: dict, registry_dir: str, what: str) -> Source:
  """The Source of a dataset_info.json entry with hf_hub_url or script_url (LLaMA-Factory's keys: subset,
  folder, split, revision). A hub url naming a folder next to the registry (or an absolute one) is read
  locally, as is every script_url (a folder relative to the registry, as in LLaMA-Factory)."""
  split = entry.get("split", "train")
  if "script_url" in entry:
    path = os.path.join(registry_dir, entry["script_url"])
  else:
    path = entry["hf_hub_url"]
    if os.path.isdir(os.path.join(registry_dir, path)):
      path = os.path.join(registry_dir, path)
  common = dict(name=entry.get("subset"), data_dir=entry.get("folder"), split=split, revision=entry.get("revision"))
  if os.path.isdir(path):
    if is_saved_folder(path):
      return Source(what, path, split=split, saved=True)
    return Source(what, path, **common)
  endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
  return Source(what, path, remote=urllib.parse.urlparse(endpoint).hostname or "", **common)


def _offline() -> bool:
  return any(os.environ.get(v, "").upper() in ("1", "ON", "YES", "TRUE")
             for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))


def _check_reachable(src: Source) -> None:
  if not src.remote or _offline():
    return
  try:
    socket.create_connection((src.remote, 443), timeout=NETWORK_TIMEOUT_S).close()
  except OSError as e:
    raise DataError(f"{src.what}: needs the network (cannot reach {src.remote} within {NETWORK_TIMEOUT_S:g} s: "
                    f"{e}); offline, a copy in the datasets cache is read with HF_DATASETS_OFFLINE=1") from None


def open_dataset(src: Source, streaming: bool = False) -> Any:
  """The datasets.Dataset (or IterableDataset when streaming) of `src`, one split."""
  _check_reachable(src)
  import datasets  # pylint: disable=g-import-not-at-top  (slow to import; only runs that use it pay)

  datasets.logging.set_verbosity_error()
  datasets.disable_progress_bars()
  if _offline():  # datasets and huggingface_hub read these at import; a test (or caller) may set them later
    import huggingface_hub.constants  # pylint: disable=g-import-not-at-top
    datasets.config.HF_HUB_OFFLINE = huggingface_hub.constants.HF_HUB_OFFLINE = True
  try:
    if src.saved:
      ds = datasets.load_from_disk(src.path)
      if isinstance(ds, datasets.DatasetDict):
        if src.split not in ds:
          raise DataError(f"{src.what}: no split {src.split!r}; it has {', '.join(ds)}")
        ds = ds[src.split]
      return ds.to_iterable_dataset() if streaming else ds
    return datasets.load_dataset(src.path, src.name, data_dir=src.data_dir, data_files=src.data_files,
                                 split=src.split, revision=src.revision, streaming=streaming)
  except DataError:
    raise
  except Exception as e:  # datasets raises many types (FileNotFoundError, ValueError, ConnectionError, ...)
    message = str(e).splitlines()[0] if str(e) else type(e).__name__
    if src.remote and _offline():
      raise DataError(f"{src.what}: not in the local datasets cache and HF_HUB_OFFLINE / HF_DATASETS_OFFLINE is "
                      f"set; it needs the network once ({type(e).__name__}: {message})") from None
    raise DataError(f"{src.what}: datasets could not load it ({type(e).__name__}: {message})") from None


def located_rows(src: Source, streaming: bool = False) -> tuple[Iterator[tuple[str, dict]], str]:
  """(location, row) pairs of `src` (lazily when streaming) and the source description."""
  ds = open_dataset(src, streaming)
  where = f"{src.what} [{src.split}]"
  blank_lines = src.path == "text"  # datasets' text builder keeps blank lines; files.py skips them, and so here
  return ((f"{where}: row {i} (0-based)", row) for i, row in enumerate(ds)
          if not (blank_lines and not row["text"].strip())), where
