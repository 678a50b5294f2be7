"""Row dicts -> records, one parser per formatting (alpaca, sharegpt, hh_rlhf, gsm8k, classification, text; the
TRL / OpenAI ones, messages, prompt_completion and preference, live in trl_formats.py),
then conversion of a parsed conversation to the record kind a stage asked for (chat, preference, text).

The semantics (LLaMA-Factory's, with the additions listed) are documented in `sources.py`, the module stages
call. Parsers raise `RowError` with the column at fault; the caller adds the file and row.
"""
from __future__ import annotations

import dataclasses
import json
import re
from typing import Any, Callable

from jaxllm.data import trl_formats
from jaxllm.data.files import RowError, short
from jaxllm.data.registry import TAG_DEFAULTS

_JOIN = "\n\n"  # between turns when chat data is read as plain text


@dataclasses.dataclass(frozen=True)
class Spec:
  formatting: str
  ranking: bool
  columns: dict  # resolved column names (None = unset)
  tags: dict  # resolved tags (None = unset)
  columns_given: bool


def make_spec(formatting: str, ranking: bool, columns: dict | None, tags: dict | None) -> Spec:
  given = columns is not None
  cols = dict(columns or {})
  if formatting == "alpaca":  # a columns dict replaces the defaults, as in LLaMA-Factory
    defaults = {} if given else {"prompt": "instruction", "query": "input", "response": "output"}
    resolved = {k: cols.get(k, defaults.get(k)) for k in ("prompt", "query", "response", "history", "system",
                                                           "tools")}
  elif formatting == "sharegpt":
    resolved = {"messages": cols.get("messages", "conversations"), "system": cols.get("system"),
                "tools": cols.get("tools")}
  elif formatting == "messages":
    resolved = {"messages": cols.get("messages", "messages")}
  elif formatting in ("gsm8k", "classification", "text"):
    prompt, response = {"gsm8k": ("question", "answer"), "classification": ("text", "label"),
                        "text": ("text", None)}[formatting]
    resolved = {"prompt": cols.get("prompt", prompt), "response": cols.get("response", response)}
  else:
    resolved = {}
  resolved["chosen"] = cols.get("chosen", "chosen")
  resolved["rejected"] = cols.get("rejected", "rejected")
  tag = dict(TAG_DEFAULTS)
  if tags is not None:  # role/content/user/assistant tags cannot meaningfully be unset: keep their defaults
    tag.update({k: tags.get(k) for k in ("observation_tag", "function_tag", "system_tag")})
    tag.update({k: v for k, v in tags.items() if v is not None})
  return Spec(formatting, ranking, resolved, tag, given)


def _get(row: dict, col: str, *, required: bool = True, nonempty: str = "") -> str | None:
  """row[col] as a string; None when absent or null and not required. `nonempty` names an empty value."""
  value = row.get(col)
  if value is None:
    if required:
      raise RowError(f"missing required column {col!r} (row has {', '.join(map(repr, row)) or 'no columns'})")
    return None
  if not isinstance(value, str):
    raise RowError(f"column {col!r} must be a string, got {type(value).__name__}: {short(value)}")
  if nonempty and not value.strip():
    raise RowError(f"{nonempty} (column {col!r} is {short(value)})")
  return value


def _tools(row: dict, col: str | None) -> str:
  value = row.get(col) if col else None
  if value is None:
    return ""
  if isinstance(value, (list, dict)):
    return json.dumps(value, ensure_ascii=False)
  if not isinstance(value, str):
    raise RowError(f"column {col!r} must be a string (or JSON list), got {type(value).__name__}")
  return value


def _check(conv: dict) -> dict:
  """Rules shared by every chat-like format: users say something, answers are non-empty and pairs differ."""
  for i, m in enumerate(conv["prompt"]):
    if m["role"] == "user" and not m["content"].strip():
      raise RowError(f"empty user prompt (turn {i + 1}: {short(m['content'])})")
  names = ("chosen", "rejected") if len(conv["response"]) == 2 else ("answer",)
  for name, m in zip(names, conv["response"]):
    if not m["content"].strip():
      raise RowError(f"empty {name} ({short(m['content'])})" if name == "answer" else
                      f"empty {name} answer ({short(m['content'])})")
  if len(conv["response"]) == 2 and conv["response"][0]["content"] == conv["response"][1]["content"]:
    raise RowError(f"chosen and rejected are identical: {short(conv['response'][0]['content'])}")
  return conv


