"""SFT data: chat conversations -> rendered, truncated examples -> fixed-shape batches.

An example is a conversation rendered by `chat_template.render` (ids + loss mask) and trimmed after its last
loss-bearing token (the closing <|im_end|>). It occupies n - 1 slots of a row: inputs ids[:-1], targets ids[1:],
loss mask mask[1:], positions 0..n-2 and its own segment id.

Truncation keeps the answer: with room for seq_len + 1 ids, the prompt is cut from the left; a leading system
turn is kept whole when it fits beside the answer. The "answer" is the last turn that carries loss (header
included). When the answer alone does not fit (LLaMA-Factory's cutoff_len, TRL's max_length), the prompt keeps
its last `prompt_fraction` of the room (all of itself if shorter) and the answer is cut at its end; with
on_long="drop" such an example is dropped instead. Both are counted.

Packing (`packing=True`) places examples into rows first-fit, in a seed-shuffled order, once; rows are then
shuffled every epoch by grain, so the iterator position (grain's JSON state) is all a checkpoint needs to
resume exactly. With `packing=False` each row holds one example, padded. Padding is segment 0 with no loss;
packed examples never attend to each other (the model masks across segment ids) and restart their positions.
"""
from __future__ import annotations

import dataclasses
import math

import grain
import numpy as np

from jaxllm import chat_template
from jaxllm.data.pipelines import GrainBatches, local_rows
from jaxllm.tokenizer import Tokenizer

PREFETCH = 4  # batches built ahead of the train step


@dataclasses.dataclass(frozen=True)
class Example:
  ids: np.ndarray  # [n] int32, 2 <= n <= seq_len + 1
  loss_mask: np.ndarray  # [n] int8: 1 where ids[i] is a target to learn


@dataclasses.dataclass
class Stats:
  """What became of the records, and how full the rows are."""
  seq_len: int
  examples: int = 0  # kept (possibly truncated)
  truncated: int = 0  # prompt cut from the left (and the answer at its end) to fit
  dropped: int = 0  # answer alone longer than seq_len + 1 tokens, with on_long="drop"
  skipped: int = 0  # malformed records (data.on_bad_row=skip)
  rows: int = 0  # sequences of seq_len slots
  loss_tokens: int = 0  # slots whose target carries loss
  real_tokens: int = 0  # slots holding an example token (not padding)

  def as_dict(self, prefix: str = "") -> dict[str, float]:
    slots = max(self.rows * self.seq_len, 1)
    return {f"{prefix}examples": self.examples, f"{prefix}truncated": self.truncated,
            f"{prefix}dropped": self.dropped, f"{prefix}skipped": self.skipped, f"{prefix}rows": self.rows,
            f"{prefix}loss_token_share": self.loss_tokens / slots,
            f"{prefix}padding_share": 1.0 - self.real_tokens / slots,
            f"{prefix}examples_per_row": self.examples / max(self.rows, 1)}

  def describe(self) -> str:
    d = self.as_dict()
    return (f"{self.examples} examples ({self.truncated} truncated, {self.dropped} dropped: answer longer than "
            f"seq_len with data.on_long=drop, {self.skipped} malformed skipped) in {self.rows} rows of {self.seq_len} "
            f"({d['examples_per_row']:.2f} per row); {d['loss_token_share']:.1%} of tokens carry loss, "
            f"{d['padding_share']:.1%} are padding")


def truncate(rendered: chat_template.Rendered, max_ids: int,
             prompt_fraction: float | None = None) -> tuple[list[int], list[int], bool] | None:
  """(ids, mask, was_truncated) holding at most max_ids ids with the answer whole if it fits; else the answer
  cut at its end after the prompt's last prompt_fraction * max_ids ids (None when prompt_fraction is None)."""
  ids, mask = rendered.ids, rendered.loss_mask
  last = max((i for i, m in enumerate(mask) if m), default=-1)
  if last < 0:
    raise ValueError("nothing to learn: no assistant turn carries loss")
  ids, mask = ids[:last + 1], mask[:last + 1]  # tokens after the final <|im_end|> teach nothing
  if len(ids) <= max_ids:
    return ids, mask, False
  answer = max(s for s in rendered.turn_starts if s <= last)  # the turn holding the last loss token
  answer_len = len(ids) - answer
  if answer_len > max_ids:
    if prompt_fraction is None:
      return None
    keep = min(answer, max(1, int(max_ids * prompt_fraction)))
    cut = slice(answer - keep, answer - keep + max_ids)
    return ids[cut], mask[cut], True
  system_end = rendered.system_end
  if system_end >= answer or system_end + answer_len > max_ids:
    system_end = 0  # the system turn does not fit beside the answer (or is the answer's own prefix): cut it too
  keep = max_ids - system_end - answer_len  # prompt tokens kept, from the end of the prompt
  head = slice(0, system_end)
  tail = slice(answer - keep, len(ids))
  return ids[head] + ids[tail], mask[head] + mask[tail], True


def encode(tokenizer: Tokenizer, conversations: list[dict], seq_len: int, *, train_on: str = "last",
           on_bad: str = "fail", source: str = "data", on_long: str = "truncate",
           prompt_fraction: float = 0.5) -> tuple[list[Example], Stats]:
  """Render and truncate `{"messages", "tools"}` records. A malformed record raises ValueError naming it (or
  is counted in `Stats.skipped` with on_bad="skip")."""
  stats = Stats(seq_len=seq_len)
  examples = []
  for i, conv in enumerate(conversations):
    try:
      messages = conv["messages"]
      rendered = chat_template.render(tokenizer, messages, train_on=train_on, tools=conv.get("tools", ""))
      fitted = truncate(rendered, seq_len + 1, prompt_fraction if on_long == "truncate" else None)
    except (ValueError, KeyError, TypeError) as e:
      message = f"{source}: record {i}: {type(e).__name__}: {e}"
      if on_bad == "skip":
        stats.skipped += 1
        continue
      raise ValueError(message) from e
    if fitted is None:
      stats.dropped += 1
      continue
    ids, mask, cut = fitted
    stats.truncated += int(cut)
    examples.append(Example(np.asarray(ids, np.int32), np.asarray(mask, np.int8)))
  stats.examples = len(examples)
  return examples, stats


