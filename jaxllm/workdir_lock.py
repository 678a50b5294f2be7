"""One run per workdir: an exclusive OS lock (flock) on `workdir/.lock`, held for the run's life.

The kernel releases the lock when the process exits in any way (kill -9 included), so a stale lock file never
blocks a later run; the file's content (holder PID and host) is only there to name the holder in the error.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import socket
from typing import Iterator

from jaxllm.errors import UserError

NAME = ".lock"


class WorkdirLocked(UserError):
  pass


@contextlib.contextmanager
def hold(workdir: str) -> Iterator[None]:
  """Lock `workdir` (created if needed) for the duration of the block, or refuse at once if another run has it."""
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, NAME)
  fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
  try:
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      holder = os.pread(fd, 256, 0).decode(errors="replace").strip() or "unknown"
      raise WorkdirLocked(f"workdir {workdir!r} is in use by another run ({holder}); wait for it to finish or "
                          f"use another workdir") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"pid {os.getpid()} on host {socket.gethostname()}\n".encode(), 0)
    yield
  finally:
    os.close(fd)  # releases the lock
