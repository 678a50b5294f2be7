"""Plain-text corpora for tokenizer training and pretraining: the built-in task world or a named dataset,
split into training and held-out documents by seed."""
from __future__ import annotations

import ml_collections
import numpy as np

from jaxllm.data import sources, synthetic
from jaxllm.data.files import DataError


def _join_short(texts: list[str], doc_chars: int) -> list[str]:
  """Consecutive short rows (a line of a play, a sentence) become one document, so that context spans them."""
  if doc_chars <= 0:
    return texts
  docs, current, size = [], [], 0
  for t in texts:
    current.append(t)
    size += len(t) + 1
    if size >= doc_chars:
      docs.append("\n".join(current))
      current, size = [], 0
  if current:
    docs.append("\n".join(current))
  return docs


def load_texts(data: ml_collections.ConfigDict) -> list[str]:
  """All rows of data.name as text (a registry name, a path, glob, hub id or URL), in file order; chat and
  preference data are read as their turns joined (sources.py)."""
  return read_texts(data)[0]


def read_texts(data: ml_collections.ConfigDict) -> tuple[list[str], int, str]:
  """(load_texts, malformed rows skipped, the source's name)."""
  limit = data.max_examples or None
  result = sources.load_config(data, "text", limit=limit)
  if result.skipped:
    print(f"data: skipped {result.skipped} malformed rows of {result.source} (data.on_bad_row=skip)")
  texts = [r["text"] for r in result.records[:limit]]
  if not any(t.strip() for t in texts):
    raise DataError(f"config.data.name={data.name!r}: the corpus {result.source} is empty")
  return texts, result.skipped, result.source


def split_documents(docs: list[str], eval_fraction: float, seed: int) -> tuple[list[str], list[str]]:
  """Seeded split into (train, held-out); held-out gets at least one document when there are two or more."""
  order = np.random.default_rng(seed).permutation(len(docs))
  n_eval = int(round(len(docs) * eval_fraction))
  n_eval = min(max(n_eval, 1 if len(docs) > 1 else 0), len(docs) - 1)
  held = set(order[:n_eval].tolist())
  return ([d for i, d in enumerate(docs) if i not in held], [d for i, d in enumerate(docs) if i in held])


def documents(config: ml_collections.ConfigDict) -> tuple[list[str], list[str]]:
  """(train documents, held-out documents) for pretraining."""
  train, held, _ = read_documents(config)
  return train, held


def read_documents(config: ml_collections.ConfigDict) -> tuple[list[str], list[str], int]:
  """(train documents, held-out documents, malformed rows skipped while reading) for pretraining."""
  data = config.data
  if not data.name:
    return (synthetic.pretrain_documents(config.seed, "train", data.train_examples),
            synthetic.pretrain_documents(config.seed, "eval", data.eval_examples), 0)
  texts, skipped, source = read_texts(data)
  docs = _join_short(texts, data.doc_chars)
  if len(docs) < 2:
    raise DataError(f"{source}: {len(texts)} row(s) make {len(docs)} document(s) (rows shorter than "
                    f"data.doc_chars={data.doc_chars} are joined); pretraining needs at least 2, one is held out. "
                    "Lower data.doc_chars or add text")
  return (*split_documents(docs, data.eval_fraction, config.seed), skipped)
