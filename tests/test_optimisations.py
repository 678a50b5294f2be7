"""Speed/memory options compute the same numbers as the plain path (f32, tight tolerances): cross-entropy over
vocabulary slices = full cross-entropy (also with tied embeddings, and in bf16 to bf16 precision),
rematerialised blocks = stored activations, `dot_attention` = the straightforward einsum attention (GQA,
packed segments, cache-shaped keys), projections as flattened 2-D matmuls = the einsum over named dims, in
values and gradients."""
import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import base
from jaxllm.losses.common import target_logprobs
from jaxllm.losses.lm import lm_loss
from jaxllm.model import ModelConfig, Transformer, attention_mask, dot_attention, matmul_2d

CFG = ModelConfig(vocab_size=96, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=8, mlp_dim=48,
                  max_seq_len=32)
B, L = 3, 32


def reference_attention(q_BLHk, k_BKSk, v_BKSk, mask_BLS):
  """The einsum attention jaxllm started with: the numbers any faster version must reproduce."""
  k_BSKk, v_BSKk = k_BKSk.transpose(0, 2, 1, 3), v_BKSk.transpose(0, 2, 1, 3)
  b, l, h, dh = q_BLHk.shape
  k_heads = k_BSKk.shape[2]
  q_BLKGk = q_BLHk.reshape(b, l, k_heads, h // k_heads, dh)
  scores_BKGLS = jnp.einsum("BLKGk,BSKk->BKGLS", q_BLKGk, k_BSKk,
                            preferred_element_type=jnp.float32) * (dh ** -0.5)
  scores_BKGLS = jnp.where(mask_BLS[:, None, None], scores_BKGLS, jnp.finfo(jnp.float32).min)
  probs_BKGLS = jax.nn.softmax(scores_BKGLS, axis=-1).astype(v_BSKk.dtype)
  return jnp.einsum("BKGLS,BSKk->BLKGk", probs_BKGLS, v_BSKk).reshape(b, l, h, dh)


def _batch(seed=0):
  rng = np.random.default_rng(seed)
  tokens = rng.integers(0, CFG.vocab_size, (B, L + 1)).astype(np.int32)
  # packed: row 0 one document, row 1 three, row 2 two documents then padding (segment 0, masked out)
  segment_ids = np.ones((B, L), np.int32)
  segment_ids[1, 10:] = 2
  segment_ids[1, 20:] = 3
  segment_ids[2, 12:] = 2
  segment_ids[2, 25:] = 0
  starts = np.concatenate([np.ones((B, 1), bool), segment_ids[:, 1:] != segment_ids[:, :-1]], axis=1)
  idx = np.arange(L)
  positions = idx - np.maximum.accumulate(np.where(starts, idx, 0), axis=1)
  return {"tokens": jnp.asarray(tokens[:, :-1]), "targets": jnp.asarray(tokens[:, 1:]),
          "positions": jnp.asarray(positions, jnp.int32), "segment_ids": jnp.asarray(segment_ids),
          "loss_mask": jnp.asarray(segment_ids > 0, jnp.float32)}


def _params(cfg=CFG):
  model = Transformer(cfg)
  return nn.meta.unbox(model.init(jax.random.PRNGKey(0), jnp.zeros((1, 4), jnp.int32))["params"])


@functools.lru_cache(maxsize=None)
def _cached(remat: str, chunk_size: int):
  """(loss, grads) of the test batch at CFG with this remat policy and loss chunking, computed once."""
  return _loss_and_grads(dataclasses.replace(CFG, remat=remat), chunk_size, _params(), _batch())


def _loss_and_grads(cfg: ModelConfig, chunk_size: int, params, batch):
  config = base.get_config()
  config.loss.chunk_size = chunk_size
  config.loss.z_loss = 1e-3  # exercises the logsumexp output of the chunked path too
  fn = lambda p: lm_loss({"model": p}, {}, batch, None, model=Transformer(cfg), cfg=config)[0]
  return jax.jit(jax.value_and_grad(fn))(params)


def _assert_trees_close(a, b, rtol=1e-5, atol=1e-6):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol)


@pytest.mark.parametrize("chunk_size", [4, 16, 23])  # 23 does not divide the vocabulary: a shorter last slice
def test_chunked_loss_equals_full_loss_and_gradients(chunk_size):
  params, batch = _params(), _batch()
  full_loss, full_grads = _cached("none", 0)
  loss, grads = _cached("none", chunk_size)
  np.testing.assert_allclose(loss, full_loss, rtol=1e-6)
  _assert_trees_close(grads, full_grads)
  # the per-token log-probs too, not only their mean
  model = Transformer(CFG)
  full = target_logprobs(model, params, None, batch, None, 0)
  chunked = target_logprobs(model, params, None, batch, None, chunk_size)
  _assert_trees_close(chunked, full)


@pytest.mark.parametrize("dtype, tol", [("float32", 1e-5), ("bfloat16", 2e-2)])
def test_chunked_loss_with_tied_embeddings_and_compute_dtypes(dtype, tol):
  cfg = dataclasses.replace(CFG, tie_embeddings=True, dtype=dtype)
  params, batch = _params(cfg), _batch()
  loss, grads = _loss_and_grads(cfg, 32, params, batch)
  full_loss, full_grads = _loss_and_grads(cfg, 0, params, batch)
  np.testing.assert_allclose(loss, full_loss, rtol=tol)
  _assert_trees_close(grads, full_grads, rtol=tol, atol=tol * 1e-1)


