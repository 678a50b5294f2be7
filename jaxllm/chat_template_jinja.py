"""A model's own Jinja chat template (tokenizer_config.json's `chat_template` or chat_template.jinja), rendered as
transformers' `apply_chat_template` renders it, with the assistant-token loss mask derived for any template.

Rendering: jinja2's ImmutableSandboxedEnvironment with trim_blocks and lstrip_blocks, `raise_exception`,
`strftime_now`, a `tojson` that does not HTML-escape, loop controls and the `{% generation %}` tag; the template
sees `messages`, `tools`, `add_generation_prompt` and the folder's named tokens (`bos_token`, `eos_token`, ...).
A control token the user typed is wrapped in private-use markers before rendering, so it encodes as text
(transformers' `sanitize_control_tokens=True`; on text without such spellings the ids are apply_chat_template's).

Loss mask: an assistant message's tokens are those the conversation gains from its generation prompt to the
end of the message (render the prefix up to it with add_generation_prompt, then with the message, and diff),
cut after the last control token in that span: its content and its end-of-turn token ("<|eot_id|>",
"<end_of_turn>", "</s>"), not a newline the template writes after it. A template that does not render growing
prefixes as prefixes of the whole (one that moves tools next to the last user turn, or drops earlier turns'
reasoning) is masked by its `{% generation %}` blocks where it has them, else by finding each assistant
message's content in the rendered text and extending it through the control token that follows.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import re
from datetime import datetime
from typing import Any

import jinja2
import jinja2.ext
import jinja2.nodes
import jinja2.sandbox

from jaxllm.hf_tokenizer import MARK_END, MARK_START, HFTokenizer
from jaxllm.tools import calls as tool_calls

ASSISTANT_ROLES = ("assistant", "function_call")


class TemplateError(ValueError):
  """A chat template that fails to render (its raise_exception, or a Jinja error), naming the message."""


class _GenerationTracker(jinja2.ext.Extension):
  """`{% generation %}...{% endgeneration %}`: renders its body and records the body's character span."""
  tags = {"generation"}

  def __init__(self, environment):
    super().__init__(environment)
    environment.extend(generation_spans=None)

  def parse(self, parser):
    lineno = next(parser.stream).lineno
    body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
    return jinja2.nodes.CallBlock(self.call_method("_track"), [], [], body).set_lineno(lineno)

  def _track(self, caller):
    text = caller()
    tracking = self.environment.generation_spans
    if tracking is not None:
      blocks, spans = tracking
      start = sum(map(len, blocks))
      spans.append((start, start + len(text)))
    return text


def _raise(message):
  raise jinja2.exceptions.TemplateError(message)


def _tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
  return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


@functools.lru_cache(maxsize=16)
def compile_template(source: str) -> jinja2.Template:
  env = jinja2.sandbox.ImmutableSandboxedEnvironment(
      trim_blocks=True, lstrip_blocks=True, extensions=[_GenerationTracker, jinja2.ext.loopcontrols])
  env.filters["tojson"] = _tojson
  env.globals["raise_exception"] = _raise
  env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
  return env.from_string(source)


@functools.lru_cache(maxsize=16)
def _literal_text(source: str) -> str:
  ast = compile_template(source).environment.parse(source)
  literals = {n.data for n in ast.find_all(jinja2.nodes.TemplateData)}
  literals |= {n.value for n in ast.find_all(jinja2.nodes.Const) if isinstance(n.value, str)}
  return "\0".join(literals)


def control_tokens(tokenizer: HFTokenizer) -> tuple[str, ...]:
  """The tokens a template writes as tokens: every special added token, and a non-special one (Qwen's
  "<tool_call>") when the template's text spells it (whitespace tokens excepted), as transformers decides."""
  text = _literal_text(tokenizer.chat_template or "")
  special = tokenizer.special_tokens
  return tuple(t for t in tokenizer.added_tokens if t in special or (t in text and not t.isspace()))


