"""Stage `dpo`: direct preference optimisation of init_from's policy against a frozen copy of itself, on
preference pairs (the built-in task world, or data.name). Held-out metrics: implicit-reward pair `accuracy`,
`policy_accuracy` and the chosen answer's summed log-probability `chosen_logp`.

  python run.py --config=configs/dpo.py --config.init_from=SFT_WORKDIR --config.workdir=W
"""
from __future__ import annotations

import ml_collections

from jaxllm import runtime, train
from jaxllm.config import ConfigError
from jaxllm.data import preference
from jaxllm.losses.dpo import VARIANTS


def check(config: ml_collections.ConfigDict) -> None:
  d = config.dpo
  if d.variant not in VARIANTS:
    raise ConfigError(f"config.dpo.variant: {d.variant!r} is not one of {VARIANTS}")
  if d.beta <= 0:
    raise ConfigError(f"config.dpo.beta: must be > 0, got {d.beta}")
  if not 0.0 <= d.label_smoothing < 0.5:
    raise ConfigError(f"config.dpo.label_smoothing: must be in [0, 0.5), got {d.label_smoothing}")


def run(config: ml_collections.ConfigDict) -> dict:
  check(config)
  env = runtime.prepare(config)
  c = env.config
  if not c.init_from:
    env.log("dpo: no init_from, so the policy and its reference start from the same random init")
  batches, eval_batches, counts = preference.build(c, env.tokenizer)
  env.log(f"dpo: {counts}")
  loss = c.loss.name or "dpo"
  data_counts = {"data_truncated": counts["truncated_too_long"], "data_dropped": counts["dropped_too_long"]}
  task = train.Task(loss=loss, batches=batches, needs_reference=True, host_metrics=lambda: data_counts,
                    evaluate=lambda state: train.evaluate_loss(env, loss, state, eval_batches))
  return {**train.fit(env, task), **counts}
