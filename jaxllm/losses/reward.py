"""Bradley-Terry reward-model loss on preference pairs: -log sigmoid(r_chosen - r_rejected - margin).

Both sides of every pair run as one [2B, L] forward pass; each reward is the scalar head at the side's last
real token, plus, when the head holds a `loglik_weight` (`cfg.reward.loglik_init` > 0), that trained weight
times the trunk's own log-likelihood of the sequence (`reward_model.read_rewards`, which scoring reads too).
`cfg.reward.margin` > 0 asks for chosen to beat rejected by at least that much (a constant margin; LLaMA-2 used
a per-pair one from rating gaps). Pair means are weighted by `batch["weight"]` (0 for filler rows of a short
held-out set), as sum / max(count, 1).

Optional token-level supervision (`cfg.reward.prefix_weight` > 0): the same BT loss on every aligned pair of
prefixes from the first token where the answers differ to the end of the shorter one (every such rejected
prefix already holds the difference). As with Cobbe et al. 2021's token-level verifiers, this teaches the trunk
to flag a mistake where it happens, which the last token then only has to look up; a small model otherwise
struggles to re-derive, at the final token, an arithmetic slip many tokens back. The reward is still the head
at the last real token; the auxiliary term only shapes training.

Optional LM regularisation (`cfg.reward.lm_weight` > 0; GRM, Yang et al. 2024): + lm_weight * per-token NLL of
the chosen answers under the trunk's own (trained along) LM head. The Bradley-Terry loss gives one bit per pair
and, alone, lets the trunk forget what next-token prediction taught it (here: the arithmetic the reward has
to check); the NLL term keeps those features in the hidden states the head reads.

Why the log-likelihood term: on the built-in world a wrong answer differs from the right one by one slipped
number, which the trunk's next-token prediction flags (the SFT model's summed log-probs rank 95.7% of held-out
pairs right) but which the last token's hidden state must re-derive from many tokens back; the plain scalar head
plateaued at 87-90% however long it trained. Starting from weight 1 the reward begins as that ranking and the
Bradley-Terry loss then trains head, weight and trunk together (README, Measured).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxllm import reward_model
from jaxllm.losses import register
from jaxllm.losses.common import masked_mean
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


def prefix_loss(r_B2L: jax.Array, batch: dict, margin: float) -> jax.Array:
  """Mean BT loss over aligned prefixes (chosen[:t+1] vs rejected[:t+1]) from the first differing token to the
  end of the shorter side, per pair, then over pairs."""
  tokens_B2L, last_B2 = batch["tokens"], batch["last_index"]
  slot_L = jnp.arange(tokens_B2L.shape[-1])
  first_B = jnp.argmax(tokens_B2L[:, 0] != tokens_B2L[:, 1], axis=-1)  # chosen != rejected, so one exists
  mask_BL = (slot_L >= first_B[:, None]) & (slot_L <= last_B2.min(axis=1)[:, None])
  loss_BL = -jax.nn.log_sigmoid(r_B2L[:, 0] - r_B2L[:, 1] - margin)
  per_pair_B = (loss_BL * mask_BL).sum(-1) / jnp.maximum(mask_BL.sum(-1), 1)
  return pair_mean(per_pair_B, batch["weight"])


def chosen_nll(next_logp_2BL: jax.Array, rows: dict, weight_B: jax.Array) -> jax.Array:
  """Per-token NLL of the chosen answers (rows 0, 2, 4, ... are chosen) from the trunk's own LM head's
  `reward_model.next_token_logprobs`. Slot t's target is token t + 1, so the last slot (never an answer
  target) has no entry."""
  return masked_mean(-next_logp_2BL[0::2], rows["loss_mask"][0::2, :-1] * weight_B[:, None])[0]


def reward_loss(params, frozen, batch, rng, *, model, cfg):
  weights, lora = policy_weights(params, frozen)
  rows = flat_pairs(batch)
  hidden_2BLD = reward_model.hidden_states(model, weights, lora, rows["tokens"], rows["positions"],
                                           rows["segment_ids"], rng)
  head = params[reward_model.HEAD]
  next_logp_2BL = None  # the LM head runs once for both the log-likelihood reward term and the NLL term
  if reward_model.LOGLIK in head or cfg.reward.lm_weight > 0:
    next_logp_2BL = reward_model.next_token_logprobs(model, weights, hidden_2BLD, rows["tokens"],
                                                     cfg.loss.chunk_size)
  r_B2 = reward_model.read_rewards(model, weights, head, hidden_2BLD, rows["tokens"], rows["segment_ids"],
                                   rows["last_index"], next_logp_BL=next_logp_2BL).reshape(-1, 2)
  margin_B = r_B2[:, 0] - r_B2[:, 1]
  w_B = batch["weight"]
  loss = pair_mean(-jax.nn.log_sigmoid(margin_B - cfg.reward.margin), w_B)
  extra = {}
  if cfg.reward.prefix_weight > 0:
    r_2BL = reward_model.head_scores(head, hidden_2BLD)
    extra["prefix_loss"] = prefix_loss(r_2BL.reshape((-1, 2) + r_2BL.shape[1:]), batch, cfg.reward.margin)
    loss = loss + cfg.reward.prefix_weight * extra["prefix_loss"]
  if cfg.reward.lm_weight > 0:
    extra["chosen_nll"] = chosen_nll(next_logp_2BL, rows, w_B)
    loss = loss + cfg.reward.lm_weight * extra["chosen_nll"]
  metrics = {
      "accuracy": pair_mean(ranked_right(margin_B), w_B),
      "margin": pair_mean(margin_B, w_B),
      "chosen_reward": pair_mean(r_B2[:, 0], w_B),
      "rejected_reward": pair_mean(r_B2[:, 1], w_B),
      "reward_mean": pair_mean(r_B2.mean(axis=1), w_B),
  }
  if reward_model.LOGLIK in head:
    extra[reward_model.LOGLIK] = head[reward_model.LOGLIK]
  return loss, {**metrics, **extra}


register("reward")(reward_loss)