@functools.lru_cache(maxsize=16)
def _pattern(tokens: tuple[str, ...]) -> re.Pattern:
  return re.compile("|".join(map(re.escape, sorted(tokens, key=len, reverse=True))) or "(?!)")


def mark(obj: Any, control: re.Pattern) -> Any:
  """Strings with each control token wrapped in MARK_START/MARK_END (markers already there dropped), recursively."""
  if isinstance(obj, str):
    obj = obj.replace(MARK_START, "").replace(MARK_END, "")
    return control.sub(f"{MARK_START}\\g<0>{MARK_END}", obj)
  if isinstance(obj, dict):
    return {k: mark(v, control) for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return [mark(v, control) for v in obj]
  return obj


def _tool_call(content: str, index: int) -> tuple[str, list[dict]]:
  """A `function_call` message's content -> (text before the call, OpenAI tool_calls). The call is LLaMA-Factory's
  {"name", "arguments"} JSON (or a list of them), alone or on the lines after some text (TRL messages)."""
  starts = [0] + [i + 1 for i, c in enumerate(content) if c == "\n"]
  for start in starts:
    try:
      calls = json.loads(content[start:])
      break
    except json.JSONDecodeError:
      continue
  else:
    raise ValueError(f"message {index} (function_call): no {{\"name\", \"arguments\"}} JSON in {content!r:.80}")
  out = []
  for call in calls if isinstance(calls, list) else [calls]:
    if not isinstance(call, dict) or "name" not in call:
      raise ValueError(f"message {index} (function_call): expected {{\"name\", \"arguments\"}}, got {call!r:.80}")
    arguments = call.get("arguments", {})
    if isinstance(arguments, str):
      with contextlib.suppress(json.JSONDecodeError):
        arguments = json.loads(arguments)
    out.append({"type": "function", "function": {"name": call["name"], "arguments": arguments}})
  return content[:start].rstrip("\n"), out


def to_hf_messages(messages: list[dict]) -> list[dict]:
  """jaxllm messages -> the OpenAI-style messages templates read: a `function_call` turn becomes an assistant
  message with `tool_calls`; other keys pass through; None values are dropped (as transformers does)."""
  out = []
  for i, message in enumerate(messages):
    if not isinstance(message, dict) or "role" not in message:
      raise ValueError(f"message {i}: expected a dict with 'role' and 'content', got {message!r:.80}")
    message = {k: v for k, v in message.items() if v is not None}
    if message["role"] == "function_call":  # marked calls (a generated turn) are read back as JSON first
      text, calls = _tool_call(tool_calls.unmark(message.get("content", "")), i)
      message = {"role": "assistant", "content": text, "tool_calls": calls}
    out.append(message)
  return out


def parse_tools(tools: Any) -> list | None:
  """jaxllm's `tools` (a JSON string, as sharegpt data carries it, or already a list) -> the template's list."""
  if not tools:
    return None
  if isinstance(tools, str):
    try:
      tools = json.loads(tools)
    except json.JSONDecodeError as e:
      raise ValueError(f"tools: not JSON ({e}); a model's own chat template takes a JSON list of tool schemas") \
          from None
  return tools if isinstance(tools, list) else [tools]


@dataclasses.dataclass
class Renderer:
  """Renders conversations with `tokenizer`'s own template."""
  tokenizer: HFTokenizer

  def __post_init__(self):
    if not self.tokenizer.chat_template:
      raise ValueError(f"tokenizer {self.tokenizer.name!r} has no chat_template")
    self.template = compile_template(self.tokenizer.chat_template)
    self.control = _pattern(control_tokens(self.tokenizer))
    self.control_ids = {self.tokenizer.added_tokens[t] for t in control_tokens(self.tokenizer)}

  def text(self, messages: list[dict], tools: list | None, add_generation_prompt: bool,
           spans: list | None = None) -> str:
    """The rendered string (marked); with `spans`, also the {% generation %} block spans appended to it."""
    kwargs = dict(messages=messages, tools=tools, documents=None, add_generation_prompt=add_generation_prompt,
                  **self.tokenizer.named)
    if spans is None:
      return self.template.render(**kwargs)
    blocks: list[str] = []
    env = self.template.environment
    env.generation_spans = (blocks, spans)
    try:
      for block in self.template.generate(**kwargs):
        blocks.append(block)
    finally:
      env.generation_spans = None
    return "".join(blocks)

  def render_text(self, messages: list[dict], tools: list | None, add_generation_prompt: bool) -> str:
    """The whole conversation; a failure names the first message whose prefix fails to render."""
    try:
      return self.text(messages, tools, add_generation_prompt)
    except jinja2.exceptions.TemplateError as e:
      error = e
    for n in range(1, len(messages) + 1):
      try:
        self.text(messages[:n], tools, False)
      except jinja2.exceptions.TemplateError as e:
        error, role = e, messages[n - 1].get("role")
        raise TemplateError(f"chat template of {self.tokenizer.name!r} fails at message {n - 1} ({role}): "
                            f"{type(error).__name__}: {error}") from None
    raise TemplateError(f"chat template of {self.tokenizer.name!r} fails on the conversation "
                        f"(add_generation_prompt={add_generation_prompt}): {type(error).__name__}: {error}") \
        from None

  @functools.cached_property
  def _turn_text(self) -> tuple[str, str]:
    probe = "\ue000PROBE\ue000"
    user = [{"role": "user", "content": "hi"}]
    before = self._prefix(user, None, True)
    through = self._prefix(user + [{"role": "assistant", "content": probe}], None, False)
    if before is None or through is None or not through.startswith(before) or probe not in through:
      raise TemplateError(f"chat template of {self.tokenizer.name!r}: a user turn then an assistant turn does not "
                          "render as prompt + answer, so its end-of-turn text cannot be found")
    turn = through[len(before):]
    k = turn.index(probe)
    return turn[:k], turn[k + len(probe):]

  def turn_text(self) -> tuple[str, str]:
    """(text before, text after) an assistant message's content as the template writes it after the generation
    prompt: ("", "<|eot_id|>") for Llama-3, ("", "<end_of_turn>\n") for Gemma, (" ", " </s>") for Llama-2."""
    return self._turn_text

  def _prefix(self, messages, tools, add_generation_prompt) -> str | None:
    try:
      return self.text(messages, tools, add_generation_prompt)
    except jinja2.exceptions.TemplateError:
      return None

  def assistant_spans(self, messages: list[dict], original_roles: list[str], tools: list | None,
                      full: str) -> list[tuple[int, int, int]]:
    """(message index, start, end) character spans of the assistant messages in `full` (each ends after its
    end-of-turn control token, cut later by the token ids)."""
    targets = [i for i, r in enumerate(original_roles) if r in ASSISTANT_ROLES]
    spans = []
    for i in targets:
      before = self._prefix(messages[:i], tools, True)
      through = self._prefix(messages[:i + 1], tools, False)
      if before is None or through is None or not through.startswith(before) or not full.startswith(through):
        return self._fallback_spans(messages, targets, tools, full)
      spans.append((i, len(before), len(through)))
    return spans

  def _fallback_spans(self, messages, targets, tools, full) -> list[tuple[int, int, int]]:
    generation: list = []
    if self.text(messages, tools, False, spans=generation) == full and len(generation) == len(targets):
      return [(i, a, b) for i, (a, b) in zip(targets, generation)]
    spans, cursor = [], 0
    for i in targets:
      content = messages[i].get("content") or ""
      if not content and messages[i].get("tool_calls"):
        content = json.dumps(messages[i]["tool_calls"][0]["function"]["name"])[1:-1]  # the call's name at least
      content = content.strip()
      start = full.find(content, cursor)
      if not content or start < 0:
        raise ValueError(f"message {i} (assistant): its content does not appear in the rendered chat, so the "
                         "chat template gives no way to find its tokens for the loss mask")
      end = start + len(content)
      after = self.control.search(full, end)
      if after and not full[end:after.start()].strip():
        end = after.end()
      spans.append((i, start, end))
      cursor = end
    return spans
