"""Objective `ppo`: PPO with a learned value function, the InstructGPT recipe (Ouyang et al. 2022).

The batch (jaxllm/ppo.py) carries, per completion token t of sample b (mask m = loss_mask), the rollout
policy's log-prob `old_logprobs`, its value `old_values`, GAE `advantages` A and `returns` R (jaxllm/gae.py:
the KL to the reference is already in the rewards those come from). With r = exp(log pi - old_logprobs):
  pg  = -min(r A, clip(r, 1 - rl.clip_eps, 1 + rl.clip_eps) A)
  V'  = old_values + clip(V - old_values, -ppo.value_clip, ppo.value_clip)   (V' = V when value_clip = 0)
  vf  = 0.5 * max((V - R)^2, (V' - R)^2)
  loss = token_mean(pg) + ppo.vf_coef * token_mean(vf)
V is ppo.value_head_scale x `value_head` (a [D] -> 1 linear head, params["value_head"]) on the final hidden
state of the position whose target is t (the scale: under Adam a weight moves about lr a step whatever its
gradient, so at RL learning rates a zero-initialised head barely moves; the scale multiplies how fast V does): of the policy's own trunk (ppo.critic = shared: one forward pass gives log-probs and values, and
the value loss trains the trunk too), or of a separate critic trunk params["critic"] initialised from
init_from's weights (ppo.critic = separate: twice the weights and forward passes, a policy untouched by the
value loss). Which one is in params decides; the config only decides what `extra_params` creates.
Metrics: `kl` (k3 to the reference, as GRPO logs it), `pg_loss`, `value_loss`, `clip_frac`, `value_clip_frac`,
`entropy`, `ratio_mean`, `value_mean`.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxllm import reward_model
from jaxllm.errors import require
from jaxllm.losses import Objective
from jaxllm.losses.common import hidden_logprobs, masked_mean, side_view
from jaxllm.losses.grpo import validate as validate_rollouts
from jaxllm.state import policy_weights

CRITICS = ("shared", "separate")
VALUE_HEAD, CRITIC = "value_head", "critic"


def policy_and_values(model, params, frozen, batch: dict, rng, chunk_size: int = 0,
                      value_scale: float = 1.0) -> tuple[jax.Array, jax.Array]:
  """(log pi of every sample's targets [R, L], values [R, L]) of either rollout layout (rl.py's plain rows, or
  group rows read per sample through `side_index`); values are value_scale x the head's output."""
  weights, lora = policy_weights(params, frozen)
  rows = (batch["tokens"], batch.get("positions"), batch.get("segment_ids"))
  hidden_BLD = reward_model.hidden_states(model, weights, lora, *rows, rng, batch.get("prefix_ids"))
  logp_BL, _ = hidden_logprobs(model, weights, hidden_BLD, batch["targets"], chunk_size, lora)
  if CRITIC in params:
    hidden_BLD = reward_model.hidden_states(model, params[CRITIC], None, *rows, rng, batch.get("prefix_ids"))
  values_BL = value_scale * reward_model.head_scores(params[VALUE_HEAD], hidden_BLD)
  if "side_index" not in batch:
    return logp_BL, values_BL
  length = batch["side_index"].shape[-1]
  return side_view(logp_BL, batch).reshape(-1, length), side_view(values_BL, batch).reshape(-1, length)


