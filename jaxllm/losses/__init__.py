"""The objective registry: every module of this package that declares `OBJECTIVE = Objective(...)` is one
training objective, found by `get(name)` / `names()`. Modules without it (common.py, vocab_chunks.py) are
helpers. Discovery imports every module here, so a broken loss file fails loudly, never silently missing.

A loss is `loss(params, frozen, batch, rng, *, model, cfg) -> (scalar loss, {name: scalar metric})`. The entry
says everything else a run needs to train it, so stages, the train loop and validation read it instead of
hard-coding per-objective facts: which stage feeds it batches, whether `state.frozen` must hold the reference
policy, which extra parameters it trains beside the model, and its config section and that section's checks.
The objective's name is also the `stage` of a config that trains it (configs/<name>.py).
"""
from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from typing import Any, Callable

import ml_collections

LossFn = Callable[..., tuple]
# stage modules (jaxllm/stages/) that feed objectives
FEEDS = ("pretrain", "sft", "preference", "grpo", "rft", "ppo", "classify")


@dataclasses.dataclass(frozen=True)
class Objective:
  name: str  # registry key, and config.stage of a run that trains it
  loss: LossFn
  # The stage module that builds its batches and runs it: pretrain (packed text), sft (chat turns with an
  # answer mask), preference (rows from `batches` below), grpo (rollouts), rft (rounds of kept samples),
  # ppo (rollouts with values and GAE advantages), classify (labelled texts)
  feed: str
  # feed "preference": (config, tokenizer) -> (train batch source, held-out batches, counts): the batch kind
  # the loss reads (shared-prompt pairs, tagged single answers, ...)
  batches: Callable[..., tuple] | None = None
  needs_reference: bool = False  # state.frozen keeps init_from's weights as the reference policy
  # (env, rng) -> {name: pytree} trained beside the model (e.g. a reward head); None = the model only
  extra_params: Callable[[Any, Any], dict] | None = None
  section: str = ""  # the config section it reads ('' = none beyond the shared keys)
  validate: Callable[[ml_collections.ConfigDict], None] | None = None  # checks of that section, raising ConfigError

  def __post_init__(self):
    if self.feed not in FEEDS:
      raise ValueError(f"objective {self.name!r}: feed {self.feed!r} is not one of {FEEDS}")
    if (self.feed == "preference") != (self.batches is not None):
      raise ValueError(f"objective {self.name!r}: `batches` is given exactly for feed 'preference'")


_REGISTRY: dict[str, Objective] = {}


def _discover() -> None:
  if _REGISTRY:
    return
  found: dict[str, Objective] = {}
  for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
    module = importlib.import_module(f"{__name__}.{info.name}")
    entry = getattr(module, "OBJECTIVE", None)
    if entry is None:
      continue
    if not isinstance(entry, Objective):
      raise TypeError(f"{module.__name__}.OBJECTIVE must be an Objective, got {type(entry).__name__}")
    if entry.name in found:
      raise ValueError(f"objective {entry.name!r} declared twice ({module.__name__})")
    found[entry.name] = entry
  _REGISTRY.update(found)


def find(name: str) -> Objective | None:
  _discover()
  return _REGISTRY.get(name)


def get(name: str) -> Objective:
  entry = find(name)
  if entry is None:
    raise ValueError(f"unknown objective {name!r}; registered: {names()}")
  return entry


def names() -> list[str]:
  _discover()
  return sorted(_REGISTRY)
