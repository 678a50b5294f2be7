"""Labelled texts -> fixed-shape batches for the `classify` objective (jaxllm/losses/classify.py).

Records are {"text", "label"}: from `data.name` read as classification data (`sources.load_config`, kind
"classification": a text and a label column, CSV / JSON(L) / Parquet / hub datasets, remapped with a
dataset_info.json entry's `columns` or named by classify.text_column / label_column), split `data.eval_fraction` held out by seed exactly as SFT splits the
same file (so a head and generated-label SFT are scored on the same held-out rows), or `data.eval_split`; with
no data.name, the built-in task world's worked answers labelled `correct` / `wrong` (each problem once with its
right solution and once with a slipped one, `synthetic.preference_pairs`).

Class names come from `classify.labels` (comma-separated, in class-index order) or, when empty, from the
training split's distinct labels (numeric order when all are integers, else sorted). A row whose label is not
a class (or, with names from the data, a held-out label the training split never has) is a DataError naming
its file, row and value; with data.on_bad_row=skip it is counted in the run's data_skipped_rows instead.

A text is its own tokens (no chat template, no added token: what a transformers tokenizer gives a
`...ForSequenceClassification`), right-padded to data.seq_len; longer texts keep their first tokens
(data.on_long=truncate, counted) or are dropped (on_long=drop, counted). A batch of B rows holds tokens,
positions, segment_ids [B, L] (segment 0 = padding), last_index [B], label [B] and weight [B]: in training the
class weight of the row's label (`classify.class_weights`: '' = 1 each, `balanced` = n / (C * count of the
class) over the training split, or one number per class), held out 1 for a real row and 0 for the filler rows
of the last batch.
"""
from __future__ import annotations

import dataclasses

import grain
import ml_collections
import numpy as np

from jaxllm.data import pipelines, sources, synthetic, text
from jaxllm.data.files import DataError, Sink, short
from jaxllm.errors import ConfigError
from jaxllm.losses.classify import parse_labels
from jaxllm.tokenizer import Tokenizer

BUILT_IN_LABELS = ("correct", "wrong")


@dataclasses.dataclass
class Rows:
  """Labelled texts of one split, each with its file and row (for error messages)."""
  texts: list[str]
  labels: list[str]
  where: list[str]


@dataclasses.dataclass
class LabelledData:
  train: Rows
  eval: Rows
  source: str
  skipped: int  # rows skipped while reading (data.on_bad_row=skip)


