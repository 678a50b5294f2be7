"""Tools a model may call while it generates, by name (`tools.names`), and the one place a call is run.

  tools = registry("calculator,lookup", table_path="")
  describe(tools)                          # the JSON list shown to the model in the system turn
  run_call(tools, '<tool_call>\\n{"name": "calculator", "arguments": {"expression": "2 + 3"}}\\n</tool_call>')
                                           # -> "5"; any failure -> "error: ..." (never an exception)

A tool is a name, a description, a JSON-schema of its arguments and a function arguments -> text. The engine
loop that stops a generation at a call and feeds the result back is jaxllm/tools/loop.py.
"""
from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable

from jaxllm.tools import calculator, calls, lookup

MAX_RESULT_CHARS = 500  # a longer tool result is cut (the model reads it as context)


@dataclasses.dataclass(frozen=True)
class Tool:
  name: str
  description: str
  parameters: dict
  run: Callable[[dict], str]

  def schema(self) -> dict:
    return {"name": self.name, "description": self.description, "parameters": self.parameters}


def _calculator(_: str) -> Tool:
  return Tool(calculator.NAME, calculator.DESCRIPTION, calculator.PARAMETERS, calculator.run)


def _lookup(table_path: str) -> Tool:
  if table_path:
    table = lookup.load_table(table_path)
  else:
    from jaxllm.data import synthetic_tools  # the built-in world's table
    table = synthetic_tools.price_table()
  return Tool(lookup.NAME, lookup.DESCRIPTION, lookup.PARAMETERS, lookup.make(table))


BUILDERS: dict[str, Callable[[str], Tool]] = {"calculator": _calculator, "lookup": _lookup}


def parse_names(names: str) -> list[str]:
  return [n.strip() for n in names.split(",") if n.strip()]


def registry(names: str, table_path: str = "") -> dict[str, Tool]:
  """The tools named in a comma-separated list ('' = none); an unknown name raises ValueError naming it."""
  out = {}
  for name in parse_names(names):
    if name not in BUILDERS:
      raise ValueError(f"tools.names: unknown tool {name!r}; known: {', '.join(BUILDERS)}")
    out[name] = BUILDERS[name](table_path)
  return out


def describe(tools: dict[str, Tool]) -> str:
  """The tools' schemas as the JSON list a chat's `tools` field carries ('' when there are none)."""
  return json.dumps([t.schema() for t in tools.values()]) if tools else ""


def run_call(tools: dict[str, Tool], text: str) -> str:
  """The result of the first call in `text`, as the text of a `tool` turn; an error string when the call is
  malformed, names no known tool, or the tool fails."""
  call = calls.parse_call(text)
  if isinstance(call, str):
    return call
  tool = tools.get(call.name)
  if tool is None:
    return f"error: unknown tool {call.name!r}; available: {', '.join(tools) or 'none'}"
  try:
    result = tool.run(call.arguments)
  except Exception as e:  # a tool's bug must not end the generation: the model reads it as an error
    result = f"error: {call.name} failed: {type(e).__name__}: {e}"
  return str(result)[:MAX_RESULT_CHARS]
