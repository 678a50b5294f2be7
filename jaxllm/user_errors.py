"""Turn an exception from a run into the one line a user reads, or None for a bug (which keeps its traceback).

User errors: `UserError` and its kinds (config, data, resume, lock, checkpoint, divergence); the ValueError /
OSError that reading a user's files raises (they name the file); disk full anywhere in the cause chain
(orbax's async writer wraps it); and XLA running out of device memory.
"""
from __future__ import annotations

import errno

from jaxllm.errors import UserError


def _chain(e: BaseException):
  seen = set()
  while e is not None and id(e) not in seen:
    seen.add(id(e))
    yield e
    e = e.__cause__ or e.__context__


def _one_line(text: str) -> str:
  return " ".join(str(text).split())


def describe(e: BaseException) -> str | None:
  for link in _chain(e):
    if isinstance(link, OSError) and link.errno == errno.ENOSPC:
      where = f" writing {link.filename}" if link.filename else ""
      return f"disk full{where}: free space on that disk or point config.workdir elsewhere"
  for link in _chain(e):
    runtime_error = type(link).__name__ in ("JaxRuntimeError", "XlaRuntimeError")
    if runtime_error and ("RESOURCE_EXHAUSTED" in str(link) or "out of memory" in str(link).lower()):
      first = _one_line(str(link))[:300]
      return (f"out of memory: {first}. Lower data.batch_size or data.seq_len, raise optim.grad_accum, set "
              "model.remat=full, or shard over more devices")
  if isinstance(e, UserError):
    return _one_line(e)
  if isinstance(e, (ValueError, OSError, KeyError)):
    return f"{type(e).__name__}: {_one_line(e)}"
  return None
