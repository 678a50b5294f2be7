"""Stage `serve`: an OpenAI-compatible HTTP server with continuous batching and a chat page (configs/serve.py).

  python run.py --config=configs/serve.py --config.init_from=W [--config.serve.port=8000]

Runs until SIGTERM / Ctrl-C; then lets running requests finish (up to serve.shutdown_timeout), ends the
rest, and prints how much it served.
"""
from __future__ import annotations

import contextlib
import signal

import ml_collections

from jaxllm.serve import server as server_lib


def run(config: ml_collections.ConfigDict) -> dict:
  server = server_lib.build(config)
  engine = server.engine
  # uvicorn prints nothing at log_level=warning; say where to go once the socket is bound
  original_startup = server.uvicorn.startup

  async def startup(sockets=None):
    await original_startup(sockets)
    print(f"serve: {server_lib.model_name(config)} at {server.url} (chat page at {server.url}/, "
          f"{engine.options.max_batch} slots of {engine.options.context} tokens)", flush=True)

  server.uvicorn.startup = startup
  # uvicorn re-raises the signal it caught once it has shut down, which would kill the process before the
  # final metrics are printed: take the signals here and ask it to exit instead
  server.uvicorn.capture_signals = contextlib.nullcontext
  for sig in (signal.SIGINT, signal.SIGTERM):
    signal.signal(sig, server.uvicorn.handle_exit)
  server.uvicorn.run()  # returns after SIGTERM / SIGINT: running requests finish (up to serve.shutdown_timeout)
  engine.stop()
  return {"decode_steps": engine.steps, "requests": engine.submitted}
