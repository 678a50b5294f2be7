"""Direct preference optimisation against a frozen reference policy (Rafailov et al. 2023), with the
conservative (label-smoothed, "cDPO") and IPO (Azar et al. 2023) variants.

  h = (log pi(y_c|x) - log ref(y_c|x)) - (log pi(y_r|x) - log ref(y_r|x))       log-probs summed over answer tokens
  sigmoid: loss = -(1 - eps) log sigmoid(beta h) - eps log sigmoid(-beta h)     eps = cfg.dpo.label_smoothing
  ipo:     loss = (h' - 1 / (2 beta))^2, h' from per-token mean log-probs (as TRL does: IPO's target margin
           1/(2 beta) is meant per token, so it does not grow with answer length)

With `cfg.dpo.nll_weight` = alpha > 0 the loss adds alpha * NLL of the chosen answer per token (RPO: Pang et
al. 2024, "Iterative Reasoning Preference Optimization"). Plain DPO only widens the margin and typically
lowers the chosen answer's probability along with the rejected one's; the NLL term keeps it rising.

The implicit rewards beta * (log pi - log ref) give the metrics: `accuracy` (share of pairs whose chosen side
has the larger implicit reward; ties count half), chosen/rejected rewards and their margin. `policy_accuracy`
asks the policy alone (summed log-prob of chosen > rejected), and `chosen_logp` is the summed log-probability
of the chosen answer: DPO can lower it while widening the margin, so it is worth watching.

Reference log-probs are computed in the same step from `reference_weights(frozen)` (the LoRA base, or
init_from's copy under full fine-tuning). Trade-off: this costs one extra forward pass per step (no backward,
so ~1/3 more compute) and, under full fine-tuning, a second copy of the weights in memory; precomputing them
once would save that compute but needs a pass over the whole data set before training, ties the data pipeline
to a model (each epoch, shuffle and resume must carry the cached values), and goes stale if the data or the
reference changes. Computing them here keeps the batch source model-free and every step self-contained.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxllm.data import preference
from jaxllm.errors import require
from jaxllm.losses import Objective
from jaxllm.losses.common import side_view, target_logprobs
from jaxllm.losses.reward import pair_mean, ranked_right
from jaxllm.state import policy_weights, reference_weights

VARIANTS = ("sigmoid", "ipo")


def sequence_logps(model, weights, lora, batch: dict, rng, chunk_size: int) -> tuple[jax.Array, jax.Array]:
  """(summed answer log-probs [B, 2], answer token counts [B, 2]) of a batch of shared-prompt pair rows."""
  logp_BL, _ = target_logprobs(model, weights, lora, batch, rng, chunk_size)
  mask_B2L = batch["loss_mask"]
  return (side_view(logp_BL, batch) * mask_B2L).sum(-1), mask_B2L.sum(-1)


def dpo_loss(params, frozen, batch, rng, *, model, cfg):
  d = cfg.dpo
  weights, lora = policy_weights(params, frozen)
  policy_B2, n_tokens_B2 = sequence_logps(model, weights, lora, batch, rng, cfg.loss.chunk_size)
  ref_weights, ref_lora = reference_weights(frozen)
  ref_B2, _ = sequence_logps(model, ref_weights, ref_lora, batch, None, cfg.loss.chunk_size)
  ref_B2 = jax.lax.stop_gradient(ref_B2)
  ratio_B2 = policy_B2 - ref_B2  # log pi/ref of each side
  h_B = ratio_B2[:, 0] - ratio_B2[:, 1]
  if d.variant == "ipo":
    per_token_B2 = ratio_B2 / jnp.maximum(n_tokens_B2, 1.0)
    loss_B = (per_token_B2[:, 0] - per_token_B2[:, 1] - 1.0 / (2.0 * d.beta)) ** 2
  elif d.variant == "sigmoid":
    eps = d.label_smoothing
    loss_B = -(1.0 - eps) * jax.nn.log_sigmoid(d.beta * h_B) - eps * jax.nn.log_sigmoid(-d.beta * h_B)
  else:
    raise ValueError(f"config.dpo.variant: {d.variant!r} is not one of {VARIANTS}")
  w_B = batch["weight"]
  chosen_logp_per_token_B = policy_B2[:, 0] / jnp.maximum(n_tokens_B2[:, 0], 1.0)
  if d.nll_weight > 0:
    loss_B = loss_B - d.nll_weight * chosen_logp_per_token_B
  reward_B2 = d.beta * ratio_B2
  metrics = {
      "accuracy": pair_mean(ranked_right(h_B), w_B),
      "policy_accuracy": pair_mean(ranked_right(policy_B2[:, 0] - policy_B2[:, 1]), w_B),
      "chosen_reward": pair_mean(reward_B2[:, 0], w_B),
      "rejected_reward": pair_mean(reward_B2[:, 1], w_B),
      "margin": pair_mean(reward_B2[:, 0] - reward_B2[:, 1], w_B),
      "chosen_logp": pair_mean(policy_B2[:, 0], w_B),
      "rejected_logp": pair_mean(policy_B2[:, 1], w_B),
      "chosen_logp_per_token": pair_mean(chosen_logp_per_token_B, w_B),
  }
  return pair_mean(loss_B, w_B), metrics


def validate(config) -> None:
  d = config.dpo
  require(d.variant in VARIANTS, "dpo.variant", f"{d.variant!r} is not one of {VARIANTS}")
  require(d.beta > 0, "dpo.beta", f"must be > 0, got {d.beta}")
  require(0.0 <= d.label_smoothing < 0.5, "dpo.label_smoothing", f"must be in [0, 0.5), got {d.label_smoothing}")
  require(d.nll_weight >= 0, "dpo.nll_weight", f"must be >= 0, got {d.nll_weight}")


OBJECTIVE = Objective(name="dpo", loss=dpo_loss, feed="preference", batches=preference.build, needs_reference=True,
                      section="dpo", validate=validate)
