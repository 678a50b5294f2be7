"""Stages by name. A tool stage (tokenizer, eval, chat, export, pipeline) is `jaxllm/stages/<stage>.py`; a
training stage is a registered objective (jaxllm/losses/), run by the stage module that feeds it (its `feed`:
pretrain, sft, preference or grpo). Each defines `run(config) -> dict` (its final metrics)."""
from __future__ import annotations

import contextlib
import importlib

import jax
import ml_collections

from jaxllm import losses, runtime, workdir_lock
from jaxllm.config import validate

# Stages that only read their workdir; every other one writes it, one run at a time (jaxllm/workdir_lock.py).
READ_ONLY = ("chat", "export")


def module_name(stage: str) -> str:
  objective = losses.find(stage)
  return objective.feed if objective is not None else stage


def run(config: ml_collections.ConfigDict) -> dict:
  validate(config)  # before anything runs; runtime.prepare checks again against the devices and init_from
  lock = contextlib.nullcontext()
  if config.stage not in READ_ONLY:
    if "dist" in config:  # the pipeline has no dist section: each of its stages joins the job itself
      runtime.init_distributed(config)  # so that only process 0 takes the lock of a shared workdir
    if jax.process_index() == 0:
      lock = workdir_lock.hold(runtime.default_workdir(config))
  with lock:
    return importlib.import_module(f"{__name__}.{module_name(config.stage)}").run(config)
