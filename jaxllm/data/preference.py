"""Preference pairs -> fixed-shape chosen/rejected batches for the `reward` and `dpo` stages.

Records are `{"messages": prompt turns, "chosen": str, "rejected": str}`: from `data.name` through
`sources.load(kind="preference")` (alpaca / sharegpt ranking data, hh-rlhf transcripts), or, when `data.name` is
empty, the built-in task world's correct-vs-wrong worked answers (`synthetic.preference_pairs`).

Each side is `prompt_ids(messages) + answer`, where the answer is the assistant content and its closing
<|im_end|> (`completion_ids` without the trailing newline: a sequence ends where sampling stops, so a reward
model reads the same token for training pairs and for sampled completions).

A pair is one row: the prompt once, then both answers, each branch seeing the prompt and itself only
(data/branches.py; Wang & Hegde 2024, "Accelerating Direct Preference Optimization with Prefix Sharing").
Every token's hidden state is exactly what it would be in its own side's row, and the shared prompt is
computed once: on the built-in world, where the prompt is ~3/4 of a side, a pair costs a 104-token row
instead of two of 80-96.

Truncation (`data.on_long=truncate`, LLaMA-Factory's cutoff_len / TRL's max_length, counted as truncated): the
row (p + 1 + |C| + |R| tokens) must fit `data.seq_len`. While both answers fit beside at least one prompt token,
only the prompt is cut, from the left; otherwise the prompt keeps its last `data.prompt_fraction` of the budget
(or all of itself if shorter) and the answers share the rest, each cut at its end (the shorter one whole when it
fits in half). `data.on_long=drop` drops such pairs instead (counted), as does a cut that leaves both answers
identical. A batch of B pairs holds:

  tokens, targets, positions, segment_ids, prefix_ids   [B, L] int32    the rows the model runs on; a
                                                                        target is the next token of its own
                                                                        branch (pad at a branch's end)
  side_index                                            [B, 2, L] int32 the row slot of each side's t-th
                                                                        token (side 0 = chosen, 1 = rejected;
                                                                        0 past the side's end): per-token
                                                                        values of the row, gathered with it,
                                                                        read as each side's own row
  loss_mask                                             [B, 2, L] f32   in that side view, 1 where the target
                                                                        is an answer token
  last_index                                            [B, 2] int32    in the side view, the last real token
                                                                        (where rewards are read)
  weight                                                [B] f32         1 for a real pair, 0 for filler rows
                                                                        of a short held-out set

`side_rows` rebuilds each side's own padded row (tests, and anything that wants the plain layout).
The training stream is a grain pipeline (shuffled by seed, reshuffled every epoch), so its position is
checkpointed and resumed exactly.
"""
from __future__ import annotations

import dataclasses

import grain
import ml_collections
import numpy as np

from jaxllm import chat_template
from jaxllm.data import branches, pipelines, sources, synthetic, text
from jaxllm.tokenizer import Tokenizer

SIDES = ("chosen", "rejected")


@dataclasses.dataclass
class Pairs:
  """Tokenised pairs: ids [N, 2, L] (right-padded with pad id), lengths [N, 2], prompt_len [N] (shared)."""
  ids: np.ndarray
  lengths: np.ndarray
  prompt_len: np.ndarray
  dropped: int = 0  # pairs whose answers alone did not fit in seq_len (on_long=drop), or equal once cut
  truncated: int = 0  # pairs cut to fit (prompt from the left, answers at the end)
  skipped: int = 0  # bad rows skipped (data.on_bad_row = "skip")
  pad_id: int = 0  # the id that pads rows

  def __len__(self) -> int:
    return len(self.ids)


def check_record(record: dict) -> str | None:
  """Why a preference record is unusable (missing side, empty answer, identical sides), or None."""
  if not isinstance(record.get("messages"), list) or not record["messages"]:
    return "missing prompt messages"
  for side in SIDES:
    value = record.get(side)
    if value is None:
      return f"missing {side} answer"
    if not isinstance(value, str):
      return f"{side} answer must be a string, got {type(value).__name__}"
    if not value.strip():
      return f"empty {side} answer"
  if record["chosen"] == record["rejected"]:
    return f"chosen and rejected are identical: {record['chosen'][:60]!r}"
  return None


def answer_ids(tokenizer: Tokenizer, content: str) -> list[int]:
  return chat_template.answer_ids(tokenizer, content)


