"""The OpenAI request bodies the server accepts, validated strictly: an unknown field, a wrong type or a value
out of range is an `ApiError` (HTTP 400) naming the field, in OpenAI's error format.

Fields OpenAI defines but jaxllm does not implement are refused unless they hold their no-op value (e.g.
`frequency_penalty: 0`), so a request never silently gets something other than what it asked for.
"""
from __future__ import annotations

import json
from typing import Annotated, Any, Literal

import pydantic
from pydantic import BaseModel, ConfigDict, Field

MAX_N = 16  # choices per request
MAX_STOPS = 4  # stop strings per request (OpenAI's limit)


class ApiError(Exception):
  """An error reply: status, OpenAI-style body {"error": {"message", "type", "param", "code"}}."""

  def __init__(self, status: int, message: str, param: str | None = None, type_: str = "invalid_request_error",
               code: str | None = None):
    super().__init__(message)
    self.status, self.message, self.param, self.type, self.code = status, message, param, type_, code

  def body(self) -> dict:
    return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


class _Strict(BaseModel):
  model_config = ConfigDict(extra="forbid", strict=True)


class TextPart(_Strict):
  type: Literal["text"]
  text: str


class Message(_Strict):
  role: Literal["system", "user", "assistant", "developer", "tool"]
  content: str | list[TextPart]
  name: str | None = None

  def text(self) -> str:
    return self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)


class StreamOptions(_Strict):
  include_usage: bool = False


NoOp = Annotated[float, Field(ge=0, le=0)]  # accepted only at the value that changes nothing


class _Sampling(_Strict):
  model: str
  max_tokens: int | None = Field(default=None, ge=1)
  temperature: float = Field(default=1.0, ge=0, le=2)
  top_p: float = Field(default=1.0, gt=0, le=1)
  stop: str | list[str] | None = None
  seed: int | None = Field(default=None, ge=0, lt=2**63)
  n: int = Field(default=1, ge=1, le=MAX_N)
  stream: bool = False
  stream_options: StreamOptions | None = None
  user: str | None = None  # informational, as in OpenAI
  ignore_eos: bool = False  # vLLM's extension: keep generating past stop tokens (benchmarks use it)
  frequency_penalty: NoOp = 0.0
  presence_penalty: NoOp = 0.0

  def stops(self) -> tuple[str, ...]:
    stops = (self.stop,) if isinstance(self.stop, str) else tuple(self.stop or ())
    if len(stops) > MAX_STOPS:
      raise ApiError(400, f"at most {MAX_STOPS} stop sequences are allowed, got {len(stops)}", "stop")
    return stops


class ChatRequest(_Sampling):
  messages: list[Message] = Field(min_length=1)
  max_completion_tokens: int | None = Field(default=None, ge=1)
  logprobs: bool = False
  top_logprobs: int | None = Field(default=None, ge=0, le=20)

  def reply_budget(self) -> int | None:
    return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens

  def budget_field(self) -> str:
    return "max_completion_tokens" if self.max_completion_tokens is not None else "max_tokens"

  def top_logprobs_asked(self) -> int:
    """-1: no logprobs; else how many alternatives per token."""
    if self.top_logprobs is not None and not self.logprobs:
      raise ApiError(400, "top_logprobs requires logprobs: true", "top_logprobs")
    return (self.top_logprobs or 0) if self.logprobs else -1


class CompletionRequest(_Sampling):
  prompt: str | list[str]
  logprobs: int | None = Field(default=None, ge=0, le=5)  # OpenAI completions: alternatives per token
  echo: Literal[False] = False  # echoing the prompt back is not supported
  suffix: None = None  # insertion is not supported
  best_of: Literal[1] | None = None

  def prompts(self) -> list[str]:
    prompts = [self.prompt] if isinstance(self.prompt, str) else self.prompt
    if not prompts:
      raise ApiError(400, "prompt is an empty list", "prompt")
    return prompts

  def reply_budget(self) -> int | None:
    return self.max_tokens

  def budget_field(self) -> str:
    return "max_tokens"

  def top_logprobs_asked(self) -> int:
    return -1 if self.logprobs is None else self.logprobs


def _field_name(location: tuple) -> str:
  """pydantic's error location -> OpenAI's param: messages[0].content (union member names dropped)."""
  name = ""
  for part in location:
    if isinstance(part, int):
      name += f"[{part}]"
    elif part in ("str", "list[TextPart]", "list[str]", "int", "float", "bool") or "[" in str(part):
      continue  # which member of a union was tried, not a field
    else:
      name += f".{part}" if name else str(part)
  return name


def parse(raw: bytes, model_cls: type[_Sampling]) -> Any:
  """Bytes of a request body -> a validated request, or ApiError(400) naming the offending field."""
  try:
    body = json.loads(raw)
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise ApiError(400, f"the request body is not valid JSON: {e}") from None
  if not isinstance(body, dict):
    raise ApiError(400, f"the request body must be a JSON object, got {type(body).__name__}")
  try:
    return model_cls.model_validate(body)
  except pydantic.ValidationError as e:
    first = e.errors()[0]
    field = _field_name(first["loc"])
    if first["type"] == "extra_forbidden":
      message = f"unknown field {field!r}"
    elif first["type"] == "missing":
      message = f"missing required field {field!r}"
    else:
      message = f"{field}: {first['msg']} (got {json.dumps(first.get('input'), default=str)[:80]})"
    raise ApiError(400, message, field) from None
