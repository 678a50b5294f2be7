"""Objective `kto`: Kahneman-Tversky Optimisation (Ethayarajh et al. 2024) on single answers tagged desirable or
undesirable (data/kto.py: LLaMA-Factory's kto_tag data, or the built-in world's pairs split in two).

  r   = log pi(y|x) - log ref(y|x)                              summed over the answer tokens
  z   = max(0, mean over the batch of r(x, y'))                  y' an answer to another prompt (the KL sample);
                                                                 no gradient flows through z
  loss = lambda_D (1 - sigmoid(beta (r - z)))    for a desirable answer
         lambda_U (1 - sigmoid(beta (z - r)))    for an undesirable one,        mean over the batch

z is KTO's reference point, a batch estimate of KL(pi || ref): a desirable answer gains only by rising above
what the policy's drift gives any answer, an undesirable one only by falling below it. The reference policy is
init_from's model (`state.frozen`; under LoRA the base without adapters), run in the same step on both branches
of each row (the example's answer and its KL sample share the prompt's forward pass). Metrics: `accuracy`
(share of answers on the side of z their tag asks for; ties count half), `kl` (z before the clamp),
`desirable_reward` / `undesirable_reward` (mean beta r of each kind in the batch).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxllm.data import kto
from jaxllm.errors import require
from jaxllm.losses import Objective
from jaxllm.losses.dpo import sequence_logps
from jaxllm.losses.reward import pair_mean, ranked_right
from jaxllm.state import policy_weights, reference_weights


def kto_loss(params, frozen, batch, rng, *, model, cfg):
  k = cfg.kto
  weights, lora = policy_weights(params, frozen)
  policy_B2, _ = sequence_logps(model, weights, lora, batch, rng, cfg.loss.chunk_size)
  ref_weights, ref_lora = reference_weights(frozen)
  ref_B2, _ = sequence_logps(model, ref_weights, ref_lora, batch, None, cfg.loss.chunk_size)
  ratio_B2 = policy_B2 - jax.lax.stop_gradient(ref_B2)  # side 0: the tagged answer, side 1: the KL sample
  w_B, good_B = batch["weight"], batch["desirable"]
  kl = jax.lax.stop_gradient(pair_mean(ratio_B2[:, 1], w_B))
  z = jnp.maximum(kl, 0.0)
  r_B = ratio_B2[:, 0]
  loss_B = (good_B * k.desirable_weight * (1.0 - jax.nn.sigmoid(k.beta * (r_B - z)))
            + (1.0 - good_B) * k.undesirable_weight * (1.0 - jax.nn.sigmoid(k.beta * (z - r_B))))
  sign_B = 2.0 * good_B - 1.0
  metrics = {
      "accuracy": pair_mean(ranked_right(sign_B * (r_B - z)), w_B),
      "kl": kl,
      "desirable_reward": pair_mean(k.beta * r_B, w_B * good_B),
      "undesirable_reward": pair_mean(k.beta * r_B, w_B * (1.0 - good_B)),
  }
  return pair_mean(loss_B, w_B), metrics


def validate(config) -> None:
  k = config.kto
  require(k.beta > 0, "kto.beta", f"must be > 0, got {k.beta}")
  for key in ("desirable_weight", "undesirable_weight"):
    require(k[key] > 0, f"kto.{key}", f"must be > 0, got {k[key]}")


OBJECTIVE = Objective(name="kto", loss=kto_loss, feed="preference", batches=kto.build, needs_reference=True,
                      section="kto", validate=validate)