@pytest.mark.parametrize("remat", ["full", "dots"])
def test_remat_equals_no_remat(remat):
  loss, grads = _cached(remat, 0)
  ref_loss, ref_grads = _cached("none", 0)
  np.testing.assert_allclose(loss, ref_loss, rtol=1e-6)
  _assert_trees_close(grads, ref_grads)


def _qkv(b, l, s, h, k, dh, seed=0):
  """q [B, L, H, Dh]; k, v kv-head-major [B, K, S, Dh] (the reference's layout; dot_attention takes keys
  transposed: `_t(k)`)."""
  keys = jax.random.split(jax.random.PRNGKey(seed), 3)
  return (jax.random.normal(keys[0], (b, l, h, dh)), jax.random.normal(keys[1], (b, k, s, dh)),
          jax.random.normal(keys[2], (b, k, s, dh)))


def _t(k_BKSk):
  return k_BKSk.transpose(0, 1, 3, 2)


def _attention(q, k_BKSk, v, mask):
  """dot_attention on the reference's key layout."""
  return dot_attention(q, _t(k_BKSk), v, mask)


@pytest.mark.parametrize("heads,kv_heads", [(4, 4), (4, 2), (8, 1)])
def test_attention_equals_einsum_reference_with_packed_segments_and_gqa(heads, kv_heads):
  seg = _batch()["segment_ids"]
  slots = jnp.arange(L)
  mask = attention_mask(slots, slots, seg, seg)
  q, k, v = _qkv(B, L, L, heads, kv_heads, 8)
  np.testing.assert_allclose(_attention(q, k, v, mask), reference_attention(q, k, v, mask), rtol=1e-5, atol=1e-5)
  cot = jax.random.normal(jax.random.PRNGKey(9), q.shape)
  grads = jax.vjp(lambda *a: _attention(*a, mask), q, k, v)[1](cot)
  ref_grads = jax.vjp(lambda *a: reference_attention(*a, mask), q, k, v)[1](cot)
  _assert_trees_close(grads, ref_grads, rtol=1e-5, atol=1e-5)
  # a padding query (segment 0) still gives finite numbers: it sees the other padding slots only
  assert np.isfinite(np.asarray(_attention(q, k, v, mask))).all()


def test_attention_equals_einsum_reference_on_cache_shaped_keys():
  """Decoding: a chunk of L queries at cache index 5 against S = 24 cached slots, part of them empty."""
  l, s, index = 3, 24, 5
  cache_seg = jnp.zeros((2, s), jnp.int32).at[:, :index + l].set(1)
  mask = attention_mask(index + jnp.arange(l), jnp.arange(s), jnp.ones((2, l), jnp.int32), cache_seg)
  q, k, v = _qkv(2, l, s, 4, 2, 8, seed=3)
  np.testing.assert_allclose(_attention(q, k, v, mask), reference_attention(q, k, v, mask), rtol=1e-5, atol=1e-5)


def test_attention_in_the_model_equals_the_reference(monkeypatch):
  """Whole-model logits and gradients with the reference attention swapped in."""
  loss, grads = _cached("none", 0)
  def reference(q, k, v, mask, scale=None, cap=0.0):
    assert scale is None and cap == 0.0  # CFG is a plain llama-style model: no Gemma scale or soft-cap
    return reference_attention(q, _t(k), v, mask)

  monkeypatch.setattr("jaxllm.model.dot_attention", reference)
  ref_loss, ref_grads = _loss_and_grads(CFG, 0, _params(), _batch())
  np.testing.assert_allclose(loss, ref_loss, rtol=1e-5)
  _assert_trees_close(grads, ref_grads, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("subscripts,n_in,x_shape,w_shape", [
    ("BLa,ax->BLx", 1, (3, 5, 16), (16, 24)),            # d_model -> mlp, and the output head
    ("BLa,axy->BLxy", 1, (3, 5, 16), (16, 4, 8)),        # d_model -> (heads, head_dim): q, k, v
    ("BLab,abx->BLx", 2, (3, 5, 4, 8), (4, 8, 16)),      # (heads, head_dim) -> d_model: o
    ("Ba,ax->Bx", 1, (7, 16), (16, 2)),                  # one decode position, a LoRA rank
])
def test_matmul_2d_equals_the_einsum_over_named_dims(subscripts, n_in, x_shape, w_shape):
  x = jax.random.normal(jax.random.PRNGKey(0), x_shape)
  w = jax.random.normal(jax.random.PRNGKey(1), w_shape)
  y, vjp = jax.vjp(lambda a, b: matmul_2d(a, b, n_in), x, w)
  ref, ref_vjp = jax.vjp(lambda a, b: jnp.einsum(subscripts, a, b), x, w)
  np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5)
  cot = jax.random.normal(jax.random.PRNGKey(2), ref.shape)
  _assert_trees_close(vjp(cot), ref_vjp(cot), rtol=1e-5, atol=1e-5)