def ppo_loss(params, frozen, batch, rng, *, model, cfg):
  p, eps = cfg.ppo, cfg.rl.clip_eps
  logp_RL, values_RL = policy_and_values(model, params, frozen, batch, rng, cfg.loss.chunk_size,
                                         p.value_head_scale)
  mask_RL = batch["loss_mask"].astype(jnp.float32)
  live_RL = mask_RL > 0
  adv_RL = batch["advantages"]
  # Differences are zeroed outside the mask before exp, so padding can never make inf * 0 = NaN.
  ratio_RL = jnp.exp(jnp.where(live_RL, logp_RL - batch["old_logprobs"], 0.0))
  clipped_RL = jnp.clip(ratio_RL, 1.0 - eps, 1.0 + eps)
  pg_RL = -jnp.minimum(ratio_RL * adv_RL, clipped_RL * adv_RL)
  old_v_RL, returns_RL = batch["old_values"], batch["returns"]
  vf_RL = (values_RL - returns_RL) ** 2
  if p.value_clip > 0:
    v_clipped_RL = old_v_RL + jnp.clip(values_RL - old_v_RL, -p.value_clip, p.value_clip)
    vf_clipped_RL = (v_clipped_RL - returns_RL) ** 2
    value_clip_frac = masked_mean((vf_clipped_RL > vf_RL).astype(jnp.float32), mask_RL)[0]
    vf_RL = jnp.maximum(vf_RL, vf_clipped_RL)
  else:
    value_clip_frac = jnp.zeros(())
  pg_loss, n_tokens = masked_mean(pg_RL, mask_RL)
  value_loss = masked_mean(0.5 * vf_RL, mask_RL)[0]
  loss = pg_loss + p.vf_coef * value_loss

  ref_diff_RL = jnp.where(live_RL, batch["ref_logprobs"] - logp_RL, 0.0)
  metrics = {
      "kl": masked_mean(jnp.exp(ref_diff_RL) - ref_diff_RL - 1.0, mask_RL)[0],
      "pg_loss": pg_loss,
      "value_loss": value_loss,
      "clip_frac": masked_mean((ratio_RL * adv_RL > clipped_RL * adv_RL).astype(jnp.float32), mask_RL)[0],
      "value_clip_frac": value_clip_frac,
      "entropy": masked_mean(-logp_RL, mask_RL)[0],  # estimate: -log pi of the sampled tokens
      "ratio_mean": masked_mean(ratio_RL, mask_RL)[0],
      "value_mean": masked_mean(values_RL, mask_RL)[0],
      "completion_tokens": n_tokens,
      "target_tokens": n_tokens,
  }
  return loss, metrics


def value_params(env, rng) -> dict:
  """The trained extras: init_from's value head (and critic) when it is a PPO run, else a zero value head (values
  start at 0) and, for ppo.critic = separate, a critic trunk copied from init_from's weights."""
  c = env.config
  extras = env.pretrained.extras if env.pretrained is not None else {}
  out = {VALUE_HEAD: extras.get(VALUE_HEAD, reward_model.init_head(rng, c.model.d_model, 0.0))}
  if c.ppo.critic == "separate":
    out[CRITIC] = extras.get(CRITIC, jax.tree.map(jnp.copy, env.base_weights(rng)))
  return out


def validate(config) -> None:
  validate_rollouts(config)  # the rl.* keys of the rollouts PPO shares with GRPO
  p = config.ppo
  require(0.0 <= p.gamma <= 1.0, "ppo.gamma", f"must be in [0, 1], got {p.gamma}")
  require(0.0 <= p.lam <= 1.0, "ppo.lam", f"must be in [0, 1], got {p.lam}")
  require(p.kl_coef >= 0, "ppo.kl_coef", f"must be >= 0, got {p.kl_coef}")
  require(p.vf_coef > 0, "ppo.vf_coef", f"must be > 0 (the value head learns from it alone), got {p.vf_coef}")
  require(p.value_head_scale > 0, "ppo.value_head_scale", f"must be > 0, got {p.value_head_scale}")
  require(p.value_clip >= 0, "ppo.value_clip", f"must be >= 0 (0 = no value clipping), got {p.value_clip}")
  require(p.critic in CRITICS, "ppo.critic", f"{p.critic!r} is not one of {CRITICS}")
  require(config.lora.rank == 0 or p.critic == "shared", "ppo.critic",
          "'separate' trains a full critic trunk; with lora.rank > 0 use 'shared' (the value head on the policy)")


OBJECTIVE = Objective(name="ppo", loss=ppo_loss, feed="ppo", needs_reference=True, extra_params=value_params,
                      section="ppo", validate=validate)
