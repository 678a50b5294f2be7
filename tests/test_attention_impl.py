"""model.attention_impl: every attention implementation the backend has gives the model's logits and gradients.

On CPU the cudnn path (jaxllm/fused_attention.py: layouts, GQA, the causal flag, segment / prefix / window masks
as the kernel's mask) runs with jax's XLA implementation of `jax.nn.dot_product_attention` in place of the cuDNN
kernel; on a GPU the kernel itself runs (bfloat16) against the model's own attention.
"""
import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxllm import fused_attention
from jaxllm.config import ConfigError, validate
from jaxllm.model import ModelConfig, Transformer
from jaxllm.runtime import check_backend

CFG = ModelConfig(vocab_size=64, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=8, mlp_dim=48,
                  max_seq_len=32)
ON_GPU = jax.default_backend() == "gpu"


def _rows():
  """(tokens, positions, segment ids, prefix ids) [2, 16]: row 0 two packed documents then padding; row 1 a
  shared prompt (segment 1) and two branches behind it (segments 2, 3), as GRPO group rows lay them out."""
  tokens = jax.random.randint(jax.random.PRNGKey(1), (2, 16), 1, 64)
  seg = np.array([[1] * 6 + [2] * 7 + [0] * 3, [1] * 6 + [2] * 5 + [3] * 5])
  pos = np.array([[*range(6), *range(7), 0, 0, 0], [*range(6), *range(6, 11), *range(6, 11)]])
  prefix = np.array([[0] * 16, [0] * 6 + [1] * 10])
  return tokens, jnp.asarray(pos), jnp.asarray(seg), jnp.asarray(prefix)


def _logits_and_grad(cfg, params, prefix: bool):
  tokens, pos, seg, pre = _rows()
  model = Transformer(cfg)

  def loss(p):
    logits = model.apply({"params": p}, tokens, pos, seg, prefix_ids_BL=pre if prefix else None)
    return (logits.astype(jnp.float32) ** 2).mean(), logits

  (_, logits), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(params)
  assert logits.dtype == jnp.float32
  return np.asarray(logits), grads


@pytest.mark.parametrize("variant,prefix",
                         [(dict(), False), (dict(sliding_window=4, query_pre_attn_scalar=16.0), True)],
                         ids=["packed", "prefix-window-scaled"])
def test_fused_path_matches_the_models_attention(monkeypatch, variant, prefix):
  """The cudnn path with jax's XLA kernel equals dot_attention: logits and every gradient, f32."""
  monkeypatch.setitem(fused_attention.IMPLEMENTATION, "cudnn", "xla")
  cfg = dataclasses.replace(CFG, **variant)
  params = nn.meta.unbox(Transformer(cfg).init(jax.random.PRNGKey(0), jnp.zeros((1, 4), jnp.int32))["params"])
  want, want_g = _logits_and_grad(cfg, params, prefix)
  got, got_g = _logits_and_grad(dataclasses.replace(cfg, attention_impl="cudnn"), params, prefix)
  real = np.asarray(_rows()[2]) > 0  # padding rows' outputs are never read
  np.testing.assert_allclose(got[real], want[real], rtol=1e-5, atol=1e-5)
  for a, b in zip(jax.tree.leaves(got_g), jax.tree.leaves(want_g)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6)


def test_bfloat16_compute_keeps_f32_params_gradients_and_logits(monkeypatch):
  """model.dtype=bfloat16 (the GPU setting, and what cudnn needs): matmuls and attention in bf16, but params,
  their gradients (so the optimizer's moments) and the logits the loss reads stay f32, close to f32 compute."""
  monkeypatch.setitem(fused_attention.IMPLEMENTATION, "cudnn", "xla")
  params = nn.meta.unbox(Transformer(CFG).init(jax.random.PRNGKey(0), jnp.zeros((1, 4), jnp.int32))["params"])
  want, want_g = _logits_and_grad(CFG, params, True)
  got, got_g = _logits_and_grad(dataclasses.replace(CFG, dtype="bfloat16", attention_impl="cudnn"), params, True)
  assert {x.dtype for x in jax.tree.leaves(params) + jax.tree.leaves(got_g)} == {jnp.dtype("float32")}
  real = np.asarray(_rows()[2]) > 0
  np.testing.assert_allclose(got[real], want[real], atol=0.05)
  for a, b in zip(jax.tree.leaves(got_g), jax.tree.leaves(want_g)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=0.05 * float(np.abs(b).max()) + 1e-6)


def test_cache_decoding_keeps_the_models_attention(monkeypatch):
  """With a KV cache (sampling) cudnn models run dot_attention: the result equals the xla model's exactly."""
  monkeypatch.setitem(fused_attention.IMPLEMENTATION, "cudnn", "unused: decoding must not reach the kernel")
  from jaxllm.model import init_cache
  params = nn.meta.unbox(Transformer(CFG).init(jax.random.PRNGKey(0), jnp.zeros((1, 4), jnp.int32))["params"])
  tokens = jnp.arange(1, 9)[None]
  out = [jax.jit(Transformer(dataclasses.replace(CFG, attention_impl=impl)).apply)(
      {"params": params}, tokens, cache=init_cache(CFG, 1, 16))[0] for impl in ("xla", "cudnn")]
  np.testing.assert_array_equal(np.asarray(out[0]), np.asarray(out[1]))


@pytest.mark.skipif(not ON_GPU, reason="cuDNN flash attention needs a CUDA GPU (jax backend here: "
                    f"{jax.default_backend()}); the CPU tests above run the same path with jax's XLA kernel")
@pytest.mark.parametrize("prefix", [False, True], ids=["packed", "prefix"])
def test_cudnn_kernel_matches_the_models_attention_on_gpu(prefix):
  cfg = dataclasses.replace(CFG, dtype="bfloat16", head_dim=16, d_model=64)
  params = nn.meta.unbox(Transformer(cfg).init(jax.random.PRNGKey(0), jnp.zeros((1, 4), jnp.int32))["params"])
  want, _ = _logits_and_grad(cfg, params, prefix)
  got, _ = _logits_and_grad(dataclasses.replace(cfg, attention_impl="cudnn"), params, prefix)
  real = np.asarray(_rows()[2]) > 0
  np.testing.assert_allclose(got[real], want[real], rtol=5e-2, atol=5e-2)  # bfloat16


def _config(**model):
  from configs import pretrain
  c = pretrain.get_config("tiny")
  c.model.update(model)
  return c


def test_cudnn_settings_cuDNN_cannot_run_are_refused_by_name():
  with pytest.raises(ConfigError, match=r"config.model.attention_impl: .*bfloat16"):
    validate(_config(attention_impl="cudnn", dtype="float32"))
  with pytest.raises(ConfigError, match=r"config.model.attention_impl: .*soft-cap"):
    validate(_config(attention_impl="cudnn", dtype="bfloat16", attn_softcap=50.0))
  with pytest.raises(ConfigError, match=r"config.model.attention_impl: 'flash' is not one of"):
    validate(_config(attention_impl="flash"))
  validate(_config(attention_impl="cudnn", dtype="bfloat16"))


@pytest.mark.skipif(ON_GPU, reason="checks the refusal on a backend without cuDNN")
def test_cudnn_without_a_gpu_is_one_clear_error():
  with pytest.raises(ConfigError, match=r"config.model.attention_impl: cudnn needs a GPU \(the backend here is cpu"):
    check_backend(_config(attention_impl="cudnn", dtype="bfloat16"))
