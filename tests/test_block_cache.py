"""The block KV cache (jaxllm/block_cache.py) the serving engine decodes with: attention over a list of blocks
equals attention over one buffer, blocks a row does not reach leave its output bit-identical, each row's token
lands in its own block, and a decode over the block cache gives the logits of the one-buffer cache."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxllm.block_cache import block_sizes, first_blocks, init_block_cache, with_first_blocks, write_blocks
from jaxllm.model import ModelConfig, Transformer, dot_attention, init_cache

# Gemma-style switches the block path must carry: soft-capped scores, and a sliding-window layer (layer 0; layer
# 1 global) whose window ends inside the blocks
CFG = ModelConfig(vocab_size=61, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=8, mlp_dim=64,
                  max_seq_len=40, attn_softcap=20.0, sliding_window=6, global_every=2)


def _split(x, sizes, axis):
  return jnp.split(x, np.cumsum(sizes)[:-1], axis=axis)


def _qkv_mask(seed=0, b=3, l=2, s=40):
  keys = jax.random.split(jax.random.PRNGKey(seed), 3)
  q = jax.random.normal(keys[0], (b, l, 4, 8))
  k = jax.random.normal(keys[1], (b, 2, 8, s))
  v = jax.random.normal(keys[2], (b, 2, s, 8))
  ends = jnp.array([5, 19, 33])[:, None, None]  # row r sees slots up to ends[r] + query index
  mask = jnp.arange(s)[None, None] <= ends + jnp.arange(l)[None, :, None]
  return q, k, v, mask


def test_attention_over_blocks_equals_attention_over_one_buffer():
  q, k, v, mask = _qkv_mask()
  sizes = block_sizes(40, 16)
  assert sizes == [16, 16, 8]
  whole = dot_attention(q, k, v, mask, cap=20.0)
  blocks = dot_attention(q, _split(k, sizes, 3), _split(v, sizes, 2), _split(mask, sizes, 2), cap=20.0)
  np.testing.assert_allclose(blocks, whole, rtol=1e-6, atol=1e-6)


def test_blocks_a_row_does_not_reach_leave_it_bit_identical():
  """Rows 0 and 1 see only the first 2 blocks of 8 slots (<= slot 15); blocks 3..5 add exact zeros to them."""
  q, k, v, mask = _qkv_mask()
  mask = mask & (jnp.arange(40) < 16)
  ks, vs, ms = _split(k, [8] * 5, 3), _split(v, [8] * 5, 2), _split(mask, [8] * 5, 2)
  two = dot_attention(q, ks[:2], vs[:2], ms[:2])
  five = dot_attention(q, ks, vs, ms)
  np.testing.assert_array_equal(np.asarray(five), np.asarray(two))


def test_each_row_writes_its_token_into_its_own_block():
  blocks = [jnp.zeros((4, 3, 8)), jnp.zeros((4, 3, 8)), jnp.zeros((4, 3, 4))]  # slots 0-7, 8-15, 16-19
  new = jnp.arange(1, 5, dtype=jnp.float32)[:, None, None] * jnp.ones((4, 3, 1))
  written = write_blocks(blocks, new, jnp.array([3, 8, 19, 20]), axis=2)  # slot 20: past the last block
  whole = np.concatenate([np.asarray(b) for b in written], axis=2)
  expected = np.zeros((4, 3, 20))
  expected[0, :, 3], expected[1, :, 8], expected[2, :, 19] = 1, 2, 3
  np.testing.assert_array_equal(whole, expected)


def test_decoding_over_the_block_cache_gives_the_one_buffer_logits():
  """Three rows at different lengths (per-row write slots), one token a step over blocks of 8 (the live blocks
  grow as the longest row does) against the plain cache with the same per-row index."""
  model = Transformer(CFG)
  weights = nn.meta.unbox(model.init(jax.random.PRNGKey(0), jnp.zeros((1, 4), jnp.int32))["params"])
  variables = {"params": weights}
  tokens = np.random.default_rng(0).integers(1, CFG.vocab_size, (3, 40)).astype(np.int32)
  pos = np.array([2, 9, 15], np.int32)
  plain, blocked = init_cache(CFG, 3, 40), init_block_cache(CFG, 3, 40, 8)
  plain["index"] = blocked["index"] = jnp.zeros((3,), jnp.int32)
  seg = lambda: jnp.ones((3, 1), jnp.int32)
  for t in range(16 + 6):  # rows start one token a step, each from its own slot 0, until they reach pos
    live = min(5, (t // 8) + 1)
    index = jnp.asarray(np.maximum(t - (15 - pos), 0))  # row r starts at step 15 - pos[r]
    step_tokens = jnp.asarray(tokens[np.arange(3), np.asarray(index)])[:, None]
    plain["index"] = index
    expected, plain = model.apply(variables, step_tokens, index[:, None], seg(), cache=plain)
    live_cache = first_blocks(blocked["layers"], blocked["segment_ids"], live, index)
    got, live_cache = model.apply(variables, step_tokens, index[:, None], seg(), cache=live_cache)
    blocked["layers"], blocked["segment_ids"] = with_first_blocks(blocked["layers"], blocked["segment_ids"],
                                                                  live_cache)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
