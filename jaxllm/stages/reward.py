"""Stage `reward`: a reward model (the trunk of init_from plus a scalar head) trained with the Bradley-Terry
loss on preference pairs (the built-in task world, or data.name). Held-out metric: pair `accuracy`.

  python run.py --config=configs/reward.py --config.init_from=SFT_WORKDIR --config.workdir=W

The trained head is saved with the model in the checkpoint (`params["score_head"]`); `reward_model.RewardModel
.load(W)` scores texts or tokens with it. init_from may itself be a reward run: its head is trained further.
"""
from __future__ import annotations

import ml_collections

from jaxllm import reward_model, runtime, train
from jaxllm.config import ConfigError
from jaxllm.data import preference


def check(config: ml_collections.ConfigDict) -> None:
  if config.reward.head_init < 0:
    raise ConfigError(f"config.reward.head_init: must be >= 0 (a std; 0 = zeros), got {config.reward.head_init}")
  if config.reward.margin < 0:
    raise ConfigError(f"config.reward.margin: must be >= 0, got {config.reward.margin}")
  for key in ("prefix_weight", "lm_weight", "loglik_init"):
    if config.reward[key] < 0:
      raise ConfigError(f"config.reward.{key}: must be >= 0, got {config.reward[key]}")


def run(config: ml_collections.ConfigDict) -> dict:
  check(config)
  env = runtime.prepare(config)
  c = env.config
  batches, eval_batches, counts = preference.build(c, env.tokenizer)
  env.log(f"reward: {counts}")
  loss = c.loss.name or "reward"

  def head(rng):
    if env.pretrained is not None and reward_model.HEAD in env.pretrained.extras:
      return {reward_model.HEAD: env.pretrained.extras[reward_model.HEAD]}
    return {reward_model.HEAD: reward_model.init_head(rng, c.model.d_model, c.reward.head_init,
                                                            c.reward.loglik_init)}

  data_counts = {"data_truncated": counts["truncated_too_long"], "data_dropped": counts["dropped_too_long"]}
  task = train.Task(loss=loss, batches=batches, extra_params=head, host_metrics=lambda: data_counts,
                    evaluate=lambda state: train.evaluate_loss(env, loss, state, eval_batches))
  return {**train.fit(env, task), **counts}
