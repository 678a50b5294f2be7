"""The OpenAI-compatible HTTP API (Starlette, run by uvicorn) in front of an `Engine`.

  POST /v1/chat/completions   POST /v1/completions   (server-sent events with "stream": true)
  GET  /v1/models             GET  /health           GET  /  (the chat page, static/index.html)

Each choice of a request is one engine `Request`; the engine thread hands its events to this event loop with
`call_soon_threadsafe`. A client that goes away cancels its requests at once (streaming: Starlette cancels the
response task on disconnect; otherwise the wait polls for it), so its slots go to the next in line.
Errors are OpenAI's body {"error": {"message", "type", "param", "code"}}: 400 for a bad request (protocol.py),
401 for a missing or wrong API key, 404 for another model name, 429 when serve.max_queue requests already
wait, 408 when serve.request_timeout passes, 503 while shutting down, 500 if the engine fails.
"""
from __future__ import annotations

import asyncio
import dataclasses
import json
import pathlib
import secrets
import time
import uuid
from typing import AsyncIterator

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request as HttpRequest
from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from jaxllm import chat_template
from jaxllm.serve import protocol
from jaxllm.serve.engine import Engine, Event, QueueFull, Request
from jaxllm.serve.protocol import ApiError

PAGE = pathlib.Path(__file__).with_name("static") / "index.html"
DISCONNECT_POLL_S = 0.25  # how often a non-streaming request checks that its client is still there
ENDED = {"timeout": (408, "timeout", "the request timed out (serve.request_timeout)"),
         "shutdown": (503, "server_shutdown", "the server is shutting down"),
         "error": (500, "server_error", "the engine failed; the server log has the traceback")}


@dataclasses.dataclass(frozen=True)
class ApiOptions:
  model_name: str
  api_key: str = ""  # '' = no authentication
  default_max_tokens: int = 256  # reply budget when a request names none (less near the end of the context)
  request_timeout: float = 600.0  # seconds from arrival to the end of the reply


