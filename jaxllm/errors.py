"""Errors a user can fix (config, data, paths, checkpoints, disk, memory) and the one helper config checks raise
them with. run.py prints a `UserError` as one line and exits with status 2, no traceback
(`--config.log.traceback=True` or JAXLLM_TRACEBACK=1 shows it); anything else is a bug and keeps its traceback.

A leaf module: loss files, stages and the validation in config.py all import it, it imports nothing of jaxllm.
"""
from __future__ import annotations


class UserError(Exception):
  """A problem in what the user gave (or in the machine they gave it to), told in one line naming the file /
  row / key / value."""


class ConfigError(UserError, ValueError):
  """A bad config value; the message starts with `config.<key>:`."""


class TrainingStopped(UserError):
  """The run stopped on purpose (e.g. too many consecutive non-finite steps); the last good state is on disk."""


class CheckpointError(UserError):
  """No checkpoint in the workdir could be restored."""


def require(ok: bool, key: str, message: str) -> None:
  if not ok:
    raise ConfigError(f"config.{key}: {message}")
