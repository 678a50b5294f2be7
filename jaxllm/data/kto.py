"""KTO data: single answers tagged desirable or undesirable (LLaMA-Factory's `kto_tag`) -> fixed-shape batches.

Records are `{"messages": prompt turns, "answer": str, "desirable": bool}`, from
  * the built-in task world (data.name ''): every preference pair of `synthetic.preference_pairs` gives two
    records, its correct answer tagged desirable and its wrong one undesirable (TRL's unpair_preference_dataset);
  * a dataset_info.json entry whose `columns` name the tag column as `kto_tag`, LLaMA-Factory's convention:
      "kto_demo": {"file_name": "kto.json", "formatting": "sharegpt",
                   "columns": {"messages": "messages", "kto_tag": "label"},
                   "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user",
                            "assistant_tag": "assistant"}}
  * a local file given as data.name, its formatting detected and its tag in the column `label` (TRL's unpaired
    preference format and LLaMA-Factory's kto_en_demo).
Each row is a conversation ending with the assistant answer that is tagged; the tag must be a JSON boolean. A bad
row raises a DataError naming the file and row, or with data.on_bad_row=skip is counted.

KTO's reference point is an estimate of KL(pi || ref) from answers paired with prompts they do not answer. So
each example is one shared-prompt row (data/branches.py, the layout of preference pairs) holding two branches:
side 0 its own answer, side 1 the answer of the next example in a seed-shuffled order (the KL sample). A batch
holds the keys of a preference batch (`preference.make_batch`) plus `desirable` [B] f32 (1 or 0). Rows that do
not fit data.seq_len are cut as preference pairs are (`preference.fit_pair`, data.on_long).
"""
from __future__ import annotations

import os

import grain
import ml_collections
import numpy as np

from jaxllm import chat_template
from jaxllm.data import detect, files, pipelines, preference, sources, synthetic, text
from jaxllm.data.formats import make_spec, row_fn
from jaxllm.tokenizer import Tokenizer

TAG_COLUMN = "label"  # the tag column of a file read without a dataset_info.json


def from_pairs(pairs: list[dict]) -> list[dict]:
  """Each preference pair as two tagged records: chosen desirable, rejected undesirable."""
  return [{"messages": p["messages"], "answer": p[side], "desirable": side == "chosen"}
          for p in pairs for side in preference.SIDES]


def _tagged(row: dict, parse, tag_column: str) -> dict:
  if tag_column not in row:
    raise files.RowError(f"missing the kto_tag column {tag_column!r} (row has {', '.join(map(repr, row))})")
  tag = row[tag_column]
  if not isinstance(tag, (bool, np.bool_)):
    raise files.RowError(f"kto_tag column {tag_column!r} must be true or false, got {files.short(tag)}")
  messages = parse({k: v for k, v in row.items() if k != tag_column})["messages"]
  if messages[-1]["role"] != "assistant" or not messages[-1]["content"].strip():
    raise files.RowError("the conversation must end with a non-empty assistant answer (the tagged one)")
  return {"messages": messages[:-1], "answer": messages[-1]["content"], "desirable": bool(tag)}


def read(config: ml_collections.ConfigDict) -> files.LoadResult:
  """Tagged records of data.name (a dataset_info.json entry with columns.kto_tag, or a local file)."""
  data = config.data
  if data.dataset_info:
    entry = sources.resolve(data.name, data.dataset_info)
    columns = dict(entry.get("columns") or {})
    if "kto_tag" not in columns or "file_name" not in entry:
      raise files.DataError(f"{data.dataset_info}: dataset {data.name!r} needs a local file_name and "
                            f"columns.kto_tag naming its boolean tag column for kto")
    path, tag_column, tags = entry["file_name"], columns.pop("kto_tag"), entry.get("tags")
    formatting = sources.entry_formatting(entry)
  elif os.path.exists(data.name):
    path, tag_column, columns, tags, formatting = data.name, TAG_COLUMN, None, None, None
  else:
    raise files.DataNotFoundError(f"config.data.name={data.name!r}: kto reads a local file, or a dataset of "
                                  f"data.dataset_info whose columns name its kto_tag")
  sink = files.Sink(data.on_bad_row)
  rows, source = files.located_rows(path, sink)
  if formatting is None:
    found = detect.detect({k: v for k, v in rows[0][1].items() if k != tag_column}, source)
    formatting, columns, tags = found.formatting, found.columns, found.tags
  parse = row_fn(make_spec(formatting, False, columns, tags), "chat")
  records = []
  for where, row in rows[:data.max_examples or None]:
    try:
      records.append(_tagged(row, parse, tag_column))
    except files.RowError as e:
      sink.bad(where, str(e))
  if not records:
    raise files.DataError(f"{source}: no usable records (all {sink.skipped} skipped; first: {sink.reasons[:1]})")
  return files.LoadResult(records, sink.skipped, source, sink.reasons, formatting)


