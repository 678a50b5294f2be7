"""Chat messages -> token ids and a loss mask, ChatML style:

  <|im_start|>{role}\n{content}<|im_end|>\n   ...   generation prompt: <|im_start|>assistant\n

Control tokens are inserted by id; message text is always encoded as plain text, so a user who types
"<|im_end|>" gets those characters, never the control token. By default only the last assistant turn carries
loss (its content and its closing <|im_end|>); `train_on="all"` also learns from earlier assistant turns, as
LLaMA-Factory's `mask_history=False` does.

Tool-calling data (a `tools` description string) is shown to the model in the system turn, after the system
prompt if there is one, as LLaMA-Factory's templates do. A `function_call` turn is the assistant's call, written
as Qwen / Hermes templates write it: `<tool_call>\n{"name": ..., "arguments": ...}\n</tool_call>`
(jaxllm/tools/calls.py); a `tool` turn holds the result. Tool turns never carry loss.

A tokenizer that brings its own Jinja template (an imported Hugging Face folder, `HFTokenizer.chat_template`) is
rendered with that template instead, exactly as transformers' apply_chat_template renders it
(chat_template_jinja.py); the functions here are the one entry point for both, so SFT, chat, eval, DPO and GRPO
all speak the model's own format.
"""
from __future__ import annotations

import dataclasses

from jaxllm import chat_template_jinja as jinja
from jaxllm.tokenizer import Tokenizer
from jaxllm.tools import calls

ROLES = ("system", "user", "assistant", "tool", "function_call")
# Roles whose turns are the model's own output (loss-bearing); `function_call` is an assistant tool call.
ASSISTANT_ROLES = ("assistant", "function_call")
TRAIN_ON = ("last", "all")
TOOLS_HEADER = "You have access to the following tools:\n"


@dataclasses.dataclass(frozen=True)
class Rendered:
  ids: list[int]
  loss_mask: list[int]  # 1 where the token is a target the model should learn to produce
  prompt_len: int  # tokens before the first loss-bearing token (the prompt, for truncation)
  turn_starts: tuple[int, ...] = ()  # offset of each message's first token (its <|im_start|>) in ids
  system_end: int = 0  # tokens of the leading system turn (and what precedes it): kept when truncating


def _role_header(tokenizer: Tokenizer, role: str) -> list[int]:
  # A function call is spoken by the assistant; its content is the call itself.
  shown = "assistant" if role == "function_call" else role
  return [tokenizer.im_start_id] + tokenizer.encode(f"{shown}\n")


def with_tools(messages: list[dict], tools: str) -> list[dict]:
  """The conversation with the tool descriptions appended to (or forming) its system turn."""
  if not tools:
    return messages
  if messages and messages[0]["role"] == "system":
    system = {"role": "system", "content": f"{messages[0]['content']}\n\n{TOOLS_HEADER}{tools}"}
    return [system, *messages[1:]]
  return [{"role": "system", "content": TOOLS_HEADER + tools}, *messages]


def render(tokenizer: Tokenizer, messages: list[dict], *, add_generation_prompt: bool = False,
           train_on: str = "last", tools: str = "") -> Rendered:
  """Render a conversation. With add_generation_prompt, append `<|im_start|>assistant\\n` (no loss)."""
  if train_on not in TRAIN_ON:
    raise ValueError(f"train_on={train_on!r} is not one of {TRAIN_ON}")
  if _own_template(tokenizer):
    return _render_own(tokenizer, messages, add_generation_prompt, train_on, tools)
  messages = with_tools(messages, tools)
  for i, message in enumerate(messages):
    if not isinstance(message, dict) or "role" not in message or "content" not in message:
      raise ValueError(f"message {i}: expected a dict with 'role' and 'content', got {message!r:.80}")
  last_assistant = max((i for i, m in enumerate(messages) if m["role"] in ASSISTANT_ROLES), default=-1)
  ids: list[int] = []
  mask: list[int] = []
  starts: list[int] = []
  newline = tokenizer.encode("\n")
  for i, message in enumerate(messages):
    role, content = message["role"], message["content"]
    if role not in ROLES:
      raise ValueError(f"message {i}: unknown role {role!r}; expected one of {ROLES}")
    if not isinstance(content, str):
      raise ValueError(f"message {i} ({role}): content must be a string, got {type(content).__name__}")
    learn = role in ASSISTANT_ROLES and (train_on == "all" or i == last_assistant)
    header = _role_header(tokenizer, role)
    if role == "function_call":
      content = calls.render_function_call(content)
    body = tokenizer.encode(content) + [tokenizer.im_end_id]
    starts.append(len(ids))
    ids += header + body + newline
    mask += [0] * len(header) + [int(learn)] * len(body) + [0] * len(newline)
  if add_generation_prompt:
    header = _role_header(tokenizer, "assistant")
    ids += header
    mask += [0] * len(header)
  prompt_len = next((i for i, m in enumerate(mask) if m), len(ids))
  system_end = starts[1] if len(starts) > 1 and messages[0]["role"] == "system" else 0
  return Rendered(ids=ids, loss_mask=mask, prompt_len=prompt_len, turn_starts=tuple(starts), system_end=system_end)


