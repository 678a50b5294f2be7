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
  constant    sum m l / (B * max_new_tokens): no length normalisation at all (Dr. GRPO)
Rows whose mask is all zero (padding rows, dropped zero-signal groups) count in none of the means, except
`constant`'s fixed B.

Log-probs come per sample, [R, L] (`sample_logprobs`), from either layout of the batch: plain rows, one per
sample, or (what rollouts build, jaxllm/rl.py) one row per prompt holding its G completions behind the shared
prompt, read per sample through `side_index`; every per-sample array (loss_mask, advantages, ...) is [R, ...].

The batch carries `ref_logprobs`, computed once per rollout: the reference never
changes, so its log-probs of a rollout are fixed, and computing them with the rollout costs one forward pass
per rollout instead of one per optimizer step. It carries `old_logprobs` only when a rollout feeds several
optimizer steps; with one, the policy is the one that sampled and log pi itself (stop-gradient) is pi_old.
`sampler_logp_gap` = mean |log pi - the sampling engine's log-prob| over completion tokens: ~1e-6 in f32.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxllm.losses import register
from jaxllm.losses.common import masked_mean, side_view, target_logprobs
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
  """log pi of every sample's targets, [R, L]: of plain rows as they are; of group rows ([P, row_len], the
  prompt once and then each completion seeing the prompt and itself, `prefix_ids`) gathered per sample by
  `side_index` [P, G, L] into the rows each sample would have had alone (R = P * G, prompt-major)."""
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
  loss, denominator = aggregate(per_token_BL, mask_BL, rl.loss_agg, rl.max_new_tokens)

  # The clipped branch is the one min() picked where it is flat: the gradient of those tokens is zero.
  was_clipped_BL = (ratio_BL * adv_B1 > clipped_BL * adv_B1).astype(jnp.float32)
  kl, n_tokens = masked_mean(kl_BL, mask_BL)
  big = jnp.finfo(jnp.float32).max
  metrics = {
      "kl": kl,
      "pg_loss": aggregate(pg_BL, mask_BL, rl.loss_agg, rl.max_new_tokens)[0],
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


register("grpo")(grpo_loss)