def built_in(seed: int, split: str, n: int) -> Rows:
  """n rows of the built-in world's split: a problem and a worked answer, labelled correct or wrong."""
  rows = Rows([], [], [])
  for i, pair in enumerate(synthetic.preference_pairs(seed, split, (n + 1) // 2)):
    question = pair["messages"][-1]["content"]
    for label, answer in zip(BUILT_IN_LABELS, (pair["chosen"], pair["rejected"])):
      rows.texts.append(f"{question}\n{answer}")
      rows.labels.append(label)
      rows.where.append(f"built-in world ({split}): problem {i}, {label} answer")
  return Rows(rows.texts[:n], rows.labels[:n], rows.where[:n])


def _rows(result: sources.LoadResult) -> Rows:
  return Rows([r["text"] for r in result.records], [r["label"] for r in result.records], list(result.locations))


def _read(data: ml_collections.ConfigDict, k: ml_collections.ConfigDict, **kw) -> sources.LoadResult:
  """Classification records of data.name: its columns named by classify.text_column / label_column, else told
  from the rows (a label column and one text column) or by the dataset_info.json entry."""
  if not (k.text_column or k.label_column) or data.dataset_info:
    return sources.load_config(data, "classification", **kw)
  columns = {"prompt": k.text_column or "text", "response": k.label_column or "label"}
  return sources.load_file(data.name, "classification", "classification", columns, on_bad=data.on_bad_row,
                           split=kw.get("split") or data.split, limit=kw.get("limit"), subset=data.subset)


def load(config: ml_collections.ConfigDict) -> LabelledData:
  """Training and held-out labelled texts for `config.data` (see the module docstring)."""
  data = config.data
  if not data.name:
    return LabelledData(built_in(config.seed, "train", data.train_examples),
                        built_in(config.seed, "eval", data.eval_examples), "built-in world", 0)
  read = lambda **kw: _read(data, config.classify, **kw)
  result = read(limit=data.max_examples or None)
  if data.eval_split:
    held = read(split=data.eval_split)
    return LabelledData(_rows(result), _rows(held), result.source, result.skipped + held.skipped)
  rows = _rows(result)
  index = list(range(len(rows.texts)))
  train_i, eval_i = text.split_documents(index, data.eval_fraction, config.seed)  # as SFT splits the records
  pick = lambda ids: Rows([rows.texts[i] for i in ids], [rows.labels[i] for i in ids], [rows.where[i] for i in ids])
  return LabelledData(pick(train_i), pick(eval_i), result.source, result.skipped)


def _label_order(label: str) -> tuple:
  try:
    return (0, int(label), label)
  except ValueError:
    return (1, 0, label)


def class_names(config_labels: str, train: Rows) -> list[str]:
  """classify.labels, or the training split's distinct labels (integers in numeric order, then names sorted)."""
  return parse_labels(config_labels) or sorted(set(train.labels), key=_label_order)


def label_ids(rows: Rows, names: list[str], sink: Sink, origin: str) -> tuple[Rows, np.ndarray]:
  """(the rows whose label is a class, their class ids); any other row goes to `sink` (DataError or a skip)."""
  index = {name: i for i, name in enumerate(names)}
  kept, ids = Rows([], [], []), []
  for t, label, where in zip(rows.texts, rows.labels, rows.where):
    if label not in index:
      sink.bad(where, f"label {short(label)} is not one of the classes {names} ({origin})")
      continue
    kept.texts.append(t)
    kept.labels.append(label)
    kept.where.append(where)
    ids.append(index[label])
  return kept, np.asarray(ids, np.int32)


def class_weights(spec: str, train_ids: np.ndarray, num_classes: int) -> np.ndarray:
  """[C] f32 per-class loss weights (see the module docstring)."""
  spec = spec.strip()
  if not spec:
    return np.ones(num_classes, np.float32)
  if spec == "balanced":  # sklearn's compute_class_weight("balanced"); an absent class gets 0
    counts = np.bincount(train_ids, minlength=num_classes).astype(np.float64)
    return np.where(counts > 0, len(train_ids) / (num_classes * np.maximum(counts, 1)), 0.0).astype(np.float32)
  weights = np.asarray([float(v) for v in spec.split(",")], np.float32)
  if len(weights) != num_classes:
    raise ConfigError(f"config.classify.class_weights: {len(weights)} weights for {num_classes} classes")
  return weights


@dataclasses.dataclass
class Encoded:
  ids: np.ndarray  # [N, L] int32, right-padded
  lengths: np.ndarray  # [N] int32
  labels: np.ndarray  # [N] int32
  truncated: int = 0
  dropped: int = 0
  pad_id: int = 0

  def __len__(self) -> int:
    return len(self.labels)


def encode(tokenizer: Tokenizer, rows: Rows, ids: np.ndarray, seq_len: int, on_long: str) -> Encoded:
  """Token rows of the texts (see the module docstring for truncation)."""
  tokens = tokenizer.encode_batch(rows.texts) if rows.texts else []
  out = np.full((len(tokens), seq_len), tokenizer.pad_id, np.int32)
  lengths, keep, truncated = [], [], 0
  for i, (t, where) in enumerate(zip(tokens, rows.where)):
    if not t:
      raise DataError(f"{where}: the text encodes to no tokens")
    if len(t) > seq_len:
      if on_long == "drop":
        continue
      t, truncated = t[:seq_len], truncated + 1
    out[i, :len(t)] = t
    lengths.append(len(t))
    keep.append(i)
  keep = np.asarray(keep, np.int64)
  return Encoded(out[keep], np.asarray(lengths, np.int32), ids[keep] if len(keep) else ids[:0], truncated,
                 len(tokens) - len(keep), tokenizer.pad_id)


def make_batch(enc: Encoded, index: np.ndarray, weight: np.ndarray) -> dict[str, np.ndarray]:
  index = np.asarray(index, np.int64)
  length = enc.lengths[index]
  slot = np.arange(enc.ids.shape[1], dtype=np.int32)
  real = slot[None, :] < length[:, None]
  return {"tokens": enc.ids[index], "positions": np.where(real, slot, 0).astype(np.int32),
          "segment_ids": real.astype(np.int32), "last_index": (length - 1).astype(np.int32),
          "label": enc.labels[index], "weight": np.asarray(weight, np.float32)}


def train_batches(enc: Encoded, batch_size: int, seed: int, weight_C: np.ndarray) -> pipelines.GrainBatches:
  """Endless shuffled batches (reshuffled each epoch); grain's state is the checkpointed position."""
  if len(enc) == 0:
    raise DataError("classify: no usable training rows (all dropped or skipped)")
  ds = (grain.MapDataset.range(len(enc)).shuffle(seed=seed).repeat().batch(batch_size)
        .map(lambda index: make_batch(enc, index, weight_C[enc.labels[index]])))
  return pipelines.GrainBatches(ds)


def eval_batches(enc: Encoded, batch_size: int, max_rows: int = 0) -> list[dict[str, np.ndarray]]:
  """The first `max_rows` held-out rows (0 = all) in order, in full batches, the last one filled with weight-0
  repeats."""
  if len(enc) == 0:
    raise DataError("classify: no usable held-out rows (all dropped or skipped)")
  n = len(enc) if max_rows <= 0 else min(max_rows, len(enc))
  n_batches = -(-n // batch_size)
  index = np.arange(n_batches * batch_size)
  weight = (index < n).astype(np.float32)
  index = np.where(index < n, index, 0)
  return [pipelines.local_rows(make_batch(enc, index[i * batch_size:(i + 1) * batch_size],
                                          weight[i * batch_size:(i + 1) * batch_size]))
          for i in range(n_batches)]
