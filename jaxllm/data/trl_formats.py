"""Row parsers for the formats TRL and the OpenAI API use (formats.py holds LLaMA-Factory's):

  messages           {"messages": [{"role", "content"}, ...], "tools": [...]}: roles system / user / assistant /
                     tool; an assistant message's `tool_calls` ([{"function": {"name", "arguments"}}]) becomes a
                     function_call turn whose content is the call as JSON {"name", "arguments"} (a list when
                     there are several), the glaive / LLaMA-Factory convention the chat template renders
  prompt_completion  {"prompt": str | messages, "completion": str | messages}
  preference         {"prompt": str | messages (optional), "chosen": str | messages, "rejected": str | messages};
                     without a prompt column the two message lists share every turn before their last one
                     (TRL's implicit prompt)

Each returns the conversation dict formats.py converts to records: {"system", "prompt", "response", "tools"}.
"""
from __future__ import annotations

import json
from typing import Any

from jaxllm.data.files import RowError, short

ROLES = ("system", "user", "assistant", "tool")


def _content(m: dict, label: str) -> str:
  content = m.get("content")
  if content is None:
    return ""
  if isinstance(content, list):  # OpenAI content parts: [{"type": "text", "text": ...}, ...]
    texts = []
    for j, part in enumerate(content):
      if not (isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str)):
        raise RowError(f"{label}.content[{j}]: only text parts are supported, got {short(part)}")
      texts.append(part["text"])
    return "".join(texts)
  if not isinstance(content, str):
    raise RowError(f"{label}.content must be a string (or a list of text parts), got {short(content)}")
  return content


def _call(call: Any, label: str) -> dict:
  fn = call.get("function", call) if isinstance(call, dict) else None
  if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
    raise RowError(f"{label}: a tool call needs a function name ({{'function': {{'name', 'arguments'}}}}), "
                   f"got {short(call)}")
  args = fn.get("arguments", {})
  if isinstance(args, str):  # the OpenAI API sends arguments as a JSON string
    try:
      args = json.loads(args)
    except json.JSONDecodeError:
      raise RowError(f"{label}: arguments of {fn['name']!r} are not valid JSON: {short(args)}") from None
  return {"name": fn["name"], "arguments": args}


def message_turns(messages: Any, col: str) -> list[dict]:
  """OpenAI / TRL messages -> [{"role", "content"}] in the chat roles (tool calls as function_call turns)."""
  if not isinstance(messages, list):
    raise RowError(f"column {col!r} must be a list of messages, got {type(messages).__name__}")
  turns = []
  for i, m in enumerate(messages):
    label = f"{col}[{i}]"
    if not isinstance(m, dict):
      raise RowError(f"{label} must be a message object, got {type(m).__name__}: {short(m)}")
    role = m.get("role")
    if role not in ROLES:
      raise RowError(f"{label}: role {short(role)} must be one of {', '.join(ROLES)}")
    content = _content(m, label)
    calls = m.get("tool_calls")
    if calls:
      if role != "assistant" or not isinstance(calls, list):
        raise RowError(f"{label}: tool_calls must be a list on an assistant message, got {short(calls)}")
      parsed = [_call(c, f"{label}.tool_calls[{j}]") for j, c in enumerate(calls)]
      call_text = json.dumps(parsed[0] if len(parsed) == 1 else parsed, ensure_ascii=False)
      turns.append({"role": "function_call", "content": f"{content}\n{call_text}" if content.strip() else call_text})
    else:
      turns.append({"role": role, "content": content})
  return turns


def _split_system(turns: list[dict]) -> tuple[str, list[dict]]:
  if turns and turns[0]["role"] == "system":
    return turns[0]["content"], turns[1:]
  return "", turns


def _tools(row: dict) -> str:
  value = row.get("tools")
  if value is None or value == "" or value == []:
    return ""
  return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _answer(turns: list[dict], col: str) -> dict:
  if not turns or turns[-1]["role"] not in ("assistant", "function_call"):
    raise RowError(f"column {col!r} must end with an assistant message (got "
                   f"{turns[-1]['role'] if turns else 'no messages'})")
  return turns[-1]


def _prompt(value: Any, col: str) -> list[dict]:
  if isinstance(value, str):
    return [{"role": "user", "content": value}]
  return message_turns(value, col)


def messages(row: dict, spec: Any, need_answer: bool) -> dict:
  col = spec.columns.get("messages") or "messages"
  if row.get(col) is None:
    raise RowError(f"missing required column {col!r} (row has {', '.join(map(repr, row))})")
  system, turns = _split_system(message_turns(row[col], col))
  if not turns:
    raise RowError(f"column {col!r} has no turns besides the system prompt")
  answer = _answer(turns, col)
  return {"system": system, "prompt": turns[:-1], "response": [answer], "tools": _tools(row)}


def prompt_completion(row: dict, spec: Any, need_answer: bool) -> dict:
  for col in ("prompt", "completion"):
    if row.get(col) is None:
      raise RowError(f"missing required column {col!r} (row has {', '.join(map(repr, row))})")
  system, prompt = _split_system(_prompt(row["prompt"], "prompt"))
  completion = row["completion"]
  turns = [{"role": "assistant", "content": completion}] if isinstance(completion, str) else \
      message_turns(completion, "completion")
  answer = _answer(turns, "completion")
  return {"system": system, "prompt": prompt + turns[:-1], "response": [answer], "tools": _tools(row)}


def preference(row: dict, spec: Any, need_answer: bool) -> dict:
  cols = {side: spec.columns.get(side) or side for side in ("chosen", "rejected")}
  for col in cols.values():
    if row.get(col) is None:
      raise RowError(f"missing required column {col!r} (row has {', '.join(map(repr, row))})")
  chosen, rejected = row[cols["chosen"]], row[cols["rejected"]]
  if row.get("prompt") is not None:
    system, prompt = _split_system(_prompt(row["prompt"], "prompt"))
    sides = []
    for col, value in zip(cols.values(), (chosen, rejected)):
      turns = [{"role": "assistant", "content": value}] if isinstance(value, str) else message_turns(value, col)
      if len(turns) != 1:
        raise RowError(f"column {col!r}: expected one answer message after the prompt, got {len(turns)}")
      sides.append(_answer(turns, col))
  else:
    if isinstance(chosen, str) or isinstance(rejected, str):
      raise RowError("chosen / rejected strings need a 'prompt' column (or give message lists that share it)")
    c_turns, r_turns = message_turns(chosen, cols["chosen"]), message_turns(rejected, cols["rejected"])
    if c_turns[:-1] != r_turns[:-1]:
      raise RowError(f"columns {cols['chosen']!r} and {cols['rejected']!r} must share every message before "
                     f"their last (the implicit prompt)")
    sides = [_answer(c_turns, cols["chosen"]), _answer(r_turns, cols["rejected"])]
    system, prompt = _split_system(c_turns[:-1])
  if not prompt:
    raise RowError("empty prompt (no user message before the answers)")
  return {"system": system, "prompt": prompt, "response": sides, "tools": _tools(row)}
