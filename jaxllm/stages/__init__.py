"""Stages by name. A tool stage (tokenizer, eval, chat, export, pipeline) is `jaxllm/stages/<stage>.py`; a
training stage is a registered objective (jaxllm/losses/), run by the stage module that feeds it (its `feed`:
pretrain, sft, preference or grpo). Each defines `run(config) -> dict` (its final metrics)."""
from __future__ import annotations

import importlib

import ml_collections

from jaxllm import losses
from jaxllm.config import validate


def module_name(stage: str) -> str:
  objective = losses.find(stage)
  return objective.feed if objective is not None else stage


def run(config: ml_collections.ConfigDict) -> dict:
  validate(config)  # before anything runs; runtime.prepare checks again against the devices and init_from
  return importlib.import_module(f"{__name__}.{module_name(config.stage)}").run(config)
