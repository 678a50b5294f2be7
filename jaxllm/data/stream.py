"""Pretraining on corpora larger than memory: documents streamed through `datasets`, tokenized on the fly and
packed into seq_len windows, each process reading and tokenizing only its share.

Sharding is datasets' `split_dataset_by_node`: with a number of files (shards) divisible by the process count
each process reads whole files of its own; otherwise every process walks the rows and keeps every P-th. The
held-out documents are the first `n_eval` of process 0's share (every process reads them, so the held-out
batches are the same everywhere); process 0 trains on the rest of its share. No shuffling: a stream is read in
file order, epoch after epoch (shuffle a corpus once when writing it).

The token stream is documents, each opened by eot (as pipelines.concat_documents), cut into windows of
seq_len + 1 tokens that overlap by one (pipelines.lm_batch: inputs, targets, positions and segment ids that
restart at every document). Memory holds one batch of tokens plus the document being read.

Exact resume with a small state: the datasets iterator's position before the oldest document still in the
buffer, and how many of that position's tokens were already consumed; `set_state` re-reads from there and drops
them. The state is JSON and goes into every checkpoint like grain's.
"""
from __future__ import annotations

import collections
import copy
from typing import Any, Callable

import numpy as np

from jaxllm.data import pipelines


class StreamedLMBatches:
  """This process's rows of every global batch ([global_batch / process_count, seq_len] each), endlessly."""

  def __init__(self, open_stream: Callable[[], Any], text_of: Callable[[dict], str | None],
               encode: Callable[[str], list[int]], eot_id: int, seq_len: int, local_batch: int,
               process_index: int, process_count: int, n_eval: int):
    self._open, self._text_of, self._encode = open_stream, text_of, encode
    self._eot, self._seq_len, self._rows = eot_id, seq_len, local_batch
    self._index, self._count, self._n_eval = process_index, process_count, n_eval
    self._start(None, 0)

  # ----------------------------------------------------------------------------------------- the shard stream
  def _shard(self):
    from datasets.distributed import split_dataset_by_node  # pylint: disable=g-import-not-at-top
    ds = split_dataset_by_node(self._open(), rank=self._index, world_size=self._count)
    return ds.skip(self._n_eval) if self._index == 0 and self._n_eval else ds

  def _start(self, source_state: dict | None, skip: int) -> None:
    self._ds = self._shard()
    if source_state is not None:
      self._ds.load_state_dict(source_state)
    self._it = iter(self._ds)
    self._buffer = np.zeros(0, np.int32)
    self._docs: collections.deque = collections.deque()  # [state before the document, its token count]
    self._head_used = 0  # tokens of docs[0] already consumed
    self._fill(skip + 1)
    self._drop(skip)

  def _read_document(self) -> None:
    before = copy.deepcopy(self._ds.state_dict())
    try:
      row = next(self._it)
    except StopIteration:  # epoch end: a fresh dataset (a restored one would resume where it was restored)
      self._ds = self._shard()
      self._it = iter(self._ds)
      before = copy.deepcopy(self._ds.state_dict())
      try:
        row = next(self._it)
      except StopIteration:
        raise ValueError("the streamed training corpus has no documents for this process") from None
    text = self._text_of(row)
    ids = [self._eot] + self._encode(text) if text else []
    self._docs.append([before, len(ids)])
    if ids:
      self._buffer = np.concatenate([self._buffer, np.asarray(ids, np.int32)])

  def _fill(self, n: int) -> None:
    while len(self._buffer) < n:
      self._read_document()

  def _drop(self, n: int) -> None:
    self._buffer = self._buffer[n:]
    self._head_used += n
    while self._docs and self._head_used >= self._docs[0][1] and len(self._docs) > 1:
      self._head_used -= self._docs.popleft()[1]

  # ------------------------------------------------------------------------------------ the batch interface
  def next(self, state=None) -> dict[str, np.ndarray]:
    n = self._rows * self._seq_len
    self._fill(n + 1)
    batch = pipelines.lm_batch(self._buffer[:n + 1], np.arange(self._rows), self._seq_len, self._eot)
    self._drop(n)
    return batch

  def get_state(self) -> dict:
    return {"source": self._docs[0][0], "skip": int(self._head_used)}

  def set_state(self, state: dict) -> None:
    self._start(state["source"], state["skip"])


def eval_documents(open_stream: Callable[[], Any], text_of: Callable[[dict], str | None], n_eval: int,
                   process_count: int) -> list[str]:
  """The first n_eval documents of process 0's share: the held-out set, the same on every process."""
  from datasets.distributed import split_dataset_by_node  # pylint: disable=g-import-not-at-top
  texts: list[str] = []
  for row in split_dataset_by_node(open_stream(), rank=0, world_size=process_count).take(n_eval):
    text = text_of(row)
    if text:
      texts.append(text)
  return texts