def fit_pair(prompt: list[int], answers: list[list[int]], budget: int,
             prompt_fraction: float) -> tuple[list[int], list[list[int]]] | None:
  """(prompt, answers) cut so that len(prompt) + both answers <= budget (see the module docstring), or None
  when the answers need cutting and that is not allowed (prompt_fraction None)."""
  a, b = len(answers[0]), len(answers[1])
  if len(prompt) + a + b <= budget:
    return prompt, answers
  if a + b < budget:  # the answers fit beside some prompt: cut the prompt only
    return prompt[len(prompt) - (budget - a - b):], answers
  if prompt_fraction is None:
    return None
  keep = min(len(prompt), max(1, int(budget * prompt_fraction)))
  room = budget - keep  # for both answers
  first = min(a, max(room // 2, room - b))
  return prompt[len(prompt) - keep:], [answers[0][:first], answers[1][:room - first]]


def tokenize(tokenizer: Tokenizer, records: list[dict], seq_len: int, on_bad: str = "fail",
             what: str = "preference data", on_long: str = "truncate", prompt_fraction: float = 0.5) -> Pairs:
  """Render, check and fit every pair. Bad records raise a DataError naming their row (0-based index in
  `records`), or with on_bad="skip" are counted; over-long pairs are truncated (or with on_long="drop"
  dropped) and counted."""
  if on_bad not in ("fail", "skip"):
    raise ValueError(f"on_bad must be 'fail' or 'skip', got {on_bad!r}")
  ids = np.full((len(records), 2, seq_len), tokenizer.pad_id, np.int32)
  lengths = np.zeros((len(records), 2), np.int32)
  prompt_len = np.zeros(len(records), np.int32)
  n = dropped = skipped = truncated = 0
  reasons: list[str] = []
  for row, record in enumerate(records):
    why = check_record(record)
    if why is not None:
      if on_bad == "fail":
        raise sources.DataError(f"{what}: row {row}: {why}")
      skipped += 1
      if len(reasons) < 5:
        reasons.append(f"row {row}: {why}")
      continue
    prompt = chat_template.prompt_ids(tokenizer, record["messages"])
    answers = [answer_ids(tokenizer, record[side]) for side in SIDES]
    fitted = fit_pair(prompt, answers, seq_len - 1, prompt_fraction if on_long == "truncate" else None)
    if fitted is None or fitted[1][0] == fitted[1][1]:
      dropped += 1
      continue
    truncated += int(len(fitted[0]) < len(prompt) or fitted[1] != answers)
    prompt, answers = fitted
    for s, answer in enumerate(answers):
      seq = prompt + answer
      ids[n, s, :len(seq)] = seq
      lengths[n, s] = len(seq)
    prompt_len[n] = len(prompt)
    n += 1
  if skipped:
    print(f"{what}: skipped {skipped} bad pairs (data.on_bad_row=skip), e.g. {'; '.join(reasons)}", flush=True)
  if truncated or dropped:
    print(f"{what}: {truncated} pairs truncated to data.seq_len={seq_len}, {dropped} dropped (data.on_long="
          f"{on_long})", flush=True)
  return Pairs(ids[:n], lengths[:n], prompt_len[:n], dropped=dropped, skipped=skipped, pad_id=tokenizer.pad_id,
               truncated=truncated)


def make_batch(pairs: Pairs, index: np.ndarray, weight: np.ndarray | None = None) -> dict[str, np.ndarray]:
  """The batch of pairs `index`, one shared-prompt row each (see the module docstring for the layout)."""
  index = np.asarray(index, np.int64)
  l = pairs.ids.shape[-1]
  rows, side_index = [], []
  for i in index:
    p = int(pairs.prompt_len[i])
    answers = [pairs.ids[i, s, p:pairs.lengths[i, s]] for s in range(2)]
    row, sides = branches.branch_row(pairs.ids[i, 0, :p], answers, l, l, pairs.pad_id)
    rows.append(row)
    side_index.append(sides)
  length = pairs.lengths[index]  # [B, 2]
  prompt_len = pairs.prompt_len[index]  # [B]
  slot = np.arange(l, dtype=np.int32)
  # In the side view the target at t is token t+1: an answer token when prompt_len <= t+1 < length.
  answer = (slot + 1 >= prompt_len[:, None, None]) & (slot + 1 < length[..., None])
  return {
      **{k: np.stack([r[k] for r in rows]) for k in branches.ROW_KEYS}, "side_index": np.stack(side_index),
      "loss_mask": answer.astype(np.float32), "last_index": (length - 1).astype(np.int32),
      "weight": np.ones(len(index), np.float32) if weight is None else np.asarray(weight, np.float32),
  }


def side_rows(batch: dict[str, np.ndarray], pad_id: int = 0) -> dict[str, np.ndarray]:
  """Each side's own right-padded row, [B, 2, L]: tokens, targets (token t + 1; pad after the last real one),
  positions, segment_ids (1 on real tokens), and the batch's loss_mask / last_index. The model on these rows
  gives each token the hidden state the shared row gives it at `side_index`."""
  slot = np.arange(batch["side_index"].shape[-1])
  real = slot <= batch["last_index"][..., None]
  tokens = np.where(real, np.take_along_axis(batch["tokens"][:, None, :], batch["side_index"], -1), pad_id)
  targets = np.concatenate([tokens[..., 1:], np.full_like(tokens[..., :1], pad_id)], -1)
  return {"tokens": tokens.astype(np.int32), "targets": targets.astype(np.int32),
          "positions": np.where(real, slot, 0).astype(np.int32), "segment_ids": real.astype(np.int32),
          "loss_mask": batch["loss_mask"], "last_index": batch["last_index"]}


def train_batches(pairs: Pairs, batch_size: int, seed: int) -> pipelines.GrainBatches:
  """Endless shuffled batches (reshuffled each epoch); grain's state is the checkpointed position."""
  if len(pairs) == 0:
    raise ValueError("no usable training pairs (all dropped or skipped)")
  ds = (grain.MapDataset.range(len(pairs)).shuffle(seed=seed).repeat().batch(batch_size)
        .map(lambda index: make_batch(pairs, index)))
  return pipelines.GrainBatches(ds)


def eval_batches(pairs: Pairs, batch_size: int, max_batches: int) -> list[dict[str, np.ndarray]]:
  """The first held-out pairs in order, in full batches so that per-batch means average exactly; a held-out
  set smaller than one batch is filled with weight-0 repeats."""
  if len(pairs) == 0:
    raise ValueError("no usable held-out pairs (all dropped or skipped)")
  n_batches = max(1, min(max_batches, len(pairs) // batch_size))
  index = np.arange(n_batches * batch_size)
  weight = (index < len(pairs)).astype(np.float32)
  index = index % len(pairs)
  return [pipelines.local_rows(make_batch(pairs, index[i * batch_size:(i + 1) * batch_size],
                                          weight[i * batch_size:(i + 1) * batch_size]))
          for i in range(n_batches)]


def records(config: ml_collections.ConfigDict) -> tuple[list[dict], list[dict], int]:
  """(train records, held-out records, rows skipped while reading) for `config.data`."""
  data = config.data
  if not data.name:
    return (synthetic.preference_pairs(config.seed, "train", data.train_examples),
            synthetic.preference_pairs(config.seed, "eval", data.eval_examples), 0)
  result = sources.load_config(data, "preference", limit=data.max_examples or None)
  if result.skipped:
    print(f"data: skipped {result.skipped} bad rows of {result.source} (data.on_bad_row=skip), e.g. "
          f"{'; '.join(result.skip_reasons[:3])}", flush=True)
  if data.eval_split:  # a split of its own (hub ids, save_to_disk DatasetDicts)
    held_result = sources.load_config(data, "preference", split=data.eval_split)
    return result.records, held_result.records, result.skipped + held_result.skipped
  train, held = text.split_documents(result.records, data.eval_fraction, config.seed)
  return train, held, result.skipped


def build(config: ml_collections.ConfigDict, tokenizer: Tokenizer
          ) -> tuple[pipelines.GrainBatches, list[dict[str, np.ndarray]], dict[str, int]]:
  """(training batches, held-out batches, counts) for the reward and dpo stages."""
  data = config.data
  train_records, eval_records, read_skipped = records(config)
  what = data.name or "built-in preference pairs"
  fit = dict(on_long=data.on_long, prompt_fraction=data.prompt_fraction)
  train = tokenize(tokenizer, train_records, data.seq_len, data.on_bad_row, f"{what} (train)", **fit)
  held = tokenize(tokenizer, eval_records, data.seq_len, data.on_bad_row, f"{what} (held out)", **fit)
  counts = {"train_pairs": len(train), "eval_pairs": len(held),
            "truncated_too_long": train.truncated + held.truncated, "dropped_too_long": train.dropped + held.dropped,
            "skipped_bad": read_skipped + train.skipped + held.skipped}
  return (train_batches(train, data.batch_size, config.seed),
          eval_batches(held, data.batch_size, config.eval.batches), counts)
