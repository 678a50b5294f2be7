"""Shared-prefix rows: one prompt and several continuations of it (a preference pair's two answers, a GRPO
group's completions) packed into one row, the prompt computed once.

  slots    P[:-1] | P[-1] b_1 | P[-1] b_2 | ... | padding     the last prompt token opens each branch, so each
  segment     1   |    2      |    3      | ... |    0        branch predicts its own first token
  prefix      1   |    1      |    1      | ... |    0        (`prefix_ids`: the segment a token also attends to)
  position 0..p-2 | p-1 ...   | p-1 ...   | ... |    0        positions as in the branch's own row

With `prefix_ids` the model's attention lets each branch see the prompt and itself only, so every token gets
exactly the hidden state it has in its own row `P + b_j`; `side_index[j, t]` is the slot of that own row's
t-th token, through which per-token values of the shared row are read back per branch.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

ROW_KEYS = ("tokens", "targets", "positions", "segment_ids", "prefix_ids")


def branch_row(prompt: Sequence[int], branches: Sequence[Sequence[int]], row_len: int, side_len: int,
               pad_id: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
  """(ROW_KEYS -> [row_len] int32, side_index [len(branches), side_len] int32) of one shared-prefix row. A
  target is the next token of its own branch (pad at a branch's end). A branch's own row `P + b_j` may be
  side_len + 1 long (its last token a target only); side_index then stops at side_len. Raises ValueError when
  the row does not fit in row_len."""
  p = len(prompt)
  row = {k: np.full(row_len, pad_id if k in ("tokens", "targets") else 0, np.int32) for k in ROW_KEYS}
  side_index = np.zeros((len(branches), side_len), np.int32)
  row["tokens"][:p - 1], row["targets"][:p - 1] = prompt[:-1], prompt[1:]
  row["segment_ids"][:p - 1] = row["prefix_ids"][:p - 1] = 1
  row["positions"][:p - 1] = side_index[:, :p - 1] = np.arange(p - 1)
  start = p - 1
  for j, continuation in enumerate(branches):
    branch = np.concatenate([np.asarray(prompt[-1:], np.int32), np.asarray(continuation, np.int32)])
    end = start + len(branch)
    if end > row_len:
      raise ValueError(f"{p} prompt tokens and {len(branches)} continuations of "
                       f"{[len(b) for b in branches]} tokens do not fit a row of {row_len}")
    row["tokens"][start:end] = branch
    row["targets"][start:end - 1] = branch[1:]
    row["segment_ids"][start:end], row["prefix_ids"][start:end] = 2 + j, 1
    row["positions"][start:end] = np.arange(p - 1, p - 1 + len(branch))
    seen = min(len(branch), side_len - (p - 1))
    side_index[j, p - 1:p - 1 + seen] = np.arange(start, start + seen)
    start = end
  return row, side_index