def tokenize(tokenizer: Tokenizer, records: list[dict], seq_len: int, seed: int, on_long: str = "truncate",
             prompt_fraction: float = 0.5) -> tuple[preference.Pairs, np.ndarray]:
  """(rows as Pairs: side 0 the record's answer, side 1 its KL sample; desirable [N] bool) of the records that
  fit (see the module docstring)."""
  order = np.random.default_rng(seed).permutation(len(records))
  partner = np.empty(len(records), np.int64)
  partner[order] = np.roll(order, -1)
  answers = [preference.answer_ids(tokenizer, r["answer"]) for r in records]
  ids = np.full((len(records), 2, seq_len), tokenizer.pad_id, np.int32)
  lengths = np.zeros((len(records), 2), np.int32)
  prompt_len = np.zeros(len(records), np.int32)
  desirable = np.zeros(len(records), bool)
  n = dropped = truncated = 0
  for i, record in enumerate(records):
    prompt = chat_template.prompt_ids(tokenizer, record["messages"])
    sides = [answers[i], answers[partner[i]]]
    fitted = preference.fit_pair(prompt, sides, seq_len - 1, prompt_fraction if on_long == "truncate" else None)
    if fitted is None:
      dropped += 1
      continue
    truncated += int(len(fitted[0]) < len(prompt) or fitted[1] != sides)
    prompt, sides = fitted
    for s, answer in enumerate(sides):
      ids[n, s, :len(prompt) + len(answer)] = prompt + answer
      lengths[n, s] = len(prompt) + len(answer)
    prompt_len[n], desirable[n] = len(prompt), record["desirable"]
    n += 1
  pairs = preference.Pairs(ids[:n], lengths[:n], prompt_len[:n], dropped=dropped, truncated=truncated,
                           pad_id=tokenizer.pad_id)
  return pairs, desirable[:n]


def make_batch(pairs: preference.Pairs, desirable: np.ndarray, index: np.ndarray,
               weight: np.ndarray | None = None) -> dict[str, np.ndarray]:
  return {**preference.make_batch(pairs, index, weight), "desirable": desirable[index].astype(np.float32)}


def build(config: ml_collections.ConfigDict, tokenizer: Tokenizer
          ) -> tuple[pipelines.GrainBatches, list[dict[str, np.ndarray]], dict[str, int]]:
  """(training batches, held-out batches, counts) of tagged single answers."""
  data = config.data
  if data.name:
    result = read(config)
    train_records, eval_records = text.split_documents(result.records, data.eval_fraction, config.seed)
    skipped = result.skipped
  else:
    train_records = from_pairs(synthetic.preference_pairs(config.seed, "train", data.train_examples // 2))
    eval_records = from_pairs(synthetic.preference_pairs(config.seed, "eval", data.eval_examples // 2))
    skipped = 0
  fit = dict(on_long=data.on_long, prompt_fraction=data.prompt_fraction)
  train, train_tags = tokenize(tokenizer, train_records, data.seq_len, config.seed, **fit)
  held, held_tags = tokenize(tokenizer, eval_records, data.seq_len, config.seed + 1, **fit)
  for name, rows in (("training", train), ("held-out", held)):
    if len(rows) == 0:
      raise files.DataError(f"kto: no usable {name} examples (all dropped or skipped)")
  batches = pipelines.GrainBatches(
      grain.MapDataset.range(len(train)).shuffle(seed=config.seed).repeat().batch(data.batch_size)
      .map(lambda index: make_batch(train, train_tags, index)))
  n_batches = max(1, min(config.eval.batches, len(held) // data.batch_size))
  index = np.arange(n_batches * data.batch_size)
  weight = (index < len(held)).astype(np.float32)  # a held-out set smaller than a batch is filled with weight 0
  eval_batches = [pipelines.local_rows(make_batch(held, held_tags, chunk % len(held), w))
                  for chunk, w in zip(np.split(index, n_batches), np.split(weight, n_batches))]
  counts = {"train_examples": len(train), "eval_examples": len(held),
            "train_desirable": int(train_tags.sum()), "truncated_too_long": train.truncated + held.truncated,
            "dropped_too_long": train.dropped + held.dropped, "skipped_bad": skipped}
  return batches, eval_batches, counts