class Api:
  def __init__(self, engine: Engine, options: ApiOptions):
    self.engine, self.options, self.tokenizer = engine, options, engine.tokenizer
    self.created = int(time.time())

  # --- plumbing -------------------------------------------------------------------------------------------

  def authorize(self, http: HttpRequest) -> None:
    if not self.options.api_key:
      return
    given = http.headers.get("authorization", "")
    if not secrets.compare_digest(given.encode(), f"Bearer {self.options.api_key}".encode()):
      raise ApiError(401, "missing or incorrect API key: send 'Authorization: Bearer <serve.api_key>'",
                     type_="invalid_request_error", code="invalid_api_key")

  def check_model(self, name: str) -> None:
    if name != self.options.model_name:
      raise ApiError(404, f"model {name!r} is not served here; this server serves {self.options.model_name!r}",
                     "model", code="model_not_found")

  def budget(self, body, prompt_len: int, prompt_field: str) -> int:
    context = self.engine.options.context
    if prompt_len >= context:
      raise ApiError(400, f"the prompt is {prompt_len} tokens, the serving context is {context} tokens (prompt "
                     f"and reply together): shorten it", prompt_field, code="context_length_exceeded")
    asked = body.reply_budget()
    if asked is None:
      return min(self.options.default_max_tokens, context - prompt_len)
    if prompt_len + asked > context:
      raise ApiError(400, f"{body.budget_field()}={asked} plus the prompt's {prompt_len} tokens exceeds the serving "
                     f"context of {context} tokens; at most {context - prompt_len} fit", body.budget_field(),
                     code="context_length_exceeded")
    return asked

  def submit(self, body, prompts: list[list[int]], max_tokens: int, queue: asyncio.Queue) -> list[Request]:
    """One engine request per (prompt, choice); all or none are queued."""
    loop = asyncio.get_running_loop()
    deadline = time.monotonic() + self.options.request_timeout
    requests = []
    for p, prompt in enumerate(prompts):
      for i in range(body.n):
        index = p * body.n + i
        sink = lambda event, index=index: loop.call_soon_threadsafe(queue.put_nowait, (index, event))
        # choice i of a seeded request draws with seed + i: n seeded choices differ, and each is reproducible
        seed = None if body.seed is None else body.seed + i
        requests.append(Request(prompt=prompt, max_tokens=max_tokens, sink=sink, temperature=body.temperature,
                                top_p=body.top_p, seed=seed, stop=body.stops(), ignore_eos=body.ignore_eos,
                                top_logprobs=body.top_logprobs_asked(), deadline=deadline))
    try:
      for request in requests:
        self.engine.submit(request)
    except QueueFull as e:
      for request in requests:
        self.engine.cancel(request)
      raise ApiError(503 if self.engine.stopping else 429, f"the server is busy: {e}; retry later",
                     type_="rate_limit_error", code="queue_full") from None
    return requests

  async def events(self, http: HttpRequest, requests: list[Request], queue: asyncio.Queue,
                   poll_disconnect: bool) -> AsyncIterator[tuple[int, Event]]:
    """(choice index, event) until every choice has finished; cancels what is left on any exit."""
    remaining = len(requests)
    try:
      while remaining:
        try:
          index, event = await asyncio.wait_for(queue.get(), DISCONNECT_POLL_S)
        except asyncio.TimeoutError:
          if poll_disconnect and await http.is_disconnected():
            return
          continue
        remaining -= event.finish_reason is not None
        yield index, event
    finally:
      for request in requests:
        if not request.done:
          self.engine.cancel(request)

  # --- endpoints ------------------------------------------------------------------------------------------

  async def health(self, http: HttpRequest) -> Response:
    return JSONResponse({"status": "ok", "model": self.options.model_name, **self.engine.load()})

  async def models(self, http: HttpRequest) -> Response:
    self.authorize(http)
    return JSONResponse({"object": "list", "data": [
        {"id": self.options.model_name, "object": "model", "created": self.created, "owned_by": "jaxllm",
         "max_model_len": self.engine.options.context}]})

  async def page(self, http: HttpRequest) -> Response:
    return HTMLResponse(PAGE.read_text())

  async def chat(self, http: HttpRequest) -> Response:
    self.authorize(http)
    body = protocol.parse(await http.body(), protocol.ChatRequest)
    self.check_model(body.model)
    messages = [{"role": "system" if m.role == "developer" else m.role, "content": m.text()}
                for m in body.messages]
    try:
      prompt = chat_template.prompt_ids(self.tokenizer, messages)
    except ValueError as e:
      raise ApiError(400, str(e), "messages") from None
    return await self.generate(http, body, [prompt], "messages", chat=True)

  async def completions(self, http: HttpRequest) -> Response:
    self.authorize(http)
    body = protocol.parse(await http.body(), protocol.CompletionRequest)
    self.check_model(body.model)
    prompts = [self.tokenizer.encode(text) for text in body.prompts()]
    if not all(prompts):
      raise ApiError(400, "a prompt is empty: give at least one character", "prompt")
    return await self.generate(http, body, prompts, "prompt", chat=False)

  async def generate(self, http: HttpRequest, body, prompts: list[list[int]], prompt_field: str,
                     chat: bool) -> Response:
    max_tokens = min(self.budget(body, len(p), prompt_field) for p in prompts)
    queue: asyncio.Queue = asyncio.Queue()
    requests = self.submit(body, prompts, max_tokens, queue)
    reply = Reply(self, body, chat, sum(map(len, prompts)) * body.n, len(requests))
    if body.stream:
      return StreamingResponse(reply.stream(self.events(http, requests, queue, poll_disconnect=False)),
                               media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
    return await reply.whole(self.events(http, requests, queue, poll_disconnect=True))

  def app(self, lifespan=None) -> Starlette:
    routes = [Route("/", self.page), Route("/health", self.health), Route("/v1/models", self.models),
              Route("/v1/chat/completions", self.chat, methods=["POST"]),
              Route("/v1/completions", self.completions, methods=["POST"])]

    async def api_error(http, error: ApiError):
      return JSONResponse(error.body(), status_code=error.status)

    async def http_error(http, error: HTTPException):  # unknown path, wrong method: still OpenAI's shape
      return JSONResponse(ApiError(error.status_code, f"{http.method} {http.url.path}: {error.detail}").body(),
                          status_code=error.status_code)

    return Starlette(routes=routes, exception_handlers={ApiError: api_error, HTTPException: http_error},
                     lifespan=lifespan)


class Reply:
  """Builds the OpenAI response objects (whole, or as server-sent-event chunks) for one request."""

  def __init__(self, api: Api, body, chat: bool, prompt_tokens: int, n_choices: int):
    self.api, self.body, self.chat, self.prompt_tokens, self.n_choices = api, body, chat, prompt_tokens, n_choices
    self.id = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex
    self.object = "chat.completion" if chat else "text_completion"
    self.created = int(time.time())
    self.completion_tokens = 0

  def usage(self) -> dict:
    return {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens}

  def envelope(self, choices: list, object_: str | None = None) -> dict:
    return {"id": self.id, "object": object_ or self.object, "created": self.created,
            "model": self.api.options.model_name, "choices": choices}

  def logprobs(self, event: Event) -> dict | None:
    if self.body.top_logprobs_asked() < 0:
      return None
    piece = lambda i: self.api.tokenizer.decode([i])
    if self.chat:
      entry = lambda i, lp: {"token": piece(i), "logprob": lp, "bytes": list(self.api.tokenizer.decode_bytes([i]))}
      return {"content": [{**entry(t.id, t.logprob), "top_logprobs": [entry(i, lp) for i, lp in t.top]}
                          for t in event.tokens]}
    return {"tokens": [piece(t.id) for t in event.tokens], "token_logprobs": [t.logprob for t in event.tokens],
            "top_logprobs": [{piece(i): lp for i, lp in t.top} for t in event.tokens]}

  def merge_logprobs(self, into: dict | None, more: dict | None) -> dict | None:
    if into is None or more is None:
      return more or into
    return {k: into[k] + more[k] for k in into}

  async def whole(self, events: AsyncIterator[tuple[int, Event]]) -> Response:
    texts: dict[int, str] = {}
    logprobs: dict[int, dict | None] = {}
    finish: dict[int, str] = {}
    async for index, event in events:
      texts[index] = texts.get(index, "") + event.text
      logprobs[index] = self.merge_logprobs(logprobs.get(index), self.logprobs(event))
      if event.finish_reason:
        finish[index] = event.finish_reason
        self.completion_tokens += event.completion_tokens
    for reason in finish.values():
      if reason in ENDED:
        status, code, message = ENDED[reason]
        return JSONResponse(ApiError(status, message, type_=code, code=code).body(), status_code=status)
    if len(finish) < self.n_choices or "cancelled" in finish.values():
      return Response(status_code=499)  # the client is gone; nobody reads this
    choices = []
    for index in sorted(texts):
      content = {"message": {"role": "assistant", "content": texts[index]}} if self.chat else {"text": texts[index]}
      choices.append({"index": index, **content, "logprobs": logprobs[index], "finish_reason": finish[index]})
    return JSONResponse({**self.envelope(choices), "usage": self.usage()})

  def chunk(self, index: int, event: Event | None) -> dict:
    if self.chat:
      delta = {"role": "assistant", "content": ""} if event is None else (
          {"content": event.text} if event.text else {})
      choice = {"index": index, "delta": delta}
    else:
      choice = {"index": index, "text": "" if event is None else event.text}
    choice["logprobs"] = None if event is None else self.logprobs(event)
    choice["finish_reason"] = None if event is None else event.finish_reason
    return self.envelope([choice], "chat.completion.chunk" if self.chat else "text_completion")

  async def stream(self, events: AsyncIterator[tuple[int, Event]]) -> AsyncIterator[str]:
    sse = lambda obj: f"data: {json.dumps(obj)}\n\n"
    if self.chat:  # OpenAI opens each choice with the assistant role
      for index in range(self.n_choices):
        yield sse(self.chunk(index, None))
    async for index, event in events:
      if event.finish_reason in ENDED:
        status, code, message = ENDED[event.finish_reason]
        yield sse(ApiError(status, message, type_=code, code=code).body())
        continue
      if event.finish_reason:
        self.completion_tokens += event.completion_tokens
      if event.text or event.tokens or event.finish_reason:
        yield sse(self.chunk(index, event))
    options = self.body.stream_options
    if options is not None and options.include_usage:
      yield sse({**self.envelope([], "chat.completion.chunk" if self.chat else "text_completion"),
                 "usage": self.usage()})
    yield "data: [DONE]\n\n"
