"""Preference pairs -> fixed-shape chosen/rejected batches for the `reward` and `dpo` stages.

Records are `{"messages": prompt turns, "chosen": str, "rejected": str}`: from `data.name` through
`sources.load(kind="preference")` (alpaca / sharegpt ranking data, hh-rlhf transcripts), or, when `data.name` is
empty, the built-in task world's correct-vs-wrong worked answers (`synthetic.preference_pairs`).

Each side is `prompt_ids(messages) + answer`, where the answer is the assistant content and its closing
<|im_end|> (`completion_ids` without the trailing newline: a sequence ends where sampling stops, so a reward
model reads the same token for training pairs and for sampled completions). Truncation keeps both answers
whole and cuts the prompt from the left by the same amount on both sides, so the two sides always share one
prompt; a pair whose longer answer alone leaves no room for a prompt token is dropped and counted.

A batch of B pairs holds, with side axis 2 (0 = chosen, 1 = rejected) right after the batch axis so that the
loss can run both sides as one [2B, L] forward pass without moving rows between devices:

  tokens, targets, positions, segment_ids   [B, 2, L] int32  (right padding: pad id, segment 0, position 0)
  loss_mask                                 [B, 2, L] f32    1 where `targets` is an answer token
  last_index                                [B, 2]    int32  index of the last real token (where rewards are read)
  weight                                    [B]       f32    1 for a real pair, 0 for filler rows of a short eval set

The training stream is a grain pipeline (shuffled by seed, reshuffled every epoch), so its position is
checkpointed and resumed exactly.
"""
from __future__ import annotations

import dataclasses
import os

import grain
import ml_collections
import numpy as np

from jaxllm import chat_template
from jaxllm.data import pipelines, sources, synthetic, text
from jaxllm.tokenizer import Tokenizer

SIDES = ("chosen", "rejected")


@dataclasses.dataclass
class Pairs:
  """Tokenised pairs: ids [N, 2, L] (right-padded with pad id), lengths [N, 2], prompt_len [N] (shared)."""
  ids: np.ndarray
  lengths: np.ndarray
  prompt_len: np.ndarray
  dropped: int = 0  # pairs whose answers alone did not fit in seq_len
  skipped: int = 0  # bad rows skipped (data.on_bad_row = "skip")

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
  return tokenizer.encode(content) + [tokenizer.im_end_id]


def tokenize(tokenizer: Tokenizer, records: list[dict], seq_len: int, on_bad: str = "fail",
             what: str = "preference data") -> Pairs:
  """Render, check and truncate every pair. Bad records raise a DataError naming their row (0-based index in
  `records`), or with on_bad="skip" are counted; over-long pairs are always dropped and counted."""
  if on_bad not in ("fail", "skip"):
    raise ValueError(f"on_bad must be 'fail' or 'skip', got {on_bad!r}")
  ids = np.full((len(records), 2, seq_len), tokenizer.pad_id, np.int32)
  lengths = np.zeros((len(records), 2), np.int32)
  prompt_len = np.zeros(len(records), np.int32)
  n = dropped = skipped = 0
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
    room = seq_len - max(len(a) for a in answers)  # prompt tokens that fit beside the longer answer
    if room < 1:
      dropped += 1
      continue
    prompt = prompt[-room:]  # the same left cut on both sides
    for s, answer in enumerate(answers):
      seq = prompt + answer
      ids[n, s, :len(seq)] = seq
      lengths[n, s] = len(seq)
    prompt_len[n] = len(prompt)
    n += 1
  if skipped:
    print(f"{what}: skipped {skipped} bad pairs (data.on_bad_row=skip), e.g. {'; '.join(reasons)}", flush=True)
  if dropped:
    print(f"{what}: dropped {dropped} pairs whose answers alone exceed data.seq_len={seq_len}", flush=True)
  return Pairs(ids[:n], lengths[:n], prompt_len[:n], dropped, skipped)


def make_batch(pairs: Pairs, index: np.ndarray, weight: np.ndarray | None = None) -> dict[str, np.ndarray]:
  """The batch of pairs `index` (see the module docstring for the layout)."""
  index = np.asarray(index, np.int64)
  ids = pairs.ids[index]  # [B, 2, L]
  length = pairs.lengths[index]  # [B, 2]
  prompt_len = pairs.prompt_len[index]  # [B]
  b, _, l = ids.shape
  slot = np.arange(l, dtype=np.int32)
  real = slot < length[..., None]
  targets = np.concatenate([ids[..., 1:], ids[..., -1:]], axis=-1)  # the last slot's target is never read
  # Target at slot t is token t+1: an answer token when prompt_len <= t+1 < length.
  answer = (slot + 1 >= prompt_len[:, None, None]) & (slot + 1 < length[..., None])
  return {
      "tokens": ids, "targets": targets,
      "positions": np.where(real, slot, 0).astype(np.int32), "segment_ids": real.astype(np.int32),
      "loss_mask": answer.astype(np.float32), "last_index": (length - 1).astype(np.int32),
      "weight": np.ones(b, np.float32) if weight is None else np.asarray(weight, np.float32),
  }


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
  limit = data.max_examples or None
  if data.dataset_info:
    result = sources.load(data.name, data.dataset_info, "preference", on_bad=data.on_bad_row, limit=limit)
  elif os.path.exists(data.name):
    result = sources.load_file(data.name, "alpaca", "preference", on_bad=data.on_bad_row, limit=limit)
  else:
    raise FileNotFoundError(f"config.data.name={data.name!r} is neither a file nor a dataset (set "
                            f"config.data.dataset_info to a dataset_info.json to use dataset names)")
  if result.skipped:
    print(f"data: skipped {result.skipped} bad rows of {result.source} (data.on_bad_row=skip), e.g. "
          f"{'; '.join(result.skip_reasons[:3])}", flush=True)
  train, held = text.split_documents(result.records, data.eval_fraction, config.seed)
  return train, held, result.skipped


def build(config: ml_collections.ConfigDict, tokenizer: Tokenizer
          ) -> tuple[pipelines.GrainBatches, list[dict[str, np.ndarray]], dict[str, int]]:
  """(training batches, held-out batches, counts) for the reward and dpo stages."""
  data = config.data
  train_records, eval_records, read_skipped = records(config)
  what = data.name or "built-in preference pairs"
  train = tokenize(tokenizer, train_records, data.seq_len, data.on_bad_row, f"{what} (train)")
  held = tokenize(tokenizer, eval_records, data.seq_len, data.on_bad_row, f"{what} (held out)")
  counts = {"train_pairs": len(train), "eval_pairs": len(held), "dropped_too_long": train.dropped + held.dropped,
            "skipped_bad": read_skipped + train.skipped + held.skipped}
  return (train_batches(train, data.batch_size, config.seed),
          eval_batches(held, data.batch_size, config.eval.batches), counts)
