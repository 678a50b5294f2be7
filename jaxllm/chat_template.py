"""Chat messages -> token ids and a loss mask, ChatML style:

  <|im_start|>{role}\n{content}<|im_end|>\n   ...   generation prompt: <|im_start|>assistant\n

Control tokens are inserted by id; message text is always encoded as plain text, so a user who types
"<|im_end|>" gets those characters, never the control token. By default only the last assistant turn carries
loss (its content and its closing <|im_end|>); `train_on="all"` also learns from earlier assistant turns, as
LLaMA-Factory's `mask_history=False` does.

Tool-calling data (a `tools` description string) is shown to the model in the system turn, after the system
prompt if there is one, as LLaMA-Factory's templates do.
"""
from __future__ import annotations

import dataclasses

from jaxllm.tokenizer import Tokenizer

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
    body = tokenizer.encode(content) + [tokenizer.im_end_id]
    starts.append(len(ids))
    ids += header + body + newline
    mask += [0] * len(header) + [int(learn)] * len(body) + [0] * len(newline)
  if add_generation_prompt:
    header = _role_header(tokenizer, "assistant")
    ids += header
    mask += [0] * len(header)
  prompt_len = next((i for i, m in enumerate(mask) if m), len(ids))
  return Rendered(ids=ids, loss_mask=mask, prompt_len=prompt_len, turn_starts=tuple(starts))


def prompt_ids(tokenizer: Tokenizer, messages: list[dict], tools: str = "") -> list[int]:
  """Ids of a conversation that ends where the assistant should start speaking."""
  return render(tokenizer, messages, add_generation_prompt=True, tools=tools).ids


def completion_ids(tokenizer: Tokenizer, content: str) -> list[int]:
  """Ids of an assistant answer as it follows `prompt_ids`: content, <|im_end|>, newline."""
  return tokenizer.encode(content) + [tokenizer.im_end_id] + tokenizer.encode("\n")


def stop_ids(tokenizer: Tokenizer) -> tuple[int, ...]:
  return (tokenizer.im_end_id, tokenizer.eot_id)
