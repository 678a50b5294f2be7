"""Stages by name: `jaxllm/stages/<stage>.py` defines `run(config) -> dict` (its final metrics)."""
from __future__ import annotations

import importlib

import ml_collections

from jaxllm.config import STAGES, ConfigError


def run(config: ml_collections.ConfigDict) -> dict:
  if config.stage not in STAGES:
    raise ConfigError(f"config.stage: {config.stage!r} is not one of {STAGES}")
  return importlib.import_module(f"{__name__}.{config.stage}").run(config)