def prompt_ids(tokenizer: Tokenizer, messages: list[dict], tools: str = "") -> list[int]:
  """Ids of a conversation that ends where the assistant should start speaking."""
  if _own_template(tokenizer):
    return _render_own(tokenizer, messages, True, "last", tools, with_mask=False).ids
  return render(tokenizer, messages, add_generation_prompt=True, tools=tools).ids


def completion_ids(tokenizer: Tokenizer, content: str) -> list[int]:
  """Ids of an assistant answer as it follows `prompt_ids`: content, end of turn (<|im_end|>), what follows it."""
  if _own_template(tokenizer):
    before, after = _renderer(tokenizer).turn_text()
    return _encode_continuation(tokenizer, before + jinja.mark(content, _renderer(tokenizer).control) + after)
  return tokenizer.encode(content) + [tokenizer.im_end_id] + tokenizer.encode("\n")


def answer_ids(tokenizer: Tokenizer, content: str) -> list[int]:
  """An answer as a sampled completion ends: content and end-of-turn token, nothing after (reward / DPO sides)."""
  ids = completion_ids(tokenizer, content)
  stops = set(stop_ids(tokenizer))
  last = max((i for i, t in enumerate(ids) if t in stops), default=len(ids) - 1)
  return ids[:last + 1]


def stop_ids(tokenizer: Tokenizer) -> tuple[int, ...]:
  """Ids that end a reply: the template's end-of-turn token(s), the eos token, generation_config's eos ids."""
  if _own_template(tokenizer):
    renderer = _renderer(tokenizer)
    _, after = renderer.turn_text()
    ids = _encode_continuation(tokenizer, after)
    ends = [i for i in ids if i in renderer.control_ids]
    named = [tokenizer.named_id("eos_token")]
    return tuple(dict.fromkeys(i for i in [*ends, *named, *tokenizer.generation_eos_ids] if i is not None))
  return (tokenizer.im_end_id, tokenizer.eot_id)


# --------------------------------------------------------------------------- the model's own Jinja template

def _own_template(tokenizer) -> bool:
  return bool(getattr(tokenizer, "chat_template", None))


def _renderer(tokenizer) -> jinja.Renderer:
  renderer = getattr(tokenizer, "_renderer", None)
  if renderer is None:
    renderer = tokenizer._renderer = jinja.Renderer(tokenizer)
  return renderer


def _encode_continuation(tokenizer, text: str) -> list[int]:
  """Ids of `text` as it continues a rendered chat (no SentencePiece prefix space at its start)."""
  return tokenizer.encode_marked(text, _renderer(tokenizer).control, first=False)[0]


