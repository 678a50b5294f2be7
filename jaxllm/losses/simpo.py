"""Objective `simpo`: Simple Preference Optimisation (Meng et al. 2024), reference-free. The implicit reward is
the policy's length-normalised log-probability, and the chosen answer must beat the rejected one by a margin:

  loss = -log sigmoid(beta * (logp(y_c|x) / |y_c| - logp(y_r|x) / |y_r|) - gamma)
         log-probs summed over the answer tokens, |y| the answer's token count

No reference policy: a full fine-tuning run holds one copy of the weights (state.frozen is empty), and a step
runs one forward pass per pair row instead of DPO's two. The per-token normalisation removes DPO's pull
towards long answers; gamma (the target reward margin) widens the separation. Metrics: `accuracy` (share of
pairs whose chosen answer has the larger per-token log-prob; ties count half), `margin` (beta times that
difference), `chosen_logp` (summed log-prob of the chosen answer) and `chosen_logp_per_token`.
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


def simpo_loss(params, frozen, batch, rng, *, model, cfg):
  s = cfg.simpo
  weights, lora = policy_weights(params, frozen)
  logp_B2, n_tokens_B2 = sequence_logps(model, weights, lora, batch, rng, cfg.loss.chunk_size)
  per_token_B2 = logp_B2 / jnp.maximum(n_tokens_B2, 1.0)
  margin_B = s.beta * (per_token_B2[:, 0] - per_token_B2[:, 1])
  loss_B = -jax.nn.log_sigmoid(margin_B - s.gamma)
  w_B = batch["weight"]
  metrics = {
      "accuracy": pair_mean(ranked_right(margin_B), w_B),
      "margin": pair_mean(margin_B, w_B),
      "chosen_logp": pair_mean(logp_B2[:, 0], w_B),
      "rejected_logp": pair_mean(logp_B2[:, 1], w_B),
      "chosen_logp_per_token": pair_mean(per_token_B2[:, 0], w_B),
  }
  return pair_mean(loss_B, w_B), metrics


def validate(config) -> None:
  require(config.simpo.beta > 0, "simpo.beta", f"must be > 0, got {config.simpo.beta}")
  require(config.simpo.gamma >= 0, "simpo.gamma", f"must be >= 0, got {config.simpo.gamma}")


OBJECTIVE = Objective(name="simpo", loss=simpo_loss, feed="preference", batches=preference.build, section="simpo",
                      validate=validate)
