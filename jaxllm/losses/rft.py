"""Objective `rft`: rejection-sampling fine-tuning (expert iteration). The loss is SFT's masked next-token
cross-entropy (losses/lm.py) over the policy's own verified-correct answers, which the `rft` stage samples,
selects and serves round after round (jaxllm/rft.py). Its section `rft` holds the round and selection keys;
prompts, rewards and held-out evaluation read the `rl` keys GRPO reads (data/prompts.py, rewards.py)."""
from __future__ import annotations

import ml_collections

from jaxllm import rewards
from jaxllm.errors import ConfigError, require
from jaxllm.losses import Objective
from jaxllm.losses.lm import lm_loss
from jaxllm.rft import KEEP_RULES


def validate(config: ml_collections.ConfigDict) -> None:
  f, r = config.rft, config.get("rl")
  require(r is not None, "rl", "missing: rft reads rl.max_prompt_len, rl.rewards and the rl.eval_* keys "
          "(configs/rft.py defines them)")
  require(f.samples >= 1, "rft.samples", f"must be >= 1, got {f.samples}")
  require(f.problems_per_round >= 1, "rft.problems_per_round", f"must be >= 1, got {f.problems_per_round}")
  require(f.steps_per_round >= 1, "rft.steps_per_round", f"must be >= 1, got {f.steps_per_round}")
  require(f.keep in KEEP_RULES, "rft.keep", f"{f.keep!r} is not one of {KEEP_RULES}")
  require(f.max_keep_per_problem >= 0, "rft.max_keep_per_problem",
          f"must be >= 0 (0 = no cap), got {f.max_keep_per_problem}")
  require(config.sampling.temperature > 0, "sampling.temperature",
          f"must be > 0 for sampling k answers (greedy gives one), got {config.sampling.temperature}")
  new = config.sampling.max_new_tokens
  require(config.data.seq_len >= r.max_prompt_len + new, "data.seq_len",
          f"{config.data.seq_len} < rl.max_prompt_len + sampling.max_new_tokens = {r.max_prompt_len + new}")
  try:
    named = rewards.parse(r.rewards)
  except rewards.RewardError as e:
    raise ConfigError(str(e)) from None
  require(f.verifier in named, "rft.verifier", f"{f.verifier!r} is not one of the rewards in rl.rewards "
          f"({r.rewards!r})")
  require("reward_model" not in named or bool(r.reward_model), "rl.reward_model",
          "the 'reward_model' reward in rl.rewards needs a reward-stage workdir here")


OBJECTIVE = Objective(name="rft", loss=lm_loss, feed="rft", section="rft", validate=validate)
