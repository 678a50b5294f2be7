"""Objective `pretrain`: next-token cross-entropy over target tokens of packed text (SFT reuses the loss with its
answer-only mask: losses/sft.py).

The mean is over every target token of the global batch, not per sequence, so long answers are not
under-weighted. Optional z-loss keeps the softmax normaliser near 1.
"""
from __future__ import annotations

from jaxllm.losses import Objective
from jaxllm.losses.common import masked_mean, target_logprobs
from jaxllm.state import policy_weights


def lm_loss(params, frozen, batch, rng, *, model, cfg):
  weights, lora = policy_weights(params, frozen)
  logp_BL, lse_BL = target_logprobs(model, weights, lora, batch, rng, cfg.loss.chunk_size)
  mask_BL = batch["loss_mask"]
  nll, n_tokens = masked_mean(-logp_BL, mask_BL)
  loss = nll
  metrics = {"nll": nll, "target_tokens": n_tokens}
  if cfg.loss.z_loss > 0:
    z, _ = masked_mean(lse_BL ** 2, mask_BL)
    loss = loss + cfg.loss.z_loss * z
    metrics["z_loss"] = z
  return loss, metrics


OBJECTIVE = Objective(name="pretrain", loss=lm_loss, feed="pretrain")
