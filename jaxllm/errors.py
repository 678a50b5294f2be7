"""The error every configuration check raises, and the one helper that raises it (a leaf module: loss files,
stages and the validation in config.py all import it, it imports nothing of jaxllm)."""
from __future__ import annotations


class ConfigError(ValueError):
  """A bad config value; the message starts with `config.<key>:`."""


def require(ok: bool, key: str, message: str) -> None:
  if not ok:
    raise ConfigError(f"config.{key}: {message}")