def _render_own(tokenizer, messages: list[dict], add_generation_prompt: bool, train_on: str, tools,
                with_mask: bool = True) -> Rendered:
  renderer = _renderer(tokenizer)
  roles = [m.get("role") if isinstance(m, dict) else None for m in messages]
  for i, message in enumerate(messages):
    if not isinstance(message, dict) or "role" not in message:
      raise ValueError(f"message {i}: expected a dict with 'role' and 'content', got {message!r:.80}")
    if message["role"] not in ROLES:
      raise ValueError(f"message {i}: unknown role {message['role']!r}; expected one of {ROLES}")
  hf_messages = jinja.mark(jinja.to_hf_messages(messages), renderer.control)
  hf_tools = jinja.mark(jinja.parse_tools(tools), renderer.control)
  full = renderer.render_text(hf_messages, hf_tools, add_generation_prompt)
  ids, starts = tokenizer.encode_marked(full, renderer.control)
  mask = [0] * len(ids)
  if not with_mask:
    return Rendered(ids=ids, loss_mask=mask, prompt_len=len(ids))
  spans = renderer.assistant_spans(hf_messages, roles, hf_tools, full) if any(
      r in ASSISTANT_ROLES for r in roles) else []
  for n, (_, a, b) in enumerate(spans):
    if train_on == "last" and n != len(spans) - 1:
      continue
    inside = [t for t, s in enumerate(starts) if a <= s < b]
    ends = [t for t in inside if ids[t] in renderer.control_ids]
    for t in inside:
      if not ends or t <= ends[-1]:  # not the newline a template writes after the end-of-turn token
        mask[t] = 1
  turn_chars = []
  for k in range(len(messages)):
    prefix = renderer._prefix(hf_messages[:k], hf_tools, False) if k else ""
    turn_chars.append(len(prefix) if prefix is not None and full.startswith(prefix) else
                      (turn_chars[-1] if turn_chars else 0))
  turn_starts = tuple(next((t for t, s in enumerate(starts) if s >= c), len(ids)) for c in turn_chars)
  prompt_len = next((i for i, m in enumerate(mask) if m), len(ids))
  system_end = turn_starts[1] if len(turn_starts) > 1 and roles[0] == "system" else 0
  return Rendered(ids=ids, loss_mask=mask, prompt_len=prompt_len, turn_starts=turn_starts, system_end=system_end)


def tool_turn_ids(tokenizer: Tokenizer, result: str, turn_closed: bool) -> list[int]:
  """Ids that follow a generated tool call so the model reads `result` and speaks again: the call turn's end
  (unless `turn_closed`: the model already emitted its end-of-turn token), the `tool` turn holding `result`, and
  the next assistant generation prompt. In the model's own template where it has one (Qwen writes the result as
  `<tool_response>` inside a user turn), else ChatML."""
  if _own_template(tokenizer):
    return _own_tool_turn_ids(tokenizer, result, turn_closed)
  newline = tokenizer.encode("\n")
  ending = newline if turn_closed else [tokenizer.im_end_id] + newline
  return (ending + _role_header(tokenizer, "tool") + tokenizer.encode(result) + [tokenizer.im_end_id] + newline
          + _role_header(tokenizer, "assistant"))


def _own_tool_turn_ids(tokenizer, result: str, turn_closed: bool) -> list[int]:
  # Render a stand-in conversation with and without the tool turn and take the text the tool turn adds, plus
  # what the template writes after the call's closing marker (the end of the call turn).
  renderer = _renderer(tokenizer)
  call = {"role": "function_call", "content": '{"name": "tool", "arguments": {}}'}
  before = jinja.to_hf_messages([{"role": "user", "content": "?"}, call])
  after = before + [{"role": "tool", "content": result}]
  text_before = renderer.render_text(jinja.mark(before, renderer.control), None, False)
  text_after = renderer.render_text(jinja.mark(after, renderer.control), None, True)
  if not text_after.startswith(text_before):
    raise ValueError("this chat template does not render a tool turn as a continuation of the call turn")
  closing = text_before.rfind(calls.CLOSE)
  tail = text_before[closing + len(calls.CLOSE):] if closing >= 0 else ""
  if turn_closed:  # the model's end-of-turn token is already there: keep what the template writes after it
    ends = [m.end() for m in renderer.control.finditer(tail)]
    tail = tail[ends[0]:] if ends else tail
  return _encode_continuation(tokenizer, tail + text_after[len(text_before):])


def call_stop_ids(tokenizer: Tokenizer) -> tuple[int, ...]:
  """The closing marker `</tool_call>` as a stop id where the tokenizer has it as one token (Qwen's added
  token); else () and a call ends with the turn's own end-of-turn token (jaxllm/tools/loop.py cuts the text
  at the marker either way)."""
  if not _own_template(tokenizer):
    return ()
  ids = _encode_continuation(tokenizer, jinja.mark(calls.CLOSE, _renderer(tokenizer).control))
  return tuple(ids) if len(ids) == 1 else ()
