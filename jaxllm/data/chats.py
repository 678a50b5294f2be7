"""Chat data for supervised fine-tuning: the configured conversations split into training and held-out, and
the held-out prompts and reference answers the generation metrics read (jaxllm/stages/sft.py).

`data.name` '' = the built-in task world (its own held-out split, `sft.first_step_only` flawing training
demonstrations only, `data.tools` calling tools, `data.unanswerable` refusing problems missing a number); else a dataset or file read through `sources.load_config` as `sft.formatting`, where
classification records become chat turns "sft.instruction\\ntext" -> label, split `data.eval_fraction` held out
by seed.
"""
from __future__ import annotations

import dataclasses

import ml_collections

from jaxllm import answers
from jaxllm import tools
from jaxllm.data import sources, synthetic_tools, text


@dataclasses.dataclass
class ChatData:
  train: list[dict]  # {"messages": [...], "tools": str}, the last message the assistant's answer
  eval: list[dict]
  kind: str  # evals kind for generation metrics: answer | classification | exact | '' (loss only)
  source: str
  skipped: int = 0  # malformed rows skipped by the reader


def classification_chat(record: dict, instruction: str) -> dict:
  """{"text", "label"} -> a user turn (the instruction, a newline, the text) answered by the label."""
  user = f"{instruction}\n{record['text']}" if instruction else record["text"]
  return {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": record["label"]}],
          "tools": ""}


def _record_kind(formatting: str) -> str:
  return "classification" if formatting == "classification" else "chat"


def load_chats(config: ml_collections.ConfigDict) -> ChatData:
  """Training and held-out conversations for the configured data."""
  data, s = config.data, config.sft
  if not data.name:
    def chats(split: str, n: int) -> list[dict]:
      train = split == "train"  # held-out references stay right and answerable (eval.unanswerable probes refusal)
      return synthetic_tools.chats(config.seed, split, n, tools=tools.parse_names(data.tools),
                                   unanswerable=data.unanswerable if train else 0.0,
                                   first_step_only=s.first_step_only if train else 0.0)
    kind = "answer" if s.eval_kind == "auto" else s.eval_kind
    return ChatData(chats("train", data.train_examples), chats("eval", data.eval_examples), kind, "built-in world")
  result = sources.load_config(data, _record_kind, s.formatting, limit=data.max_examples or None)
  formatting = result.formatting
  records = result.records
  if data.eval_split:  # a split of its own (hub ids, save_to_disk DatasetDicts), read the same way
    held = sources.load_config(data, _record_kind, s.formatting, split=data.eval_split).records
    train_records, eval_records = records, held
  else:
    train_records, eval_records = text.split_documents(records, data.eval_fraction, config.seed)
  if _record_kind(formatting) == "classification":
    train_records = [classification_chat(r, s.instruction) for r in train_records]
    eval_records = [classification_chat(r, s.instruction) for r in eval_records]
  kind = s.eval_kind
  if kind == "auto":
    kind = {"classification": "classification", "gsm8k": "answer"}.get(formatting, "")
  return ChatData(train_records, eval_records, kind, result.source, result.skipped)


def references(chats: list[dict], kind: str) -> tuple[list[list[dict]], list[str], list[str]]:
  """(prompt turns, reference answers, tools) of held-out conversations."""
  prompts = [c["messages"][:-1] for c in chats]
  refs = [c["messages"][-1]["content"] for c in chats]
  if kind == "answer":
    refs = [answers.extract_final_answer(r) or r for r in refs]
  return prompts, refs, [c.get("tools", "") for c in chats]
