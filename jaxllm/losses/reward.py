"""Objective `reward`: a reward model (the trunk of init_from plus a scalar head) trained with the Bradley-Terry
loss on preference pairs: -log sigmoid(r_chosen - r_rejected - margin). Held-out metric: pair `accuracy`.

The head is the objective's extra trained parameter (`score_head` below): saved with the model in the
checkpoint (`params["score_head"]`), read back by `reward_model.RewardModel.load(W)` to score texts or tokens;
when init_from is itself a reward run, its head is trained further.

A batch holds each pair as one row, the prompt shared by both answers (data/preference.py); the trunk runs over
those [B, L] rows once and every per-token value is then read per side through `side_index` (`side_view`), as
if each side had had its own row. Each reward is the scalar head at the side's last real token, plus, when the head holds a `loglik_weight` (`cfg.reward.loglik_init` > 0), that trained weight
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
Bradley-Terry loss then trains head, weight and trunk together (docs/results.md).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxllm import reward_model
from jaxllm.data import preference
from jaxllm.errors import require
from jaxllm.losses import Objective
from jaxllm.losses.common import hidden_logprobs, masked_mean, side_view
from jaxllm.state import policy_weights


def pair_scores(model, weights, head: dict, hidden_BLD: jax.Array, batch: dict, chunk_size: int = 0,
                with_logprobs: bool = False, lora: dict | None = None) -> tuple[jax.Array, jax.Array, jax.Array | None]:
  """(rewards [B, 2], head scores in the side view [B, 2, L], next-token log-probs in the side view [B, 2, L]
  or None) from the trunk's hidden states over pair rows. A reward is what `reward_model.read_rewards` gives
  the side's own row: the head at its last token, plus head[LOGLIK] times the log-likelihood of its tokens
  after the first. The LM head runs (once) when the reward or the caller (`with_logprobs`) needs it."""
  r_B2L = side_view(reward_model.head_scores(head, hidden_BLD), batch)
  r_B2 = jnp.take_along_axis(r_B2L, batch["last_index"][..., None], axis=-1)[..., 0]
  next_logp_B2L = None
  if with_logprobs or reward_model.LOGLIK in head:
    # next token of the branch
    logp_BL, _ = hidden_logprobs(model, weights, hidden_BLD, batch["targets"], chunk_size, lora)
    next_logp_B2L = side_view(logp_BL.astype(jnp.float32), batch)
  if reward_model.LOGLIK in head:
    side_segments_B2L = (jnp.arange(r_B2L.shape[-1]) <= batch["last_index"][..., None]).astype(jnp.int32)
    r_B2 = r_B2 + head[reward_model.LOGLIK] * reward_model.loglik(next_logp_B2L[..., :-1], side_segments_B2L)
  return r_B2, r_B2L, next_logp_B2L


def pair_mean(x_B: jax.Array, weight_B: jax.Array) -> jax.Array:
  return (x_B * weight_B).sum() / jnp.maximum(weight_B.sum(), 1.0)


def ranked_right(margin_B: jax.Array) -> jax.Array:
  """1 when chosen scores higher, 0 when lower; a tie counts half, so an untrained model scores 0.5, not 0."""
  return jnp.where(margin_B > 0, 1.0, jnp.where(margin_B < 0, 0.0, 0.5))


def prefix_loss(r_B2L: jax.Array, batch: dict, margin: float) -> jax.Array:
  """Mean BT loss over aligned prefixes (chosen[:t+1] vs rejected[:t+1]) from the first differing token to the
  end of the shorter side, per pair, then over pairs; r_B2L in the side view."""
  tokens_B2L, last_B2 = side_view(batch["tokens"], batch), batch["last_index"]
  slot_L = jnp.arange(tokens_B2L.shape[-1])
  first_B = jnp.argmax(tokens_B2L[:, 0] != tokens_B2L[:, 1], axis=-1)  # chosen != rejected, so one exists
  mask_BL = (slot_L >= first_B[:, None]) & (slot_L <= last_B2.min(axis=1)[:, None])
  loss_BL = -jax.nn.log_sigmoid(r_B2L[:, 0] - r_B2L[:, 1] - margin)
  per_pair_B = (loss_BL * mask_BL).sum(-1) / jnp.maximum(mask_BL.sum(-1), 1)
  return pair_mean(per_pair_B, batch["weight"])


def chosen_nll(next_logp_B2L: jax.Array, batch: dict) -> jax.Array:
  """Per-token NLL of the chosen answers (side 0) from the trunk's own LM head's next-token log-probs in the
  side view (entry t: log p(token t + 1)), pairs weighted by `batch["weight"]`."""
  return masked_mean(-next_logp_B2L[:, 0], batch["loss_mask"][:, 0] * batch["weight"][:, None])[0]


def pair_hidden_states(model, weights, lora, batch: dict, rng=None) -> jax.Array:
  """The trunk's final hidden states [B, L, D] over the shared pair rows."""
  return reward_model.hidden_states(model, weights, lora, batch["tokens"], batch["positions"],
                                    batch["segment_ids"], rng, prefix_ids_BL=batch["prefix_ids"])


def reward_loss(params, frozen, batch, rng, *, model, cfg):
  weights, lora = policy_weights(params, frozen)
  hidden_BLD = pair_hidden_states(model, weights, lora, batch, rng)
  head = params[reward_model.HEAD]
  # the LM head runs once for both the log-likelihood reward term and the NLL term
  r_B2, r_B2L, next_logp_B2L = pair_scores(model, weights, head, hidden_BLD, batch, cfg.loss.chunk_size,
                                           with_logprobs=cfg.reward.lm_weight > 0, lora=lora)
  margin_B = r_B2[:, 0] - r_B2[:, 1]
  w_B = batch["weight"]
  loss = pair_mean(-jax.nn.log_sigmoid(margin_B - cfg.reward.margin), w_B)
  extra = {}
  if cfg.reward.prefix_weight > 0:
    extra["prefix_loss"] = prefix_loss(r_B2L, batch, cfg.reward.margin)
    loss = loss + cfg.reward.prefix_weight * extra["prefix_loss"]
  if cfg.reward.lm_weight > 0:
    extra["chosen_nll"] = chosen_nll(next_logp_B2L, batch)
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


def score_head(env, rng) -> dict:
  """The trained extra: init_from's score head when it is a reward run (trained further), else a new one."""
  c = env.config
  if env.pretrained is not None and reward_model.HEAD in env.pretrained.extras:
    return {reward_model.HEAD: env.pretrained.extras[reward_model.HEAD]}
  return {reward_model.HEAD: reward_model.init_head(rng, c.model.d_model, c.reward.head_init, c.reward.loglik_init)}


def validate(config) -> None:
  r = config.reward
  require(r.head_init >= 0, "reward.head_init", f"must be >= 0 (a std; 0 = zeros), got {r.head_init}")
  for key in ("margin", "prefix_weight", "lm_weight", "loglik_init"):
    require(r[key] >= 0, f"reward.{key}", f"must be >= 0, got {r[key]}")


OBJECTIVE = Objective(name="reward", loss=reward_loss, feed="preference", batches=preference.build,
                      extra_params=score_head, section="reward", validate=validate)