def _alpaca(row: dict, spec: Spec, need_answer: bool) -> dict:
  c = spec.columns
  prompt = []
  history = row.get(c["history"]) if c["history"] else None
  if history is not None:
    if not isinstance(history, list):
      raise RowError(f"column {c['history']!r} must be a list of [prompt, response] pairs, got {short(history)}")
    for i, pair in enumerate(history):
      if not (isinstance(pair, (list, tuple)) and len(pair) == 2 and all(isinstance(p, str) for p in pair)):
        raise RowError(f"{c['history']}[{i}] must be a [prompt, response] pair of strings, got {short(pair)}")
      prompt += [{"role": "user", "content": pair[0]}, {"role": "assistant", "content": pair[1]}]
  parts = [_get(row, c["prompt"]) if c["prompt"] else None,
           _get(row, c["query"], required=False) if c["query"] else None]
  prompt.append({"role": "user", "content": "\n".join(p for p in parts if p)})  # "prompt\nquery"
  if spec.ranking:
    response = [{"role": "assistant", "content": _get(row, c[side])} for side in ("chosen", "rejected")]
  elif c["response"] and (need_answer or row.get(c["response"]) is not None):
    response = [{"role": "assistant", "content": _get(row, c["response"])}]
  else:  # unsupervised, e.g. {"prompt": "text"} for pretraining
    response = []
  system = (_get(row, c["system"], required=False) if c["system"] else None) or ""
  return _check({"system": system, "prompt": prompt, "response": response, "tools": _tools(row, c["tools"])})


def _sharegpt(row: dict, spec: Spec, need_answer: bool) -> dict:
  c, t = spec.columns, spec.tags
  col = c["messages"]
  messages = row.get(col)
  if messages is None:
    raise RowError(f"missing required column {col!r} (row has {', '.join(map(repr, row))})")
  if not isinstance(messages, list):
    raise RowError(f"column {col!r} must be a list of messages, got {type(messages).__name__}")
  role_of = {t["user_tag"]: "user", t["assistant_tag"]: "assistant", t["observation_tag"]: "tool",
             t["function_tag"]: "function_call", t["system_tag"]: "system"}
  role_of.pop(None, None)
  odd = tuple(x for x in (t["user_tag"], t["observation_tag"]) if x is not None)  # 1st, 3rd, ... turn
  even = tuple(x for x in (t["assistant_tag"], t["function_tag"]) if x is not None)

  def turn(m: Any, label: str) -> tuple[Any, str]:
    if not isinstance(m, dict):
      raise RowError(f"{label} must be a message object, got {type(m).__name__}: {short(m)}")
    for key in (t["role_tag"], t["content_tag"]):
      if key not in m:
        raise RowError(f"{label} has no {key!r} key (keys: {', '.join(map(repr, m))})")
    if not isinstance(m[t["content_tag"]], str):
      raise RowError(f"{label}[{t['content_tag']!r}] must be a string, got {short(m[t['content_tag']])}")
    return m[t["role_tag"]], m[t["content_tag"]]

  turns = [turn(m, f"{col}[{i}]") for i, m in enumerate(messages)]
  start = 1 if t["system_tag"] is not None and turns and turns[0][0] == t["system_tag"] else 0
  system = turns[0][1] if start else ((_get(row, c["system"], required=False) if c["system"] else None) or "")
  turns = turns[start:]
  for j, (tag, _) in enumerate(turns):
    allowed = (odd, even)[j % 2]
    if tag not in allowed:
      raise RowError(f"{col}[{j + start}]: role {short(tag)} at turn {j + 1} (after an optional system turn) "
                      f"must be one of {list(allowed)} (turns alternate {list(odd)} / {list(even)})")
  if not turns:
    raise RowError(f"column {col!r} has no turns")
  if len(turns) % 2 != int(spec.ranking):
    raise RowError(f"column {col!r} has {len(turns)} turns; " +
                    ("a ranking prompt must end with a user turn (odd count)" if spec.ranking else
                     "a conversation must end with an assistant turn (even count)"))
  prompt = [{"role": role_of[tag], "content": content} for tag, content in turns]
  if spec.ranking:
    response = []
    for side in ("chosen", "rejected"):
      if row.get(c[side]) is None:
        raise RowError(f"missing required column {c[side]!r} (row has {', '.join(map(repr, row))})")
      tag, content = turn(row[c[side]], c[side])
      if tag not in even:
        raise RowError(f"{c[side]}: role {short(tag)} must be one of {list(even)}")
      response.append({"role": role_of[tag], "content": content})
  else:
    prompt, response = prompt[:-1], prompt[-1:]
  return _check({"system": system, "prompt": prompt, "response": response, "tools": _tools(row, c["tools"])})


_HH_TURN = re.compile(r"(?:\A\s*|\n\n)(Human|Assistant):")


