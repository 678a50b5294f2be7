"""The continuous-batching engine's host side: a background thread that admits queued requests into free KV-cache
slots, runs the whole running batch one decode call at a time, and hands each request's tokens to it.

  engine = Engine(model, weights, tokenizer, EngineOptions(max_batch=32, context=512, max_queue=256))
  engine.start()
  engine.submit(Request(prompt_ids, max_tokens=64, temperature=0.0, sink=events.append))  # QueueFull when full
  ...
  engine.stop()

Each loop iteration (see `_loop`): drop cancelled and timed-out requests (their slots free at once), prefill up
to `prefill_per_step` waiting requests into free slots (so arrivals never stall the running batch for long),
dispatch one decode call, then read back the *previous* call's tokens while this one computes (JAX dispatches
asynchronously): a finished request's row does one wasted call, and the host's detokenizing overlaps the
device. A call is one step while requests wait for a slot, else `steps_per_dispatch` steps (one event per
request per call: fewer host round trips, the same tokens), and attends over the KV-cache blocks that the
furthest running request reaches by its last step (the host keeps each row's position). A request joins the
batch the iteration after a slot frees and leaves the moment it ends: no request waits for the slowest one of
a batch. Device-side layout: slots.py.

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


def default_kv_block(context: int) -> int:
  """64 slots, or a 16th of the context when that is more (a multiple of 64): attention reads at most one
  partly used block too many, and there are at most 16 decode programs to compile (one per block count)."""
  return max(64, -(-context // 16 // 64) * 64)


class QueueFull(Exception):
  pass


@dataclasses.dataclass(frozen=True)
class EngineOptions:
  max_batch: int  # KV-cache slots: requests decoded together
  context: int  # tokens per slot: prompt + reply must fit
  max_queue: int  # requests waiting for a slot beyond which submit refuses (HTTP 429)
  prefill_per_step: int = 4  # prompts prefilled between two decode calls
  # decode steps per call while no request waits for a slot (else 1): fewer host round trips, one event per
  # call per request; a request that ends mid-call leaves its row idle for the call's remaining steps
  steps_per_dispatch: int = 1
  kv_block: int = 0  # slots per KV-cache block (0: default_kv_block); a call attends over the blocks in use
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
    self._state = slots_lib.empty_slots(model, options.max_batch, options.context,
                                        options.kv_block or default_kv_block(options.context))
    self._pos = [0] * options.max_batch  # host copy of each row's next write slot (picks decode's block count)
    self.steps = 0  # decode steps run (for tests and logs)

  # --- called from any thread ------------------------------------------------------------------------------

  def start(self) -> "Engine":
    self._thread = threading.Thread(target=self._loop, name="jaxllm-engine", daemon=True)
    self._thread.start()
    return self

  def warm_up(self) -> None:
    """Compile the decode calls (every block count) and the shortest prompt bucket's prefill (before `start`)."""
    assert self._thread is None, "warm_up runs before the engine thread starts"
    for steps in sorted({1, self.options.steps_per_dispatch}):
      for blocks in range(1, len(self._state.segment_ids) + 1):
        self._state, drawn = slots_lib.decode(self.model, self.weights, self._state, self.vocab_limit, steps, blocks)
    bucket = prompt_bucket(1, self.options.context)
    self._state, drawn = slots_lib.admit(self.model, self.weights, self._state, np.int32(0),
                                         np.zeros((1, bucket), np.int32), np.int32(1), np.float32(0),
                                         np.float32(1), np.zeros(2, np.uint32), np.bool_(False), self.vocab_limit)
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
        # one step at a time while requests wait, so a slot that frees is taken at once
        steps = 1 if self._waiting else self.options.steps_per_dispatch
        self._state, drawn = self._decode(steps)
        self.steps += steps
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

  def _decode(self, steps: int) -> tuple[slots_lib.Slots, slots_lib.Drawn]:
    """`steps` steps of every row, over the cache blocks the furthest running row reaches by the last one."""
    running = [row for row, request in enumerate(self.rows) if request is not None]
    last_slot = min(max(self._pos[row] for row in running) + steps - 1, self.options.context - 1)
    for row in running:
      self._pos[row] += steps
    blocks = slots_lib.blocks_needed(self._state, last_slot)
    return slots_lib.decode(self.model, self.weights, self._state, self.vocab_limit, steps, blocks)

  def _admit(self) -> None:
    for _ in range(self.options.prefill_per_step):
      if None not in self.rows:
        return
      with self._wake:
        if not self._waiting:
          return
        request = self._waiting.popleft()
      row = self.rows.index(None)
      self.rows[row] = request
      self.streams[request] = TextStream(self.tokenizer, request.stop)
      n = len(request.prompt)
      self._pos[row] = n
      tokens_1P = np.zeros((1, prompt_bucket(n, self.options.context)), np.int32)
      tokens_1P[0, :n] = request.prompt
      # threefry key data of a 64-bit seed (jax.random.PRNGKey keeps only the low 32 bits without x64)
      key = np.array([(request.seed >> 32) & 0xFFFFFFFF, request.seed & 0xFFFFFFFF], np.uint32)
      self._state, drawn = slots_lib.admit(
          self.model, self.weights, self._state, np.int32(row), tokens_1P, np.int32(n),
          np.float32(request.temperature), np.float32(request.top_p), key, np.bool_(request.top_logprobs > 0),
          self.vocab_limit)
      self._consume(drawn, (request,))

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
