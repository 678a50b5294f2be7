"""Pieces several objectives share: log-probabilities of target tokens (through vocabulary slices when asked,
so that the [tokens, V] f32 logits never exist at once), masked means."""
from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxllm.losses.vocab_chunks import head_logprobs
from jaxllm.model import Transformer, quantized_head


def target_logprobs(model: Transformer, weights: dict, lora: dict | None, batch: dict, rng: jax.Array | None,
                    chunk_size: int = 0) -> tuple[jax.Array, jax.Array]:
  """(log p(targets) [B, L], logsumexp of the logits [B, L]), both f32.

  batch holds `tokens`, `targets` and optionally `positions`, `segment_ids`, `prefix_ids`. With 0 < chunk_size < the
  vocabulary size, the output head runs over vocabulary slices of that many entries
  (`vocab_chunks.head_logprobs`): never more than [B * L, chunk_size] f32 logits at once, forward or backward.
  """
  rngs = {"dropout": rng} if rng is not None else {}
  hidden_BLD = model.apply({"params": weights}, batch["tokens"], batch.get("positions"),
                           batch.get("segment_ids"), lora=lora, return_hidden=True,
                           prefix_ids_BL=batch.get("prefix_ids"), rngs=rngs)
  return hidden_logprobs(model, weights, hidden_BLD, batch["targets"], chunk_size, lora)


def hidden_logprobs(model: Transformer, weights: dict, hidden_BLD: jax.Array, targets_BL: jax.Array,
                    chunk_size: int = 0, lora: dict | None = None) -> tuple[jax.Array, jax.Array]:
  """`target_logprobs` from the trunk's final hidden states [B, L, D] (the output head and the log-softmax);
  `lora` is read for a quantized head only (QLoRA with lora.quantize_embeddings)."""
  vocab = model.cfg.vocab_size
  if chunk_size <= 0 or chunk_size >= vocab:
    logits_BLV = model.apply({"params": weights}, hidden_BLD, lora, method=Transformer.head)
    lse_BL = jax.nn.logsumexp(logits_BLV, axis=-1)
    target_BL = jnp.take_along_axis(logits_BLV, targets_BL[..., None], axis=-1)[..., 0]
    return target_BL - lse_BL, lse_BL
  b, l, d = hidden_BLD.shape
  w_DV = quantized_head(model.cfg, lora)
  if w_DV is None:
    w_DV = model.apply({"params": weights}, method=Transformer.head_matrix)
  h_TD = hidden_BLD.reshape(b * l, d).astype(model.cfg.dtype)
  logp_T, lse_T = head_logprobs(h_TD, w_DV, targets_BL.reshape(-1), chunk_size)
  return logp_T.reshape(b, l), lse_T.reshape(b, l)


def masked_mean(x: jax.Array, mask: jax.Array) -> tuple[jax.Array, jax.Array]:
  """(sum(x * mask) / max(count, 1), count): an all-masked batch gives 0, never NaN."""
  mask = mask.astype(jnp.float32)
  count = mask.sum()
  return (x * mask).sum() / jnp.maximum(count, 1.0), count


def side_view(x_BL: jax.Array, batch: dict) -> jax.Array:
  """Per-token values of shared-prefix rows [B, L] (data/branches.py) read as each branch's own row
  [B, n, L] through batch["side_index"] (entry t: the branch's t-th token; past its end, values of slot 0,
  which every mask leaves out)."""
  return jnp.take_along_axis(x_BL[:, None, :], batch["side_index"], axis=-1)
