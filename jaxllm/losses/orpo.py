"""Objective `orpo`: Odds Ratio Preference Optimisation (Hong et al. 2024), reference-free: supervised
fine-tuning on the chosen answer plus a penalty on the odds ratio of chosen to rejected, in one stage.

  p_s        = exp(logp(y_s|x) / |y_s|)                        per-token mean probability of side s
  log odds_s = log(p_s / (1 - p_s))
  loss       = NLL(y_c) - lambda * log sigmoid(log odds_c - log odds_r)   NLL per chosen token; lambda = orpo.lam

No reference policy (state.frozen stays empty under full fine-tuning) and one forward pass per pair row. The
odds ratio contrasts more gently than DPO's likelihood ratio, so the NLL term keeps the chosen answer's
probability rising. log(1 - p) is computed as log(-expm1(m)) near m = 0 and log1p(-exp(m)) below -log 2 (both
exact in float32 where they are used); m is capped at -1e-6 so that a side the model is certain of gives a
large finite log-odds, not inf. Metrics: `accuracy` (share of pairs whose chosen side has the larger log-odds;
ties count half), `log_odds_ratio`, `chosen_nll` (per token), `chosen_logp` (summed).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxllm.data import preference
from jaxllm.errors import require
from jaxllm.losses import Objective
from jaxllm.losses.dpo import sequence_logps
from jaxllm.losses.reward import pair_mean, ranked_right
from jaxllm.state import policy_weights


def log1m_exp(m: jax.Array) -> jax.Array:
  """log(1 - exp(m)) for m < 0, without cancellation at either end."""
  m = jnp.minimum(m, -1e-6)
  return jnp.where(m > -jnp.log(2.0), jnp.log(-jnp.expm1(m)), jnp.log1p(-jnp.exp(m)))


def orpo_loss(params, frozen, batch, rng, *, model, cfg):
  weights, lora = policy_weights(params, frozen)
  logp_B2, n_tokens_B2 = sequence_logps(model, weights, lora, batch, rng, cfg.loss.chunk_size)
  mean_B2 = logp_B2 / jnp.maximum(n_tokens_B2, 1.0)  # log p_s, per token
  log_odds_B2 = mean_B2 - log1m_exp(mean_B2)
  ratio_B = log_odds_B2[:, 0] - log_odds_B2[:, 1]
  nll_B = -mean_B2[:, 0]
  loss_B = nll_B - cfg.orpo.lam * jax.nn.log_sigmoid(ratio_B)
  w_B = batch["weight"]
  metrics = {
      "accuracy": pair_mean(ranked_right(ratio_B), w_B),
      "log_odds_ratio": pair_mean(ratio_B, w_B),
      "chosen_nll": pair_mean(nll_B, w_B),
      "chosen_logp": pair_mean(logp_B2[:, 0], w_B),
      "rejected_logp": pair_mean(logp_B2[:, 1], w_B),
  }
  return pair_mean(loss_B, w_B), metrics


def validate(config) -> None:
  require(config.orpo.lam >= 0, "orpo.lam", f"must be >= 0 (0 = SFT on the chosen answers), got {config.orpo.lam}")


OBJECTIVE = Objective(name="orpo", loss=orpo_loss, feed="preference", batches=preference.build, section="orpo",
                      validate=validate)
