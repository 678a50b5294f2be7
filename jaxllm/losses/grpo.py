"""GRPO: a clipped importance-ratio policy gradient over completion tokens, with a k3 KL penalty to the
reference policy (Shao et al. 2024), and the aggregation variants of DAPO (Yu et al. 2025) and Dr. GRPO
(Liu et al. 2025).

Per completion token t of row b (mask m = loss_mask, A_b the row's group-relative advantage):
  r    = exp(log pi(t) - old_logprobs(t))                     importance ratio to the rollout policy
  pg   = -min(r A, clip(r, 1 - clip_eps, 1 + clip_eps_high) A)
  kl   = exp(ref - log pi) - (ref - log pi) - 1               k3: unbiased, >= 0, 0 when pi = ref
  l    = pg + kl_beta * kl
aggregated (rl.loss_agg) as
  seq_mean    mean over rows of (sum_t m l / sum_t m): every completion weighs the same (GRPO)
  token_mean  sum m l / sum m over the batch: every token weighs the same (DAPO)
  constant    sum m l / (B * sampling.max_new_tokens): no length normalisation at all (Dr. GRPO)
Rows whose mask is all zero (padding rows, dropped zero-signal groups) count in none of the means, except
`constant`'s fixed B.

Log-probs come per sample (`sample_logprobs`), from any layout of the batch: plain rows, one per sample [R, L];
(what rollouts build, jaxllm/rl.py) each prompt run once and its G completions as rows behind it
(`shared_prompt`, [R, C]); or one branch row per prompt holding its G completions, read per sample through
`side_index`. Every per-sample array (loss_mask, advantages, ...) is [R, ...] in the layout's columns; the loss
is elementwise per token and reduced per row, so it is the same in every layout.

The batch carries `ref_logprobs`, computed once per rollout: the reference never
changes, so its log-probs of a rollout are fixed, and computing them with the rollout costs one forward pass
per rollout instead of one per optimizer step. It carries `old_logprobs` only when a rollout feeds several
optimizer steps; with one, the policy is the one that sampled and log pi itself (stop-gradient) is pi_old.
`sampler_logp_gap` = mean |log pi - the sampling engine's log-prob| over completion tokens: ~1e-6 in f32.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxllm import rewards
from jaxllm.errors import ConfigError, require
from jaxllm.losses import Objective
from jaxllm.losses.common import masked_mean, side_view, target_logprobs
from jaxllm.losses.shared_prompt import shared_prompt_logprobs
from jaxllm.state import policy_weights

LOSS_AGGS = ("seq_mean", "token_mean", "constant")


def aggregate(per_token_BL: jax.Array, mask_BL: jax.Array, how: str,
              max_new_tokens: int) -> tuple[jax.Array, jax.Array]:
  """(loss, its denominator). The train loop weights gradient-accumulation micro-batches by the denominator
  (reported as `target_tokens`), which makes k micro-batches exactly one batch for every aggregation."""
  if how == "token_mean":
    return masked_mean(per_token_BL, mask_BL)
  row_sum_B = (per_token_BL * mask_BL).sum(-1)
  if how == "constant":
    denominator = jnp.asarray(mask_BL.shape[0] * max_new_tokens, jnp.float32)
    return row_sum_B.sum() / denominator, denominator
  if how == "seq_mean":
    count_B = mask_BL.sum(-1)
    live_rows = (count_B > 0).astype(jnp.float32).sum()
    return (row_sum_B / jnp.maximum(count_B, 1.0)).sum() / jnp.maximum(live_rows, 1.0), live_rows
  raise ValueError(f"config.rl.loss_agg: {how!r} is not one of {LOSS_AGGS}")


def sample_logprobs(model, weights, lora, batch: dict, rng, chunk_size: int = 0) -> jax.Array:
  """log pi of every sample's targets, [R, L]: of plain rows as they are; of a shared-prompt batch (the prompts
  [P, Q] run once, `shared_prompt`) per completion, [R, C]; of group rows ([P, row_len], the prompt once and
  then each completion seeing the prompt and itself, `prefix_ids`) gathered per sample by `side_index`
  [P, G, L] into the rows each sample would have had alone (R = P * G, prompt-major)."""
  if "prompt_tokens" in batch:
    return shared_prompt_logprobs(model, weights, lora, batch, rng, chunk_size)
  logp, _ = target_logprobs(model, weights, lora, batch, rng, chunk_size)
  if "side_index" not in batch:
    return logp
  return side_view(logp, batch).reshape(-1, batch["side_index"].shape[-1])


def grpo_loss(params, frozen, batch, rng, *, model, cfg):
  rl = cfg.rl
  weights, lora = policy_weights(params, frozen)
  logp_BL = sample_logprobs(model, weights, lora, batch, rng, cfg.loss.chunk_size)
  mask_BL = batch["loss_mask"].astype(jnp.float32)
  live_BL = mask_BL > 0
  adv_B1 = batch["advantages"][:, None]
  # Differences are zeroed outside the mask before exp, so padding can never make inf * 0 = NaN.
  old_BL = batch["old_logprobs"] if "old_logprobs" in batch else jax.lax.stop_gradient(logp_BL)
  log_ratio_BL = jnp.where(live_BL, logp_BL - old_BL, 0.0)
  ratio_BL = jnp.exp(log_ratio_BL)
  high = rl.clip_eps_high if rl.clip_eps_high > 0 else rl.clip_eps
  clipped_BL = jnp.clip(ratio_BL, 1.0 - rl.clip_eps, 1.0 + high)
  pg_BL = -jnp.minimum(ratio_BL * adv_B1, clipped_BL * adv_B1)
  ref_diff_BL = jnp.where(live_BL, batch["ref_logprobs"] - logp_BL, 0.0)
  kl_BL = jnp.exp(ref_diff_BL) - ref_diff_BL - 1.0
  per_token_BL = pg_BL + rl.kl_beta * kl_BL
  loss, denominator = aggregate(per_token_BL, mask_BL, rl.loss_agg, cfg.sampling.max_new_tokens)

  # The clipped branch is the one min() picked where it is flat: the gradient of those tokens is zero.
  was_clipped_BL = (ratio_BL * adv_B1 > clipped_BL * adv_B1).astype(jnp.float32)
  kl, n_tokens = masked_mean(kl_BL, mask_BL)
  big = jnp.finfo(jnp.float32).max
  metrics = {
      "kl": kl,
      "pg_loss": aggregate(pg_BL, mask_BL, rl.loss_agg, cfg.sampling.max_new_tokens)[0],
      "clip_frac": masked_mean(was_clipped_BL, mask_BL)[0],
      "entropy": masked_mean(-logp_BL, mask_BL)[0],  # estimate: -log pi of the sampled tokens
      "ratio_mean": masked_mean(ratio_BL, mask_BL)[0],
      "sampler_logp_gap": masked_mean(jnp.abs(jnp.where(live_BL, logp_BL - batch["sampler_logprobs"], 0.0)),
                                      mask_BL)[0],
      "ratio_max": jnp.where(n_tokens > 0, jnp.where(live_BL, ratio_BL, -big).max(), 1.0),
      "ratio_min": jnp.where(n_tokens > 0, jnp.where(live_BL, ratio_BL, big).min(), 1.0),
      "completion_tokens": n_tokens,
      "target_tokens": denominator,
  }
  return loss, metrics


def validate(config) -> None:
  """The rl.* keys, and how they must agree with data.* / steps / checkpoint.every."""
  r = config.rl
  rows = r.prompts_per_step * r.group_size
  steps_per_rollout = r.ppo_epochs * r.minibatches
  require(r.group_size >= 2, "rl.group_size", f"needs >= 2 samples per prompt to compare, got {r.group_size}")
  require(r.prompts_per_step >= 1, "rl.prompts_per_step", f"must be >= 1, got {r.prompts_per_step}")
  require(r.ppo_epochs >= 1, "rl.ppo_epochs", f"must be >= 1, got {r.ppo_epochs}")
  require(r.minibatches >= 1 and r.prompts_per_step % r.minibatches == 0, "rl.minibatches",
          f"{r.minibatches} does not divide rl.prompts_per_step = {r.prompts_per_step} (a minibatch takes whole "
          f"groups: a group is one row, its prompt shared by its completions)")
  require(config.data.batch_size == rows // r.minibatches, "data.batch_size",
          f"{config.data.batch_size} != rl.prompts_per_step * rl.group_size / rl.minibatches = "
          f"{rows // max(r.minibatches, 1)} (the rows of one optimizer step; leave data.batch_size unset in "
          f"grpo configs and it follows the rl.* keys)")
  new = config.sampling.max_new_tokens
  require(r.max_prompt_len >= 1, "rl.max_prompt_len", f"must be >= 1, got {r.max_prompt_len}")
  require(config.data.seq_len >= r.max_prompt_len + new, "data.seq_len",
          f"{config.data.seq_len} < rl.max_prompt_len + sampling.max_new_tokens = {r.max_prompt_len + new}")
  require(config.steps % steps_per_rollout == 0, "steps",
          f"{config.steps} is not a multiple of rl.ppo_epochs * rl.minibatches = {steps_per_rollout} (optimizer "
          f"steps per rollout), so the run would end inside a rollout")
  require(config.checkpoint.every % steps_per_rollout == 0, "checkpoint.every",
          f"{config.checkpoint.every} is not a multiple of rl.ppo_epochs * rl.minibatches = {steps_per_rollout} "
          f"(optimizer steps per rollout): checkpoints must fall on rollout boundaries for an exact resume")
  require(config.sampling.temperature > 0, "sampling.temperature",
          f"must be > 0 for rollouts (greedy groups carry no signal), got {config.sampling.temperature}")
  require(0 < r.clip_eps < 1, "rl.clip_eps", f"must be in (0, 1), got {r.clip_eps}")
  require(r.clip_eps_high >= 0, "rl.clip_eps_high", f"must be >= 0 (0 = rl.clip_eps), got {r.clip_eps_high}")
  require(r.kl_beta >= 0, "rl.kl_beta", f"must be >= 0, got {r.kl_beta}")
  require(r.adv_eps > 0, "rl.adv_eps", f"must be > 0, got {r.adv_eps}")
  require(r.loss_agg in LOSS_AGGS, "rl.loss_agg", f"{r.loss_agg!r} is not one of {LOSS_AGGS}")
  require(r.eval_prompts >= 0 and r.eval_batch_size >= 1, "rl.eval_prompts",
          "rl.eval_prompts must be >= 0 and rl.eval_batch_size >= 1")
  try:
    named = rewards.parse(r.rewards)
  except rewards.RewardError as e:
    raise ConfigError(str(e)) from None
  require("reward_model" not in named or bool(r.reward_model), "rl.reward_model",
          "the 'reward_model' reward in rl.rewards needs a reward-stage workdir here")


OBJECTIVE = Objective(name="grpo", loss=grpo_loss, feed="grpo", needs_reference=True, section="rl",
                      validate=validate)
