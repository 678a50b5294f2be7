"""grain pipelines that turn token streams into fixed-shape global batches, one process's rows at a time.

Every batch has static shapes (so the train step never retraces) and carries `tokens`, `targets`,
`positions`, `segment_ids` (0 = padding; packed documents never attend to each other) and `loss_mask`.
The iterator position is grain's JSON state, saved in every checkpoint for exact resume.
"""
from __future__ import annotations

import grain
import jax
import numpy as np


class GrainBatches:
  """Global batches from a grain MapDataset; this process keeps rows [i*b, (i+1)*b) of each."""

  def __init__(self, dataset: grain.MapDataset):
    self._dataset = dataset
    self._iterator = iter(dataset)

  def next(self, state=None) -> dict[str, np.ndarray]:
    return local_rows(next(self._iterator))

  def get_state(self) -> dict:
    return self._iterator.get_state()

  def set_state(self, state: dict) -> None:
    self._iterator.set_state(state)


def local_rows(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  n, i = jax.process_count(), jax.process_index()
  rows = next(iter(batch.values())).shape[0] // n
  return {k: v[i * rows:(i + 1) * rows] for k, v in batch.items()}


def concat_documents(docs_tokens: list[list[int]], eot_id: int) -> np.ndarray:
  """One flat int32 stream; each document starts with `eot_id`, which also ends the one before it."""
  total = sum(len(d) + 1 for d in docs_tokens)
  flat = np.empty(total, np.int32)
  pos = 0
  for doc in docs_tokens:
    flat[pos] = eot_id
    flat[pos + 1:pos + 1 + len(doc)] = doc
    pos += len(doc) + 1
  return flat


def lm_batch(flat: np.ndarray, window_ids: np.ndarray, seq_len: int, eot_id: int) -> dict[str, np.ndarray]:
  """Windows of seq_len + 1 tokens -> inputs/targets; segments restart (positions reset) at each eot."""
  offsets = np.asarray(window_ids, np.int64)[:, None] * seq_len + np.arange(seq_len + 1)
  window = flat[offsets]
  tokens, targets = window[:, :-1], window[:, 1:]
  starts = tokens == eot_id
  # Numbered from 1 (0 means padding), whether or not the window opens on a document start.
  segment_ids = np.cumsum(starts, axis=1, dtype=np.int32) + 1 - starts[:, :1]
  idx = np.arange(seq_len, dtype=np.int32)
  segment_start = np.maximum.accumulate(np.where(starts, idx, 0), axis=1)
  return {"tokens": tokens, "targets": targets, "positions": (idx - segment_start).astype(np.int32),
          "segment_ids": segment_ids, "loss_mask": np.ones_like(tokens, np.float32)}


def _window_count(flat: np.ndarray, seq_len: int, batch_size: int, what: str) -> int:
  n = (len(flat) - 1) // seq_len
  if n < 1:
    raise ValueError(f"{what}: {len(flat)} tokens do not fill one window of data.seq_len + 1 = {seq_len + 1}")
  return n


def packed_lm_batches(flat: np.ndarray, seq_len: int, batch_size: int, seed: int, eot_id: int) -> GrainBatches:
  """Shuffled (by seed, reshuffled every epoch) endless batches of packed windows."""
  n = _window_count(flat, seq_len, batch_size, "training corpus")
  ds = (grain.MapDataset.range(n).shuffle(seed=seed).repeat().batch(batch_size)
        .map(lambda ids: lm_batch(flat, ids, seq_len, eot_id)))
  return GrainBatches(ds)


def packed_lm_eval_batches(flat: np.ndarray, seq_len: int, batch_size: int, eot_id: int,
                           max_batches: int) -> list[dict[str, np.ndarray]]:
  """The first windows of the held-out stream in order (the last batch wraps around to keep shapes fixed)."""
  n = _window_count(flat, seq_len, batch_size, "held-out corpus")
  n_batches = max(1, min(max_batches, n // batch_size))
  ids = np.arange(n_batches * batch_size) % n
  return [local_rows(lm_batch(flat, ids[i * batch_size:(i + 1) * batch_size], seq_len, eot_id))
          for i in range(n_batches)]
