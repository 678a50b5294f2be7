"""Loss registry: every training objective is `loss_fn(params, frozen, batch, rng, *, model, cfg)` returning
`(scalar loss, {name: scalar metric})`, registered by name. A new objective is one file here plus one import.
"""
from __future__ import annotations

import importlib
from typing import Callable

LossFn = Callable[..., tuple]
_REGISTRY: dict[str, LossFn] = {}
# Modules that register losses; imported lazily so that `get` sees every objective.
_MODULES = ("lm", "reward", "dpo", "grpo")


def register(name: str):
  def wrap(fn: LossFn) -> LossFn:
    if name in _REGISTRY:
      raise ValueError(f"loss {name!r} registered twice")
    _REGISTRY[name] = fn
    return fn
  return wrap


def _load_all() -> None:
  for module in _MODULES:
    try:
      importlib.import_module(f"{__name__}.{module}")
    except ModuleNotFoundError as e:
      if e.name != f"{__name__}.{module}":
        raise


def get(name: str) -> LossFn:
  _load_all()
  if name not in _REGISTRY:
    raise ValueError(f"config.loss.name: unknown loss {name!r}; registered: {sorted(_REGISTRY)}")
  return _REGISTRY[name]


def names() -> list[str]:
  _load_all()
  return sorted(_REGISTRY)
