"""The continuous-batching engine's host side: a background thread that admits queued requests into free KV-cache
slots, runs one decode step of the whole running batch at a time, and hands each request's tokens to it.

  engine = Engine(model, weights, tokenizer, EngineOptions(max_batch=32, context=512, max_queue=256))
  engine.start()
  engine.submit(Request(prompt_ids, max_tokens=64, temperature=0.0, sink=events.append))  # QueueFull when full
  ...
  engine.stop()

Each loop iteration (see `_loop`): drop cancelled and timed-out requests (their slots free at once), prefill up
to `prefill_per_step` waiting requests into free slots (so arrivals never stall the running batch for long),
dispatch one decode step, then read back the *previous* step's tokens while this one computes (JAX dispatches
asynchronously): a finished request's row does one wasted step, and the host's detokenizing overlaps the
device. A request joins the batch the iteration after a slot frees and leaves the moment it ends: no request
waits for the slowest one of a batch. Device-side layout: slots.py.

Requests talk back through `sink(Event)`, called on the engine thread; the HTTP layer turns it into an asyncio
queue. Every request gets exactly one final event (finish_reason set).
"""
from __future__ import annotations

import collections
import dataclasses
import threading
import time
import traceback
from typing import Any, Callable

import jax
import numpy as np

from jaxllm import chat_template
from jaxllm.model import Transformer
from jaxllm.serve import slots as slots_lib
from jaxllm.serve.text import TextStream
from jaxllm.tokenizer import Tokenizer