def split_hh_transcript(text: str) -> list[dict]:
  """'\\n\\nHuman: a\\n\\nAssistant: b' -> [{"role": "user", "content": "a"}, {"role": "assistant", ...}].

  Turns start at "\\n\\nHuman:" / "\\n\\nAssistant:"; contents are stripped; they must alternate, starting with
  Human and ending with Assistant (ValueError otherwise).
  """
  pieces = _HH_TURN.split(text)
  if pieces[0].strip() or len(pieces) < 3:
    raise ValueError(f"transcript must start with 'Human:', got {short(text)}")
  turns = []
  for i, (who, content) in enumerate(zip(pieces[1::2], pieces[2::2])):
    expected = ("Human", "Assistant")[i % 2]
    if who != expected:
      raise ValueError(f"turn {i + 1} is {who!r}, expected {expected!r} (turns must alternate)")
    turns.append({"role": "user" if who == "Human" else "assistant", "content": content.strip()})
  if turns[-1]["role"] != "assistant":
    raise ValueError(f"transcript must end with an 'Assistant:' turn ({len(turns)} turns)")
  return turns


def _hh_rlhf(row: dict, spec: Spec, need_answer: bool) -> dict:
  sides = []
  for side in ("chosen", "rejected"):
    col = spec.columns[side]
    try:
      sides.append(split_hh_transcript(_get(row, col)))
    except ValueError as e:
      raise RowError(f"column {col!r}: {e}") from None
  (chosen, rejected) = sides
  if chosen[:-1] != rejected[:-1]:
    k = next((i for i, (a, b) in enumerate(zip(chosen[:-1], rejected[:-1])) if a != b),
             min(len(chosen), len(rejected)) - 1)
    raise RowError(f"chosen and rejected differ before their final Assistant turn (first at turn {k + 1}: "
                    f"{short(chosen[k]['content'], 40)} vs {short(rejected[k]['content'], 40)})")
  return _check({"system": "", "prompt": chosen[:-1], "response": [chosen[-1], rejected[-1]], "tools": ""})


def _gsm8k(row: dict, spec: Spec) -> dict:
  question = _get(row, spec.columns["prompt"], nonempty="empty user prompt")
  solution = _get(row, spec.columns["response"], nonempty="empty answer")
  if "####" not in solution:
    raise RowError(f"column {spec.columns['response']!r} has no '####' final-answer marker: {short(solution)}")
  answer = solution.rsplit("####", 1)[1].strip().replace(",", "")
  if not answer:
    raise RowError(f"empty answer after '####' in column {spec.columns['response']!r}")
  return {"question": question, "solution": solution, "answer": answer}


def _classification(row: dict, spec: Spec, with_label: bool) -> dict:
  text = _get(row, spec.columns["prompt"], nonempty="empty text")
  if not with_label:
    return {"text": text}
  col = spec.columns["response"]
  if isinstance(row.get(col), int) and not isinstance(row[col], bool):
    row = {**row, col: str(row[col])}  # integer labels from JSON / Parquet
  return {"text": text, "label": _get(row, col, nonempty="empty label").strip()}


# -------------------------------------------------------------------------------------- kinds from conversations

def _messages(conv: dict) -> list[dict]:
  return ([{"role": "system", "content": conv["system"]}] if conv["system"] else []) + conv["prompt"]


def _as_chat(conv: dict) -> dict:
  if not conv["response"]:
    raise RowError("no answer (the dataset has no response column); chat needs one")
  return {"messages": _messages(conv) + conv["response"][:1], "tools": conv["tools"]}  # ranking: the chosen one


def _as_preference(conv: dict) -> dict:
  return {"messages": _messages(conv), "chosen": conv["response"][0]["content"],
          "rejected": conv["response"][1]["content"]}


def _as_text(conv: dict) -> dict:
  text = _JOIN.join(m["content"] for m in _messages(conv) + conv["response"][:1] if m["content"].strip())
  if not text.strip():
    raise RowError("empty text")
  return {"text": text}


_AS = {"chat": _as_chat, "preference": _as_preference, "text": _as_text}
_PARSERS = {"alpaca": _alpaca, "sharegpt": _sharegpt, "hh_rlhf": _hh_rlhf,
            **{f: lambda row, spec, need, parse=getattr(trl_formats, f): _check(parse(row, spec, need))
               for f in ("messages", "prompt_completion", "preference")}}


def row_fn(spec: Spec, kind: str) -> Callable[[dict], dict]:
  f = spec.formatting
  if f == "text":
    return lambda row: {"text": _get(row, spec.columns["prompt"], nonempty="empty text")}
  if f == "classification":
    return lambda row: _classification(row, spec, with_label=kind == "classification")
  if f == "gsm8k":
    def gsm8k(row: dict) -> dict:
      rec = _gsm8k(row, spec)
      if kind == "gsm8k":
        return rec
      return _AS[kind]({"system": "", "prompt": [{"role": "user", "content": rec["question"]}],
                        "response": [{"role": "assistant", "content": rec["solution"]}], "tools": ""})
    return gsm8k
  parse = _PARSERS[f]

  def chat_like(row: dict) -> dict:
    if kind == "text" and f == "alpaca" and not spec.columns_given and "text" in row and "instruction" not in row:
      return {"text": _get(row, "text", nonempty="empty text")}  # a plain {"text"} corpus without a remap
    return _AS[kind](parse(row, spec, kind != "text"))
  return chat_like
