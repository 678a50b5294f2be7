"""Log-probabilities of target tokens through the output head, one vocabulary slice at a time.

The plain path materialises [T, V] f32 logits (and, in the backward pass, their gradient): at a 32k-152k
vocabulary they outgrow the whole transformer's activations. Here a loop over ceil(V / chunk) slices of the head
(the last one shorter when chunk does not divide V) keeps an online log-sum-exp in the forward pass and, in a
hand-written backward pass, recomputes each slice's logits, turns them into that slice's logit gradient and
writes the head gradient's columns in place, so no more than [T, chunk] logits and one [D, V] gradient (the one
the optimizer needs anyway) exist at once. Slicing the vocabulary rather than the tokens matters: a loop over
token chunks must add every chunk's full [D, V] head gradient into an accumulator, an extra [D, V] temporary
per step (what `cut cross-entropy`, Wijmans et al. 2024, also avoids). FLOPs equal the plain path's plus one
recomputation of the logits.

The head may also be a quantized [D, V] dict (QLoRA with lora.quantize_embeddings, quant.py): each slice is then
dequantized as the loop reaches it (and again in the backward pass), the target columns are gathered from the
codes, and the head gets no gradient (it is frozen).
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxllm import quant


def _columns(w_DV, start, size: int, dtype) -> jax.Array:
  """Head columns [start, start + size) as a [D, size] matrix (a quantized head's dequantized to `dtype`)."""
  if quant.is_quantized(w_DV):
    return quant.slice_columns(w_DV, start, size, dtype)
  return lax.dynamic_slice_in_dim(w_DV, start, size, axis=1)


def _vocab(w_DV) -> int:
  return quant.shape_2d(w_DV)[1] if quant.is_quantized(w_DV) else w_DV.shape[1]


def _logits(h_TD: jax.Array, w_DC: jax.Array) -> jax.Array:
  return jnp.dot(h_TD, w_DC, preferred_element_type=jnp.float32)


def _layout(w_DV, chunk: int) -> tuple[int, int]:
  """(full slices, start of the shorter last slice): a vocabulary that chunk does not divide (Qwen's 151936)
  ends in one slice of V % chunk columns, handled once after the loop with static shapes."""
  full = _vocab(w_DV) // chunk
  return full, full * chunk


def _forward(h_TD, w_DV, targets_T, chunk):
  t = h_TD.shape[0]

  def update(carry, w_DC):  # online log-sum-exp over one more slice of logits
    m_T, s_T = carry
    logits_TC = _logits(h_TD, w_DC)
    new_m_T = jnp.maximum(m_T, logits_TC.max(axis=-1))
    return new_m_T, s_T * jnp.exp(m_T - new_m_T) + jnp.exp(logits_TC - new_m_T[:, None]).sum(axis=-1)

  full, rest = _layout(w_DV, chunk)
  vocab, dtype = _vocab(w_DV), h_TD.dtype
  init = (jnp.full((t,), -jnp.inf, jnp.float32), jnp.zeros((t,), jnp.float32))
  carry = lax.fori_loop(0, full, lambda i, c: update(c, _columns(w_DV, i * chunk, chunk, dtype)), init)
  if rest < vocab:
    carry = update(carry, _columns(w_DV, rest, vocab - rest, dtype))
  m_T, s_T = carry
  lse_T = m_T + jnp.log(s_T)
  # the target logit straight from the target's head column: a [D, T] gather, not a [T, V] one
  target_DT = (quant.take_columns(w_DV, targets_T, dtype) if quant.is_quantized(w_DV)
               else jnp.take(w_DV, targets_T, axis=1))
  target_T = jnp.einsum("td,dt->t", h_TD, target_DT, preferred_element_type=jnp.float32)
  return target_T - lse_T, lse_T


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def head_logprobs(h_TD: jax.Array, w_DV: jax.Array, targets_T: jax.Array, chunk: int):
  """(log p(targets) [T], logsumexp of the logits [T]), f32, for logits = h_TD @ w_DV, chunk columns at a time
  (w_DV: a [D, V] matrix in h's dtype, or a quantized one)."""
  return _forward(h_TD, w_DV, targets_T, chunk)


def _fwd(h_TD, w_DV, targets_T, chunk):
  logp_T, lse_T = _forward(h_TD, w_DV, targets_T, chunk)
  return (logp_T, lse_T), (h_TD, w_DV, targets_T, lse_T)


def _bwd(chunk, residuals, cotangents):
  h_TD, w_DV, targets_T, lse_T = residuals
  dlogp_T, dlse_T = cotangents
  # d/dlogits of (logp, lse) = (onehot - p, p), so dlogits = p * (dlse - dlogp) + onehot * dlogp
  scale_T1 = (dlse_T - dlogp_T)[:, None]

  frozen = quant.is_quantized(w_DV)  # a quantized head is frozen: no dw, only dh
  vocab, dtype = _vocab(w_DV), h_TD.dtype

  def grads(start, size, dw_DV):  # this slice's share of dh, and dw with this slice's columns written
    w_DC = _columns(w_DV, start, size, dtype)
    p_TC = jnp.exp(_logits(h_TD, w_DC) - lse_T[:, None])
    hit_TC = targets_T[:, None] - start == jnp.arange(size)[None, :]
    g_TC = (p_TC * scale_T1 + jnp.where(hit_TC, dlogp_T[:, None], 0.0)).astype(dtype)
    if not frozen:
      dw_DC = jnp.dot(h_TD.T, g_TC, preferred_element_type=jnp.float32).astype(w_DV.dtype)
      dw_DV = lax.dynamic_update_slice_in_dim(dw_DV, dw_DC, start, axis=1)
    return jnp.dot(g_TC, w_DC.T, preferred_element_type=jnp.float32), dw_DV

  def body(i, carry):
    dh_TD, dw_DV = carry
    dh_part, dw_DV = grads(i * chunk, chunk, dw_DV)
    return dh_TD + dh_part, dw_DV

  full, rest = _layout(w_DV, chunk)
  init = (jnp.zeros(h_TD.shape, jnp.float32), None if frozen else jnp.zeros_like(w_DV))
  dh_TD, dw_DV = lax.fori_loop(0, full, body, init)
  if rest < vocab:
    dh_part, dw_DV = grads(rest, vocab - rest, dw_DV)
    dh_TD = dh_TD + dh_part
  if frozen:
    dw_DV = jax.tree.map(_zero_cotangent, w_DV)
  return dh_TD.astype(h_TD.dtype), dw_DV, None


def _zero_cotangent(x: jax.Array) -> jax.Array:
  """A zero cotangent for a frozen leaf (float0 for integer codes, as JAX requires); never read."""
  if jnp.issubdtype(x.dtype, jnp.inexact):
    return jnp.zeros_like(x)
  return np.zeros(x.shape, jax.dtypes.float0)


head_logprobs.defvjp(_fwd, _bwd)
