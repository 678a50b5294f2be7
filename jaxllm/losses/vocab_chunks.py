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
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax


def _slice(w_DV: jax.Array, i: jax.Array, chunk: int) -> jax.Array:
  return lax.dynamic_slice_in_dim(w_DV, i * chunk, chunk, axis=1)


def _logits(h_TD: jax.Array, w_DC: jax.Array) -> jax.Array:
  return jnp.dot(h_TD, w_DC, preferred_element_type=jnp.float32)


def _layout(w_DV: jax.Array, chunk: int) -> tuple[int, int]:
  """(full slices, start of the shorter last slice): a vocabulary that chunk does not divide (Qwen's 151936)
  ends in one slice of V % chunk columns, handled once after the loop with static shapes."""
  full = w_DV.shape[1] // chunk
  return full, full * chunk


def _forward(h_TD, w_DV, targets_T, chunk):
  t = h_TD.shape[0]

  def update(carry, w_DC):  # online log-sum-exp over one more slice of logits
    m_T, s_T = carry
    logits_TC = _logits(h_TD, w_DC)
    new_m_T = jnp.maximum(m_T, logits_TC.max(axis=-1))
    return new_m_T, s_T * jnp.exp(m_T - new_m_T) + jnp.exp(logits_TC - new_m_T[:, None]).sum(axis=-1)

  full, rest = _layout(w_DV, chunk)
  init = (jnp.full((t,), -jnp.inf, jnp.float32), jnp.zeros((t,), jnp.float32))
  carry = lax.fori_loop(0, full, lambda i, c: update(c, _slice(w_DV, i, chunk)), init)
  if rest < w_DV.shape[1]:
    carry = update(carry, w_DV[:, rest:])
  m_T, s_T = carry
  lse_T = m_T + jnp.log(s_T)
  # the target logit straight from the target's head column: a [D, T] gather, not a [T, V] one
  target_T = jnp.einsum("td,dt->t", h_TD, jnp.take(w_DV, targets_T, axis=1), preferred_element_type=jnp.float32)
  return target_T - lse_T, lse_T


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def head_logprobs(h_TD: jax.Array, w_DV: jax.Array, targets_T: jax.Array, chunk: int):
  """(log p(targets) [T], logsumexp of the logits [T]), f32, for logits = h_TD @ w_DV, chunk columns at a time."""
  return _forward(h_TD, w_DV, targets_T, chunk)


def _fwd(h_TD, w_DV, targets_T, chunk):
  logp_T, lse_T = _forward(h_TD, w_DV, targets_T, chunk)
  return (logp_T, lse_T), (h_TD, w_DV, targets_T, lse_T)


def _bwd(chunk, residuals, cotangents):
  h_TD, w_DV, targets_T, lse_T = residuals
  dlogp_T, dlse_T = cotangents
  # d/dlogits of (logp, lse) = (onehot - p, p), so dlogits = p * (dlse - dlogp) + onehot * dlogp
  scale_T1 = (dlse_T - dlogp_T)[:, None]

  def grads(w_DC, start):  # (this slice's share of dh, its columns of dw) for head columns [start, start + C)
    p_TC = jnp.exp(_logits(h_TD, w_DC) - lse_T[:, None])
    hit_TC = targets_T[:, None] - start == jnp.arange(w_DC.shape[1])[None, :]
    g_TC = (p_TC * scale_T1 + jnp.where(hit_TC, dlogp_T[:, None], 0.0)).astype(h_TD.dtype)
    return (jnp.dot(g_TC, w_DC.T, preferred_element_type=jnp.float32),
            jnp.dot(h_TD.T, g_TC, preferred_element_type=jnp.float32).astype(w_DV.dtype))

  def body(i, carry):
    dh_TD, dw_DV = carry
    dh_part, dw_DC = grads(_slice(w_DV, i, chunk), i * chunk)
    return dh_TD + dh_part, lax.dynamic_update_slice_in_dim(dw_DV, dw_DC, i * chunk, axis=1)

  full, rest = _layout(w_DV, chunk)
  init = (jnp.zeros(h_TD.shape, jnp.float32), jnp.zeros_like(w_DV))
  dh_TD, dw_DV = lax.fori_loop(0, full, body, init)
  if rest < w_DV.shape[1]:
    dh_part, dw_DC = grads(w_DV[:, rest:], rest)
    dh_TD, dw_DV = dh_TD + dh_part, lax.dynamic_update_slice_in_dim(dw_DV, dw_DC, rest, axis=1)
  return dh_TD.astype(h_TD.dtype), dw_DV, None


head_logprobs.defvjp(_fwd, _bwd)
