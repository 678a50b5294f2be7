"""Rewards for RL: plain functions registered by name, combined with weights from the config.

  rl.rewards = "exact_answer:1.0,format:0.1"       # name:weight, comma-separated (weight defaults to 1)

A reward is `fn(completions: list[str], references: list[dict]) -> array [N]`: completion i is the decoded
assistant reply (stop token removed), references[i] the prompt's record ({"messages": prompt turns,
"answer": str, ...} plus "truncated": bool, set by the rollout). Adding one is a few lines:

  @rewards.register("short")
  def short(completions, references):
    return np.array([len(c) < 80 for c in completions], np.float32)

Rewards that must load something once (a reward model) register a factory `make(rl_config) -> fn` with
`register_factory`. Every call is checked: a reward that raises, returns the wrong shape or a non-finite
value stops the run with an error naming it.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import numpy as np

from jaxllm import answers

RewardFn = Callable[[list[str], list[dict]], np.ndarray]
_FACTORIES: dict[str, Callable[..., RewardFn]] = {}


class RewardError(ValueError):
  pass


def register_factory(name: str):
  """Register `make(rl_config) -> RewardFn` for a reward that needs set-up (loaded once per run)."""
  def wrap(make):
    if name in _FACTORIES:
      raise ValueError(f"reward {name!r} registered twice")
    _FACTORIES[name] = make
    return make
  return wrap


def register(name: str):
  """Register a plain reward function `fn(completions, references) -> [N]`."""
  def wrap(fn: RewardFn) -> RewardFn:
    register_factory(name)(lambda rl_config: fn)
    return fn
  return wrap


def names() -> list[str]:
  return sorted(_FACTORIES)


def parse(spec: str) -> dict[str, float]:
  """"a:1.0,b:0.1" -> {"a": 1.0, "b": 0.1}; a bare name has weight 1. Errors name config.rl.rewards."""
  out: dict[str, float] = {}
  for part in (p.strip() for p in spec.split(",")):
    if not part:
      continue
    name, _, weight = part.partition(":")
    name = name.strip()
    if name not in _FACTORIES:
      raise RewardError(f"config.rl.rewards: unknown reward {name!r}; registered: {names()}")
    try:
      out[name] = float(weight) if weight.strip() else 1.0
    except ValueError:
      raise RewardError(f"config.rl.rewards: weight of {name!r} is not a number: {weight!r}") from None
    if not np.isfinite(out[name]):
      raise RewardError(f"config.rl.rewards: weight of {name!r} must be finite, got {out[name]}")
  if not out:
    raise RewardError(f"config.rl.rewards: no reward named in {spec!r}")
  return out


def call(name: str, fn: RewardFn, completions: list[str], references: list[dict]) -> np.ndarray:
  """fn's rewards as f32 [N], or a RewardError naming `name` and what went wrong."""
  n = len(completions)
  try:
    out = fn(completions, references)
  except Exception as e:  # any failure inside a user's reward is reported with its name
    raise RewardError(f"reward {name!r} raised {type(e).__name__}: {e}") from e
  try:
    values = np.asarray(out, np.float32)
  except (TypeError, ValueError) as e:
    raise RewardError(f"reward {name!r} returned {type(out).__name__}, not numbers: {e}") from None
  if values.shape != (n,):
    raise RewardError(f"reward {name!r} returned shape {values.shape} for {n} completions; expected ({n},)")
  bad = np.flatnonzero(~np.isfinite(values))
  if bad.size:
    raise RewardError(f"reward {name!r} returned a non-finite value ({values[bad[0]]}) for completion "
                      f"{bad[0]}: {completions[bad[0]]!r:.120}")
  return values


@dataclasses.dataclass
class Combined:
  """The weighted sum of the configured rewards; per-reward values are kept for metrics."""
  weights: dict[str, float]
  fns: dict[str, RewardFn]

  def __call__(self, completions: list[str], references: list[dict]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    if len(completions) != len(references):
      raise RewardError(f"{len(completions)} completions for {len(references)} references")
    parts = {name: call(name, self.fns[name], completions, references) for name in self.weights}
    total = np.zeros(len(completions), np.float32)
    for name, w in self.weights.items():
      total += w * parts[name]
    return total, parts


def build(rl_config) -> Combined:
  """The rewards of `rl_config.rewards`, each made once."""
  weights = parse(rl_config.rewards)
  return Combined(weights, {name: _FACTORIES[name](rl_config) for name in weights})


# ------------------------------------------------------------------------------------------ built-in rewards

def _marked_answer(text: str) -> str | None:
  """The number right after the last "####", or None (no fallback to other numbers)."""
  _, marker, tail = text.rpartition("####")
  last = "####" + tail  # only the last marker, so the checks below see nothing before it
  return answers.extract_final_answer(last) if marker and answers.has_answer_format(last) else None


@register("exact_answer")
def exact_answer(completions: list[str], references: list[dict]) -> np.ndarray:
  """1 if the number after the last "####" equals the reference answer, else 0 (strict: the format counts)."""
  return np.array([answers.answers_match(_marked_answer(c), r["answer"]) for c, r in zip(completions, references)],
                  np.float32)


@register("gsm8k")
def gsm8k(completions: list[str], references: list[dict]) -> np.ndarray:
  """1 if the final number (after "####", else the last number) equals the answer after normalising commas,
  "$" and trailing zeros ("1,234" = "1234", "$18.00" = "18", "18." = "18"), else 0."""
  return np.array([answers.answers_match(answers.extract_final_answer(c), r["answer"])
                   for c, r in zip(completions, references)], np.float32)


@register("format")
def answer_format(completions: list[str], references: list[dict]) -> np.ndarray:
  """1 if the reply contains "#### <number>", else 0."""
  return np.array([answers.has_answer_format(c) for c in completions], np.float32)


@register_factory("reward_model")
def reward_model(rl_config) -> RewardFn:
  """Scores of a trained reward model (rl.reward_model: a `reward` stage workdir) on (prompt, reply).

  A model trained with reward.loglik_init > 0 scores in nats of log-likelihood: the prompt's share is the same
  for a whole group (advantages ignore it), but replies to one prompt can differ by several nats, so give it a
  weight below 1 when it is mixed with 0/1 rewards such as exact_answer."""
  from jaxllm.reward_model import RewardModel

  if not rl_config.reward_model:
    raise RewardError("config.rl.reward_model: the 'reward_model' reward needs a reward-stage workdir")
  rm = RewardModel.load(rl_config.reward_model)

  def score(completions: Sequence[str], references: Sequence[dict]) -> np.ndarray:
    return rm.score([(r["messages"], c) for c, r in zip(completions, references)])

  return score
