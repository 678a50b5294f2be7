"""The tool-call format: a JSON call in a marked span, as Qwen / Hermes-style templates write it,

  <tool_call>
  {"name": "calculator", "arguments": {"expression": "7 + 5"}}
  </tool_call>

and its reading back from generated text. The closing marker is the stop sequence: generated text is cut right
after the first `</tool_call>` (anything a model writes after it is dropped, as an API's `stop` does).
"""
from __future__ import annotations

import dataclasses
import json

OPEN = "<tool_call>"
CLOSE = "</tool_call>"


@dataclasses.dataclass(frozen=True)
class Call:
  name: str
  arguments: dict


def format_call(name: str, arguments: dict) -> str:
  """The call as a model writes it (and as the built-in template renders a `function_call` turn)."""
  return f"{OPEN}\n{json.dumps({'name': name, 'arguments': arguments})}\n{CLOSE}"


def render_function_call(content: str) -> str:
  """A `function_call` turn's content (LLaMA-Factory's {"name", "arguments"} JSON or a list of them, or text
  that already holds marked calls) as marked calls."""
  if OPEN in content:
    return content
  try:
    calls = json.loads(content)
  except json.JSONDecodeError:
    return content  # free text the data calls a function call: shown as written
  calls = calls if isinstance(calls, list) else [calls]
  if not all(isinstance(c, dict) and "name" in c for c in calls):
    return content
  return "\n".join(format_call(c["name"], c.get("arguments", {})) for c in calls)


def cut_after_call(text: str) -> str | None:
  """`text` up to and including its first closing marker, or None when it makes no (closed) call."""
  end = text.find(CLOSE)
  if end < 0 or text.rfind(OPEN, 0, end) < 0:
    return None
  return text[:end + len(CLOSE)]


def parse_call(text: str) -> Call | str:
  """The first marked call in `text`, or an error string (for the model to read) when it is malformed."""
  start, end = text.find(OPEN), text.find(CLOSE)
  if start < 0 or end < start:
    return f"error: no {OPEN}...{CLOSE} span"
  body = text[start + len(OPEN):end].strip()
  try:
    call = json.loads(body)
  except json.JSONDecodeError as e:
    return f"error: the call is not JSON ({e.msg} at {e.pos})"
  if not isinstance(call, dict) or not isinstance(call.get("name"), str):
    return 'error: a call is {"name": ..., "arguments": {...}}'
  arguments = call.get("arguments", {})
  if isinstance(arguments, str):  # some templates write the arguments as a JSON string
    try:
      arguments = json.loads(arguments)
    except json.JSONDecodeError:
      return "error: arguments is a string that is not JSON"
  if not isinstance(arguments, dict):
    return "error: arguments must be a JSON object"
  return Call(call["name"], arguments)


def unmark(content: str) -> str:
  """A `function_call` turn's marked calls as LLaMA-Factory's JSON (a list when there are several), for
  templates that write calls themselves from `tool_calls`; unmarked content is returned as it is."""
  if OPEN not in content:
    return content
  found = []
  rest = content
  while (cut := cut_after_call(rest)) is not None:
    call = parse_call(cut)
    if isinstance(call, Call):
      found.append({"name": call.name, "arguments": call.arguments})
    rest = rest[len(cut):]
  if not found:
    return content
  return json.dumps(found[0] if len(found) == 1 else found)
