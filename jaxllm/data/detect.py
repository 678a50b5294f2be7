"""The format of a dataset told from its first row's columns, for data given without a `formatting`.

  messages (list of {role, content})                    messages (OpenAI / TRL, tool_calls included)
  conversations                                         sharegpt (from/value, or role/content tags); with
                                                        chosen / rejected: ranking
  chosen + rejected, transcripts "\\n\\nHuman: ..."      hh_rlhf
  chosen + rejected (+ prompt), strings or messages      preference (TRL); with instruction: alpaca ranking
  prompt + completion                                   prompt_completion
  instruction (+ input, output)                         alpaca
  question + answer                                     gsm8k
  text (+ label) / label + one text column              text / classification
An explicit formatting (dataset_info.json, sft.formatting) is never second-guessed.
"""
from __future__ import annotations

import dataclasses

from jaxllm.data.files import DataError

_OPENAI_TAGS = {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant",
                "observation_tag": "tool", "function_tag": "function_call", "system_tag": "system"}


@dataclasses.dataclass(frozen=True)
class Detected:
  formatting: str
  ranking: bool = False
  columns: dict | None = None
  tags: dict | None = None


def _is_messages(value) -> bool:
  return isinstance(value, list) and bool(value) and all(isinstance(m, dict) and "role" in m for m in value)


def detect(row: dict, source: str) -> Detected:
  """The formatting of rows like `row` (DataError naming the columns when none fits)."""
  cols = set(row)
  pair = {"chosen", "rejected"} <= cols
  if _is_messages(row.get("messages")):
    return Detected("messages")
  if isinstance(row.get("conversations"), list):
    first = next((m for m in row["conversations"] if isinstance(m, dict)), {})
    tags = _OPENAI_TAGS if "role" in first else None
    return Detected("sharegpt", ranking=pair, columns={"messages": "conversations", "system": "system",
                                                        "tools": "tools"}, tags=tags)
  if pair:
    chosen = row["chosen"]
    if isinstance(chosen, str) and chosen.lstrip(" ").startswith(("\n\nHuman:", "Human:")) and "prompt" not in cols:
      return Detected("hh_rlhf", ranking=True)
    if "instruction" in cols:
      return Detected("alpaca", ranking=True)
    return Detected("preference", ranking=True)
  if {"prompt", "completion"} <= cols:
    return Detected("prompt_completion")
  if "instruction" in cols:
    return Detected("alpaca")
  if {"question", "answer"} <= cols:
    return Detected("gsm8k")
  texts = [c for c in cols - {"label"} if isinstance(row[c], str)]
  if "label" in cols and ("text" in cols or len(texts) == 1):
    return Detected("classification", columns={"prompt": "text" if "text" in cols else texts[0], "response": "label"})
  if "text" in cols:
    return Detected("text")
  raise DataError(f"{source}: cannot tell the data format from the columns {sorted(cols)}; expected messages, "
                  f"conversations, chosen/rejected, prompt/completion, instruction/output, question/answer or text "
                  f"(or set the formatting: dataset_info.json 'formatting', sft.formatting)")
