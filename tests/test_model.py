"""Model properties: causality, document isolation under packing, GQA shapes, cache = full forward."""
import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxllm.model import ModelConfig, Transformer, attention_mask, count_params, init_cache

CFG = ModelConfig(vocab_size=64, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=8, mlp_dim=48,
                  max_seq_len=32)


def _init(cfg=CFG, seed=0):
  model = Transformer(cfg)
  params = nn.meta.unbox(model.init(jax.random.PRNGKey(seed), jnp.zeros((1, 4), jnp.int32))["params"])
  return model, params


def _embedding_grads(model, params, tokens, query_pos, segment_ids=None):
  """|d logits[query_pos] / d input vectors| summed per input position."""
  b, l = tokens.shape
  seg = jnp.ones((b, l), jnp.int32) if segment_ids is None else segment_ids
  slots = jnp.arange(l)
  mask = attention_mask(slots, slots, seg, seg)
  pos = jnp.broadcast_to(jnp.arange(l), (b, l))

  def from_inputs(mdl, x_BLD):  # Transformer.__call__ after the embedding lookup
    for layer in mdl.layers:
      x_BLD, _ = layer(x_BLD, pos, mask, None, None, None)
    return mdl.head(mdl.final_norm(x_BLD))

  x = jnp.take(params["embedding"], tokens, axis=0)
  g = jax.grad(lambda x: model.apply({"params": params}, x, method=from_inputs)[0, query_pos].sum())(x)
  return np.abs(np.asarray(g[0])).sum(-1)


def test_causal_gradients_are_exactly_zero_for_future_tokens():
  model, params = _init()
  tokens = jax.random.randint(jax.random.PRNGKey(1), (1, 10), 0, CFG.vocab_size)
  per_pos = _embedding_grads(model, params, tokens, query_pos=5)
  assert np.all(per_pos[6:] == 0.0)
  assert np.all(per_pos[:6] > 0.0)


def test_packed_documents_do_not_see_each_other():
  model, params = _init()
  tokens = jax.random.randint(jax.random.PRNGKey(2), (1, 12), 0, CFG.vocab_size)
  seg = jnp.array([[1] * 5 + [2] * 7])
  per_pos = _embedding_grads(model, params, tokens, query_pos=9, segment_ids=seg)
  assert np.all(per_pos[:5] == 0.0), "document 2 reads document 1"
  assert np.all(per_pos[5:10] > 0.0)


def test_changing_a_later_token_or_another_document_leaves_logits_unchanged():
  model, params = _init()
  tokens = jax.random.randint(jax.random.PRNGKey(3), (1, 12), 0, CFG.vocab_size)
  seg = jnp.array([[1] * 6 + [2] * 6])
  pos = jnp.array([list(range(6)) * 2])
  base = model.apply({"params": params}, tokens, pos, seg)
  later = model.apply({"params": params}, tokens.at[0, 4].set((tokens[0, 4] + 1) % 64), pos, seg)
  np.testing.assert_array_equal(base[0, :4], later[0, :4])
  other_doc = model.apply({"params": params}, tokens.at[0, 2].set((tokens[0, 2] + 7) % 64), pos, seg)
  np.testing.assert_array_equal(base[0, 6:], other_doc[0, 6:])
  # The second document alone, at its own positions, gives the same logits as inside the pack.
  alone = model.apply({"params": params}, tokens[:, 6:])
  np.testing.assert_allclose(base[0, 6:], alone[0], atol=1e-5)