def first_fit(lengths: list[int], capacity: int) -> list[list[int]]:
  """Bins (lists of item indices, in item order) by first-fit: each item goes into the lowest-numbered bin with
  room. A max-segment-tree over bins' free space finds that bin in O(log n); unopened bins are simply empty."""
  n = len(lengths)
  size = 1 << max(1, math.ceil(math.log2(max(n, 1))))
  free = [capacity] * (2 * size)
  bins: list[list[int]] = []
  for item, length in enumerate(lengths):
    if not 0 < length <= capacity:
      raise ValueError(f"item {item}: length {length} does not fit a bin of {capacity}")
    node = 1
    while node < size:
      node = 2 * node if free[2 * node] >= length else 2 * node + 1
    b = node - size
    if b == len(bins):
      bins.append([])
    bins[b].append(item)
    free[node] -= length
    node //= 2
    while node:
      free[node] = max(free[2 * node], free[2 * node + 1])
      node //= 2
  return bins


def layout(examples: list[Example], seq_len: int, packing: bool, order: np.ndarray | None = None) -> list[list[int]]:
  """Rows as lists of example indices; `order` is the sequence in which examples are placed (default: as given)."""
  order = np.arange(len(examples)) if order is None else order
  if not packing:
    return [[int(i)] for i in order]
  bins = first_fit([len(examples[i].ids) - 1 for i in order], seq_len)
  return [[int(order[j]) for j in b] for b in bins]


def rows_batch(examples: list[Example], rows: list[list[int]], seq_len: int, pad_id: int) -> dict[str, np.ndarray]:
  """[len(rows), seq_len] arrays; an empty row (list) is all padding."""
  b = len(rows)
  tokens = np.full((b, seq_len), pad_id, np.int32)
  targets = np.full((b, seq_len), pad_id, np.int32)
  positions = np.zeros((b, seq_len), np.int32)
  segment_ids = np.zeros((b, seq_len), np.int32)
  loss_mask = np.zeros((b, seq_len), np.float32)
  for r, row in enumerate(rows):
    start = 0
    for segment, e in enumerate(row, 1):
      ex = examples[e]
      n = len(ex.ids) - 1
      end = start + n
      tokens[r, start:end] = ex.ids[:-1]
      targets[r, start:end] = ex.ids[1:]
      loss_mask[r, start:end] = ex.loss_mask[1:]
      positions[r, start:end] = np.arange(n)
      segment_ids[r, start:end] = segment
      start = end
  return {"tokens": tokens, "targets": targets, "positions": positions, "segment_ids": segment_ids,
          "loss_mask": loss_mask}


def _fill_stats(stats: Stats, examples: list[Example], rows: list[list[int]]) -> Stats:
  stats.rows = len(rows)
  stats.examples = sum(len(row) for row in rows)
  stats.loss_tokens = int(sum(int(examples[e].loss_mask[1:].sum()) for row in rows for e in row))
  stats.real_tokens = int(sum(len(examples[e].ids) - 1 for row in rows for e in row))
  return stats


def train_batches(examples: list[Example], stats: Stats, seq_len: int, batch_size: int, seed: int, pad_id: int,
                  packing: bool = True) -> GrainBatches:
  """Endless global batches, rows reshuffled every epoch by seed; fills the row counts of `stats`."""
  if not examples:
    raise ValueError(f"no training examples left ({stats.dropped} dropped as longer than seq_len={seq_len}, "
                     f"{stats.skipped} malformed)")
  order = np.random.default_rng(seed).permutation(len(examples))
  rows = layout(examples, seq_len, packing, order)
  _fill_stats(stats, examples, rows)
  ds = (grain.MapDataset.range(len(rows)).shuffle(seed=seed).repeat().batch(batch_size)
        .map(lambda ids: rows_batch(examples, [rows[i] for i in ids], seq_len, pad_id)))
  # One background thread a few batches ahead: grain's default (16 threads, 500 batches) would build hundreds
  # of batches before the first step. The state still counts consumed batches, so resume stays exact.
  return GrainBatches(ds.to_iter_dataset(grain.ReadOptions(num_threads=1, prefetch_buffer_size=PREFETCH)))


def eval_batches(examples: list[Example], stats: Stats, seq_len: int, batch_size: int, pad_id: int,
                 packing: bool, max_batches: int) -> list[dict[str, np.ndarray]]:
  """The held-out examples in order, at most max_batches batches; the last is filled with empty rows (no loss),
  so the token-weighted mean over these batches is exact over the examples they hold."""
  rows = layout(examples, seq_len, packing)
  n_batches = max(1, min(max_batches, -(-len(rows) // batch_size)))
  rows = rows[:n_batches * batch_size]
  _fill_stats(stats, examples, rows)
  rows = rows + [[]] * (n_batches * batch_size - len(rows))
  return [local_rows(rows_batch(examples, rows[i * batch_size:(i + 1) * batch_size], seq_len, pad_id))
          for i in range(n_batches)]
