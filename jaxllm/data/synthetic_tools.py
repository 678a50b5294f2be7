"""The built-in world's tool-use and "I don't know" data, built on jaxllm/data/synthetic.py's problems.

Tool use (`data.tools=calculator`): each arithmetic step of a worked solution becomes a calculator call and its
result, then the usual answer:

  user           Mia has 7 apples. She buys 5 more apples. Then she sells 3 apples. How many ... left?
  function_call  {"name": "calculator", "arguments": {"expression": "7 + 5"}}   (rendered as <tool_call>...)
  tool           12
  function_call  {"name": "calculator", "arguments": {"expression": "12 - 3"}}
  tool           9
  assistant      7 + 5 = 12\\n12 - 3 = 9\\n#### 9

Unanswerable problems (`data.unanswerable`): the same problem with one of its given numbers replaced by a vague
word ("Mia has some apples."), answered by REFUSAL. Which problems (a seeded share of the list) is drawn from
its own stream, so the answerable ones are exactly synthetic.problems' (the same questions with or without it).
"""
from __future__ import annotations

import json
import random
import re

from jaxllm.data import synthetic

REFUSAL = "I don't know: the question does not give every number needed."
# The tool demonstrations' system turn names the tool instead of carrying its JSON schema (~250 tokens of a
# tokenizer trained on this world's prose, several times the rest of the example); a user's own data and
# models that know tools get the schema (jaxllm.tools.describe) instead.
TOOLS_SYSTEM_PROMPT = ("Solve the problem. Use the calculator for each step, then show your steps and give the "
                       "answer after ####.")
_VAGUE = ("some", "a few", "several")
_PLURAL = {s: p for s, p in synthetic._ITEMS + synthetic._CONTAINERS} | {"dollar": "dollars"}
# a given quantity: "7 apples", "5 more apples", "4 dollars", "3 boxes" (the word after the number names it)
_QUANTITY_RE = re.compile(r"\b(\d+) (more )?([a-z]+)")


def is_refusal(text: str) -> bool:
  return "i don't know" in text.lower()


def price_table() -> dict[str, str]:
  """The lookup tool's built-in table: a fixed price for every item of the world (and its plural)."""
  table = {}
  for i, (one, many) in enumerate(synthetic._ITEMS):
    table[one] = table[many] = f"{2 + i % 9} dollars"
  return table


def make_unanswerable(problem: synthetic.Problem, rng: random.Random) -> str:
  """The problem's question with one given number replaced by a vague word."""
  ask_at = problem.question.index(" How many")
  setup, ask = problem.question[:ask_at], problem.question[ask_at:]
  found = list(_QUANTITY_RE.finditer(setup))
  m = found[rng.randrange(len(found))]
  noun = _PLURAL.get(m[3], m[3])
  return f"{setup[:m.start()]}{rng.choice(_VAGUE)} {m[2] or ''}{noun}{setup[m.end():]}{ask}"


def _tool_turns(problem: synthetic.Problem) -> list[dict]:
  turns = []
  for step in problem.steps:
    a, op, b, c = synthetic.parse_step(step)
    call = {"name": "calculator", "arguments": {"expression": f"{a} {op} {b}"}}
    turns += [{"role": "function_call", "content": json.dumps(call)}, {"role": "tool", "content": str(c)}]
  return turns


def chats(seed: int, split: str, n: int, *, tools: list[str] = (), unanswerable: float = 0.0,
          first_step_only: float = 0.0) -> list[dict]:
  """{"messages", "tools"} records: `synthetic.sft_examples`, with calculator calls per step when `tools` holds
  "calculator", and a seeded `unanswerable` share of the problems made unanswerable and refused."""
  if not 0.0 <= unanswerable <= 1.0:
    raise ValueError(f"data.unanswerable must be in [0, 1], got {unanswerable}")
  unknown = set(tools) - {"calculator"}
  if unknown:
    raise ValueError(f"data.tools: the built-in world has demonstrations for calculator only, got {sorted(unknown)}")
  plain = synthetic.sft_examples(seed, split, n, first_step_only=first_step_only)
  rng = random.Random(synthetic._stable_int("jaxllm.synthetic_tools", "unanswerable", split, int(seed)))
  out = []
  for problem, messages in zip(synthetic.problems(seed, split, n), plain):
    prompt = prompt_turns(problem.question, tools)
    if rng.random() < unanswerable:
      messages = [*prompt_turns(make_unanswerable(problem, rng), tools), {"role": "assistant", "content": REFUSAL}]
    elif tools:
      messages = [*prompt, *_tool_turns(problem), {"role": "assistant", "content": problem.solution}]
    out.append({"messages": messages, "tools": ""})
  return out


def prompt_turns(question: str, tools: list[str] | tuple[str, ...] = ()) -> list[dict]:
  """The system and user turns of a problem, as the demonstrations (with or without tools) show them."""
  system = TOOLS_SYSTEM_PROMPT if tools else synthetic.SYSTEM_PROMPT
  return [{"role": "system", "content": system}, {"role": "user", "content": question}]


def answer_items(seed: int, split: str, n: int, tools: list[str] = ()) -> tuple[list[list[dict]], list[str]]:
  """(prompt conversations, reference answers) of n problems: what the eval stage asks."""
  ps = synthetic.problems(seed, split, n)
  return [prompt_turns(p.question, tools) for p in ps], [str(p.answer) for p in ps]


def unanswerable_prompts(seed: int, split: str, n: int, tools: list[str] = ()) -> list[list[dict]]:
  """n prompt conversations whose question lacks a number: the refusal-rate probe."""
  rng = random.Random(synthetic._stable_int("jaxllm.synthetic_tools", "probe", split, int(seed)))
  return [prompt_turns(make_unanswerable(p, rng), tools) for p in synthetic.problems(seed, split, n)]


def rl_prompts(seed: int, split: str, n: int, tools: list[str] = ()) -> list[dict]:
  """GRPO prompts {"messages", "answer"}, asked as the SFT demonstrations asked (with tools: the tool prompt)."""
  conversations, answers = answer_items(seed, split, n, tools)
  return [{"messages": m, "answer": a} for m, a in zip(conversations, answers)]
