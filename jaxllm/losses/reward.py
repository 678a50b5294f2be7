"""Bradley-Terry reward-model loss on preference pairs: -log sigmoid(r_chosen - r_rejected - margin).

Both sides of every pair run as one [2B, L] forward pass; each reward is the scalar head at the side's last
real token (`reward_model.rewards`). `cfg.reward.margin` > 0 asks for chosen to beat rejected by at least that
much (a constant margin; LLaMA-2 used a per-pair one from rating gaps). Pair means are weighted by
`batch["weight"]` (0 for filler rows of a short held-out set), as sum / max(count, 1).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxllm import reward_model
from jaxllm.losses import register
from jaxllm.state import policy_weights


def flat_pairs(batch: dict) -> dict:
  """[B, 2, ...] pair arrays -> [2B, ...] rows (row 2i chosen, 2i+1 rejected of pair i); no data movement."""
  return {k: batch[k].reshape((-1,) + batch[k].shape[2:])
          for k in ("tokens", "targets", "positions", "segment_ids", "loss_mask", "last_index")}


def pair_mean(x_B: jax.Array, weight_B: jax.Array) -> jax.Array:
  return (x_B * weight_B).sum() / jnp.maximum(weight_B.sum(), 1.0)


def ranked_right(margin_B: jax.Array) -> jax.Array:
  """1 when chosen scores higher, 0 when lower; a tie counts half, so an untrained model scores 0.5, not 0."""
  return jnp.where(margin_B > 0, 1.0, jnp.where(margin_B < 0, 0.0, 0.5))


def reward_loss(params, frozen, batch, rng, *, model, cfg):
  weights, lora = policy_weights(params, frozen)
  rows = flat_pairs(batch)
  r_2B = reward_model.rewards(model, weights, lora, params[reward_model.HEAD], rows["tokens"], rows["positions"],
                              rows["segment_ids"], rows["last_index"], rng)
  r_B2 = r_2B.reshape(-1, 2)
  margin_B = r_B2[:, 0] - r_B2[:, 1]
  w_B = batch["weight"]
  loss = pair_mean(-jax.nn.log_sigmoid(margin_B - cfg.reward.margin), w_B)
  metrics = {
      "accuracy": pair_mean(ranked_right(margin_B), w_B),
      "margin": pair_mean(margin_B, w_B),
      "chosen_reward": pair_mean(r_B2[:, 0], w_B),
      "rejected_reward": pair_mean(r_B2[:, 1], w_B),
      "reward_mean": pair_mean(r_B2.mean(axis=1), w_B),
  }
  return loss, metrics


register("reward")(reward_loss)
