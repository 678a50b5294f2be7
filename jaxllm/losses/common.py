"""Pieces several objectives share: log-probabilities of target tokens, computed chunk by chunk when asked so
that no more than [B, chunk, V] f32 logits exist at once (forward and backward)."""
from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxllm.model import Transformer


def _chunk_logprobs(model: Transformer, weights: dict, hidden_BCD: jax.Array, targets_BC: jax.Array):
  logits_BCV = model.apply({"params": weights}, hidden_BCD, method=Transformer.head)
  lse_BC = jax.nn.logsumexp(logits_BCV, axis=-1)
  target_BC = jnp.take_along_axis(logits_BCV, targets_BC[..., None], axis=-1)[..., 0]
  return target_BC - lse_BC, lse_BC


def target_logprobs(model: Transformer, weights: dict, lora: dict | None, batch: dict, rng: jax.Array | None,
                    chunk_size: int = 0) -> tuple[jax.Array, jax.Array]:
  """(log p(targets) [B, L], logsumexp of the logits [B, L]), both f32.

  batch holds `tokens`, `targets` and optionally `positions`, `segment_ids`. With chunk_size > 0 (dividing
  L), the output head runs over length chunks under `jax.checkpoint`, so the backward pass recomputes each
  chunk's logits instead of keeping all of them.
  """
  rngs = {"dropout": rng} if rng is not None else {}
  hidden_BLD = model.apply({"params": weights}, batch["tokens"], batch.get("positions"),
                           batch.get("segment_ids"), lora=lora, return_hidden=True, rngs=rngs)
  targets_BL = batch["targets"]
  b, l, d = hidden_BLD.shape
  if chunk_size <= 0 or chunk_size >= l:
    return _chunk_logprobs(model, weights, hidden_BLD, targets_BL)
  if l % chunk_size:
    raise ValueError(f"config.loss.chunk_size={chunk_size} must divide the sequence length {l}")
  n = l // chunk_size
  hidden_NBCD = hidden_BLD.reshape(b, n, chunk_size, d).swapaxes(0, 1)
  targets_NBC = targets_BL.reshape(b, n, chunk_size).swapaxes(0, 1)
  body = jax.checkpoint(lambda h, t: _chunk_logprobs(model, weights, h, t))
  _, (logp_NBC, lse_NBC) = jax.lax.scan(lambda c, xs: (c, body(*xs)), None, (hidden_NBCD, targets_NBC))
  return logp_NBC.swapaxes(0, 1).reshape(b, l), lse_NBC.swapaxes(0, 1).reshape(b, l)


def masked_mean(x: jax.Array, mask: jax.Array) -> tuple[jax.Array, jax.Array]:
  """(sum(x * mask) / max(count, 1), count): an all-masked batch gives 0, never NaN."""
  mask = mask.astype(jnp.float32)
  count = mask.sum()
  return (x * mask).sum() / jnp.maximum(count, 1.0), count