def test_branches_behind_a_shared_prefix_see_the_prefix_and_themselves_only():
  """prefix_ids: prompt (segment 1) | branch A (2) | branch B (3), both branches at the positions after the
  prompt, give each branch the logits of prompt + branch alone; a branch never reads the other."""
  model, params = _init()
  tokens = jax.random.randint(jax.random.PRNGKey(4), (1, 13), 0, CFG.vocab_size)
  seg = jnp.array([[1] * 5 + [2] * 4 + [3] * 3 + [0]])
  prefix = jnp.array([[1] * 12 + [0]])
  pos = jnp.array([[*range(5), *range(5, 9), *range(5, 8), 0]])
  shared = model.apply({"params": params}, tokens, pos, seg, prefix_ids_BL=prefix)
  alone_a = model.apply({"params": params}, tokens[:, :9])
  alone_b = model.apply({"params": params}, jnp.concatenate([tokens[:, :5], tokens[:, 9:12]], axis=1))
  np.testing.assert_allclose(shared[0, :9], alone_a[0], atol=1e-5)
  np.testing.assert_allclose(shared[0, 9:12], alone_b[0, 5:], atol=1e-5)
  other_branch = model.apply({"params": params}, tokens.at[0, 6].set((tokens[0, 6] + 5) % 64), pos, seg,
                             prefix_ids_BL=prefix)
  np.testing.assert_array_equal(shared[0, 9:12], other_branch[0, 9:12])
  with pytest.raises(ValueError, match="KV cache"):
    model.apply({"params": params}, tokens, pos, seg, cache=init_cache(CFG, 1, 16), prefix_ids_BL=prefix)

@pytest.mark.parametrize("kv_heads", [1, 2, 4])
def test_gqa_shapes(kv_heads):
  cfg = dataclasses.replace(CFG, n_kv_heads=kv_heads)
  model, params = _init(cfg)
  attn = params["layers_0"]["attn"]
  assert attn["q"]["w"].shape == (32, 4, 8)
  assert attn["k"]["w"].shape == (32, kv_heads, 8)
  assert attn["v"]["w"].shape == (32, kv_heads, 8)
  assert attn["o"]["w"].shape == (4, 8, 32)
  cache = init_cache(cfg, 3, 16)
  assert cache["layers"][0]["k"].shape == (3, kv_heads, 8, 16) and cache["layers"][0]["v"].shape == (3, kv_heads, 16, 8)
  logits = model.apply({"params": params}, jnp.zeros((3, 7), jnp.int32))
  assert logits.shape == (3, 7, 64) and logits.dtype == jnp.float32


def test_options_change_param_tree():
  cfg = dataclasses.replace(CFG, qk_norm=True, attn_bias=True, tie_embeddings=True)
  _, params = _init(cfg)
  attn = params["layers_0"]["attn"]
  assert "q_norm" in attn and "b" in attn["q"] and "lm_head" not in params
  _, untied = _init(CFG)
  per_layer_extra = 8 + 8 + 4 * 8 + 2 * 2 * 8  # q/k norm scales, q bias, k and v biases
  assert count_params(untied) - count_params(params) == 64 * 32 - CFG.n_layers * per_layer_extra


def test_cached_decode_equals_full_forward():
  cfg = dataclasses.replace(CFG, qk_norm=True, attn_bias=True)
  model, params = _init(cfg)
  tokens = jax.random.randint(jax.random.PRNGKey(4), (2, 11), 0, 64)
  full = model.apply({"params": params}, tokens)
  cache = init_cache(cfg, 2, 16)
  logits, cache = model.apply({"params": params}, tokens[:, :7], cache=cache)
  chunks = [logits]
  for t in range(7, 11):
    step_logits, cache = model.apply({"params": params}, tokens[:, t:t + 1], jnp.full((2, 1), t), cache=cache)
    chunks.append(step_logits)
  np.testing.assert_allclose(jnp.concatenate(chunks, axis=1), full, atol=1e-5)


def test_remat_and_bf16_compute():
  model, params = _init()
  tokens = jax.random.randint(jax.random.PRNGKey(5), (2, 9), 0, 64)
  ref = model.apply({"params": params}, tokens)
  for policy in ("full", "dots"):
    remat = Transformer(dataclasses.replace(CFG, remat=policy))
    np.testing.assert_array_equal(remat.apply({"params": params}, tokens), ref)
  bf16 = Transformer(dataclasses.replace(CFG, dtype="bfloat16")).apply({"params": params}, tokens)
  assert bf16.dtype == jnp.float32
  np.testing.assert_allclose(bf16, ref, atol=0.1)
