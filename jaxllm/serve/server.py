"""Assemble a server from a config: model -> Engine -> Api -> uvicorn. The `serve` stage runs it in the main
thread (uvicorn then owns SIGINT/SIGTERM); tests and benchmarks run it in a background thread with `start`."""
from __future__ import annotations

import contextlib
import dataclasses
import os
import threading
import time

import ml_collections
import uvicorn

from jaxllm.config import ConfigError
from jaxllm.serve.api import Api, ApiOptions
from jaxllm.serve.engine import Engine, EngineOptions

POSITIVE = ("max_batch", "max_queue", "max_tokens", "prefill_per_step", "steps_per_dispatch", "request_timeout",
            "shutdown_timeout")


def validate(s: ml_collections.ConfigDict, max_seq_len: int) -> None:
  for key in POSITIVE:
    if not s[key] > 0:
      raise ConfigError(f"config.serve.{key}: must be > 0, got {s[key]!r}")
  if s.kv_block < 0:
    raise ConfigError(f"config.serve.kv_block: must be >= 0 (0 = the default), got {s.kv_block}")
  if not 0 <= s.port < 65536:
    raise ConfigError(f"config.serve.port: must be in [0, 65535], got {s.port}")
  if not 0 <= s.context <= max_seq_len:
    raise ConfigError(f"config.serve.context: must be in [0, model.max_seq_len={max_seq_len}] (0 = all of it), "
                      f"got {s.context}")
  if s.api_key_env and not s.api_key and not os.environ.get(s.api_key_env):
    raise ConfigError(f"config.serve.api_key_env: the environment variable {s.api_key_env!r} is unset or empty")


def model_name(config: ml_collections.ConfigDict) -> str:
  return config.serve.model_name or os.path.basename(os.path.normpath(config.init_from))


@dataclasses.dataclass
class Server:
  engine: Engine
  uvicorn: uvicorn.Server
  thread: threading.Thread | None = None

  @property
  def url(self) -> str:
    host, port = self.uvicorn.servers[0].sockets[0].getsockname()[:2]
    return f"http://{host}:{port}"

  def start(self, timeout: float = 60.0) -> "Server":
    """Serve from a background thread (no signal handling); returns once it listens."""
    self.thread = threading.Thread(target=self.uvicorn.run, name="jaxllm-http", daemon=True)
    self.thread.start()
    deadline = time.monotonic() + timeout
    while not self.uvicorn.started:
      if not self.thread.is_alive() or time.monotonic() > deadline:
        raise RuntimeError("the HTTP server did not start")
      time.sleep(0.02)
    return self

  def stop(self, timeout: float = 30.0) -> None:
    self.uvicorn.should_exit = True
    if self.thread is not None:
      self.thread.join(timeout)
    self.engine.stop()


def build(config: ml_collections.ConfigDict, log=print) -> Server:
  """Load init_from, start the engine thread, and wrap both in a uvicorn server (not yet listening)."""
  from jaxllm.stages.chat import load

  s = config.serve
  model, weights, tokenizer = load(config)
  validate(s, model.cfg.max_seq_len)
  context = s.context or model.cfg.max_seq_len
  engine = Engine(model, weights, tokenizer, EngineOptions(max_batch=s.max_batch, context=context,
                                                           max_queue=s.max_queue,
                                                           prefill_per_step=s.prefill_per_step,
                                                           steps_per_dispatch=s.steps_per_dispatch,
                                                           kv_block=s.kv_block, seed=config.seed))
  if s.warmup:
    start = time.perf_counter()
    engine.warm_up()
    log(f"serve: compiled in {time.perf_counter() - start:.1f}s")
  engine.start()
  api = Api(engine, ApiOptions(model_name=model_name(config), api_key=s.api_key or os.environ.get(s.api_key_env, ""),
                               default_max_tokens=s.max_tokens, request_timeout=s.request_timeout))

  @contextlib.asynccontextmanager
  async def lifespan(app):
    yield
    engine.stop()  # after uvicorn has let running requests finish (or cut them at shutdown_timeout)

  server = uvicorn.Server(uvicorn.Config(api.app(lifespan), host=s.host, port=s.port, log_level="warning",
                                         timeout_graceful_shutdown=int(s.shutdown_timeout)))
  return Server(engine, server)