def prompt_bucket(n: int, context: int) -> int:
  """Prompts are padded to a multiple of 1/8 of their next power of two (>= 16, <= context): 8 compiled prefills
  per doubling of length, and less padding than max(16 tokens, a quarter of the prompt) (a power-of-two bucket
  padded a 70-token prompt to 128, 1.8x the work)."""
  step = max(16, (1 << (n - 1).bit_length()) // 8)
  return min(-(-n // step) * step, context)


def admission_sizes(prefill_per_step: int) -> list[int]:
  """Row counts of the compiled prefills: powers of two up to prefill_per_step's (a batch of 3 runs at 4)."""
  return [1 << i for i in range((prefill_per_step - 1).bit_length() + 1)]


def _admission_arrays(group: list[tuple[int, "Request"]], n: int, bucket: int, max_batch: int) -> tuple:
  """slots.admit's per-prompt arguments for (row, request) pairs, padded to n prompts (row max_batch: dropped)."""
  rows_n = np.full((n,), max_batch, np.int32)
  tokens_nP = np.zeros((n, bucket), np.int32)
  lengths_n = np.ones((n,), np.int32)
  temperature_n, top_p_n = np.zeros((n,), np.float32), np.ones((n,), np.float32)
  key_n = np.zeros((n, 2), np.uint32)
  want_top_n = np.zeros((n,), bool)
  for i, (row, request) in enumerate(group):
    rows_n[i], lengths_n[i] = row, len(request.prompt)
    tokens_nP[i, :len(request.prompt)] = request.prompt
    temperature_n[i], top_p_n[i], want_top_n[i] = request.temperature, request.top_p, request.top_logprobs > 0
    # threefry key data of a 64-bit seed (jax.random.PRNGKey keeps only the low 32 bits without x64)
    key_n[i] = [(request.seed >> 32) & 0xFFFFFFFF, request.seed & 0xFFFFFFFF]
  return rows_n, tokens_nP, lengths_n, temperature_n, top_p_n, key_n, want_top_n


class QueueFull(Exception):
  pass


@dataclasses.dataclass(frozen=True)
class EngineOptions:
  max_batch: int  # KV-cache slots: requests decoded together
  context: int  # tokens per slot: prompt + reply must fit
  max_queue: int  # requests waiting for a slot beyond which submit refuses (HTTP 429)
  prefill_per_step: int = 4  # prompts prefilled between two decode dispatches (batched by prompt bucket)
  steps_per_dispatch: int = 1  # decode steps per jitted call; each request gets one event per call
  seed: int = 0  # key of requests that name no seed (with a per-request counter)


@dataclasses.dataclass
class TokenInfo:
  id: int
  logprob: float  # raw-model log p (slots.Drawn)
  top: list[tuple[int, float]]  # the `top_logprobs` most likely tokens, when asked for


@dataclasses.dataclass
class Event:
  text: str  # newly final reply text (may be empty)
  tokens: list[TokenInfo]  # the tokens this event covers (the stop token is not reported)
  finish_reason: str | None = None  # stop | length | timeout | cancelled | shutdown | error; None while running
  completion_tokens: int = 0  # generated so far, stop token included


@dataclasses.dataclass(eq=False)
class Request:
  prompt: list[int]
  max_tokens: int
  sink: Callable[[Event], Any]
  temperature: float = 1.0
  top_p: float = 1.0
  seed: int | None = None
  stop: tuple[str, ...] = ()
  ignore_eos: bool = False  # stop tokens do not end the reply (they are decoded as text)
  top_logprobs: int = -1  # -1: no logprobs; 0..20: the sampled token's and this many alternatives
  deadline: float = float("inf")  # time.monotonic() after which it ends with finish_reason "timeout"
  cancelled: bool = False
  done: bool = False
  generated: int = 0


class Engine:
  def __init__(self, model: Transformer, weights: Any, tokenizer: Tokenizer, options: EngineOptions):
    if options.context > model.cfg.max_seq_len:
      raise ValueError(f"context={options.context} exceeds the model's max_seq_len={model.cfg.max_seq_len}")
    self.model, self.weights, self.tokenizer, self.options = model, weights, tokenizer, options
    self.stop_ids = frozenset(int(i) for i in chat_template.stop_ids(tokenizer))
    self.vocab_limit = tokenizer.n_vocab
    self.rows: list[Request | None] = [None] * options.max_batch
    self.streams: dict[Request, TextStream] = {}
    self._waiting: collections.deque[Request] = collections.deque()
    self._wake = threading.Condition()
    self._stopping = False
    self._thread: threading.Thread | None = None
    self.submitted = 0  # requests accepted so far (also the default seed's counter)
    self._state = slots_lib.empty_slots(model, options.max_batch, options.context)
    self.steps = 0  # decode steps run (for tests and logs)

  # --- called from any thread ------------------------------------------------------------------------------

  def start(self) -> "Engine":
    self._thread = threading.Thread(target=self._loop, name="jaxllm-engine", daemon=True)
    self._thread.start()
    return self

  def warm_up(self) -> None:
    """Compile the decode call and the shortest prompt bucket's prefills, at every admission row count (before
    `start`; longer prompt buckets compile on first use)."""
    assert self._thread is None, "warm_up runs before the engine thread starts"
    self._state, drawn = self._decode()
    bucket = prompt_bucket(1, self.options.context)
    for n in admission_sizes(self.options.prefill_per_step):
      # every row index past the last slot: nothing is written
      self._state, drawn = slots_lib.admit(self.model, self.weights, self._state, *_admission_arrays(
          [], n, bucket, self.options.max_batch), self.vocab_limit)
    jax.block_until_ready(drawn)

  def submit(self, request: Request) -> None:
    """Queue a request (validated by the caller: prompt + max_tokens <= context); raises QueueFull."""
    if len(request.prompt) + request.max_tokens > self.options.context or not request.prompt:
      raise ValueError(f"prompt of {len(request.prompt)} tokens + max_tokens={request.max_tokens} does not fit "
                       f"the serving context of {self.options.context}")
    with self._wake:
      if self._stopping:
        raise QueueFull("the server is shutting down")
      if len(self._waiting) >= self.options.max_queue:
        raise QueueFull(f"{len(self._waiting)} requests are already waiting (serve.max_queue)")
      if request.seed is None:
        request.seed = (self.options.seed << 32) + self.submitted
      self.submitted += 1
      self._waiting.append(request)
      self._wake.notify()

  def cancel(self, request: Request) -> None:
    """Stop generating for `request` (e.g. its client went away); its slot frees on the next iteration."""
    request.cancelled = True
    with self._wake:
      self._wake.notify()

  def stop(self, timeout: float = 30.0) -> None:
    """End every running and waiting request (finish_reason "shutdown") and join the thread."""
    with self._wake:
      self._stopping = True
      self._wake.notify()
    if self._thread is not None:
      self._thread.join(timeout)

  @property
  def stopping(self) -> bool:
    return self._stopping

  def load(self) -> dict:
    return {"running": sum(r is not None for r in self.rows), "waiting": len(self._waiting),
            "slots": self.options.max_batch}

  # --- the engine thread -----------------------------------------------------------------------------------

  def _loop(self) -> None:
    try:
      self._serve()
    except Exception:  # a bug or a device failure: fail every request rather than leave clients hanging
      traceback.print_exc()
      self._end_all("error")

  def _serve(self) -> None:
    pending = None  # (device Drawn of the step in flight, the request each row held when it was dispatched)
    while True:
      with self._wake:
        while not (self._stopping or self._waiting or pending or any(self.rows)):
          self._wake.wait()
        if self._stopping:
          break
      self._drop_ended()
      self._admit()
      in_flight = None
      if any(self.rows):
        self._state, drawn = self._decode()
        self.steps += self.options.steps_per_dispatch
        in_flight = (drawn, tuple(self.rows))
      if pending is not None:
        self._consume(*pending)
      pending = in_flight
    self._end_all("shutdown")

  def _end_all(self, reason: str) -> None:
    with self._wake:
      self._stopping = True  # nothing new is accepted
      ended = [r for r in self.rows if r is not None] + list(self._waiting)
    for request in ended:
      self._finish(request, reason)

  def _drop_ended(self) -> None:
    now = time.monotonic()
    with self._wake:
      waiting = list(self._waiting)
    for request in waiting + [r for r in self.rows if r is not None]:
      if request.cancelled or now > request.deadline:
        self._finish(request, "cancelled" if request.cancelled else "timeout")

  def _decode(self) -> tuple[slots_lib.Slots, slots_lib.Drawn]:
    return slots_lib.decode(self.model, self.weights, self._state, self.vocab_limit,
                            self.options.steps_per_dispatch)

  def _admit(self) -> None:
    """Move up to prefill_per_step waiting requests into free rows: one batched prefill per prompt bucket."""
    free = [row for row, request in enumerate(self.rows) if request is None]
    with self._wake:
      taken = [self._waiting.popleft() for _ in range(min(len(free), len(self._waiting),
                                                          self.options.prefill_per_step))]
    by_bucket: dict[int, list[tuple[int, Request]]] = {}
    for row, request in zip(free, taken):
      self.rows[row] = request
      self.streams[request] = TextStream(self.tokenizer, request.stop)
      by_bucket.setdefault(prompt_bucket(len(request.prompt), self.options.context), []).append((row, request))
    for bucket, group in by_bucket.items():
      n = next(size for size in admission_sizes(self.options.prefill_per_step) if size >= len(group))
      self._state, drawn = slots_lib.admit(self.model, self.weights, self._state, *_admission_arrays(
          group, n, bucket, self.options.max_batch), self.vocab_limit)
      self._consume(drawn, tuple(request for _, request in group))

  def _consume(self, drawn: slots_lib.Drawn, rows: tuple[Request | None, ...]) -> None:
    """Hand each still-running request its tokens from one call, as one event (drawn: [steps, rows] arrays;
    rows: who held each row at dispatch). A request that ends mid-call ignores the rest of its row."""
    host = jax.device_get(drawn)
    for row, request in enumerate(rows):
      if request is None or request.done:
        continue
      text, info = "", []
      for step in range(host.token_B.shape[0]):
        token = int(host.token_B[step, row])
        request.generated += 1
        stopped = token in self.stop_ids and not request.ignore_eos
        if not stopped:
          if request.top_logprobs >= 0:
            top = list(zip(host.top_ids_BT[step, row, :request.top_logprobs].tolist(),
                           host.top_logprobs_BT[step, row, :request.top_logprobs].tolist()))
            info.append(TokenInfo(token, float(host.logprob_B[step, row]), top))
          piece, stopped = self.streams[request].push(token)
          text += piece
        if stopped or request.generated >= request.max_tokens:
          self._finish(request, "stop" if stopped else "length", Event(text, info))
          break
      else:
        self._emit(request, Event(text, info, None, request.generated))

  def _finish(self, request: Request, reason: str, last: Event | None = None) -> None:
    """The request's final event; frees its slot (or queue place)."""
    if request.done:
      return
    request.done = True
    if request in self.rows:
      self.rows[self.rows.index(request)] = None
    else:
      with self._wake:
        if request in self._waiting:
          self._waiting.remove(request)
    stream = self.streams.pop(request, None)
    last = last or Event("", [])
    tail = stream.flush() if stream is not None and reason != "stop" else ""
    self._emit(request, Event(last.text + tail, last.tokens, reason, request.generated))

  def _emit(self, request: Request, event: Event) -> None:
    try:
      request.sink(event)
    except Exception:  # e.g. the client's event loop is gone: that client is, too
      request.cancelled = True
