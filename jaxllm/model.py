"""Decoder-only transformer: RMSNorm, RoPE, grouped-query attention, SwiGLU, optional qk-norm / qkv bias /
tied embeddings / sliding-window attention, an optional static-shape KV cache, and optional LoRA adapters
passed in as a pytree.

Gemma 2 / 3 are the same network with switches (`hf.py` sets them from a config.json): embeddings scaled by
sqrt(D), (1 + w) RMSNorm, GeGLU, an RMSNorm after attention and after the MLP as well as before, soft-capped
attention scores and logits (cap * tanh(x / cap)), scores scaled by query_pre_attn_scalar ** -0.5, and local
(sliding-window) layers with their own RoPE base between global ones (every `global_every`-th layer).

Shape legend: the suffixes of array names in model, loss, sampler and rollout code (jaxllm/, jaxllm/losses/).
  B batch rows           L length (query positions)            S key length (the cache's, when decoding)
  D d_model              H query heads                         K kv heads
  k head dim (Dh in prose and comments)                        M = G * L query rows of one kv head
  F mlp hidden           V vocabulary                          C one vocabulary slice's columns
  T tokens of a flattened [B * L]                              2 a pair row's two sides (chosen, rejected;
  1 a broadcast axis of size 1                                   KTO: the answer, its KL sample)
  G query heads per kv head (H // K) in attention; in GRPO (rl.py, losses/grpo.py) a group's samples
  R LoRA rank in model.py; in rl.py the rollout's samples (P * G)
  P prompts (rl.py) or padded prompt length (sampling.py)      N new tokens (sampling.py)

Every parameter carries logical axis names (`vocab`, `embed`, `heads`, `kv_heads`, `head_dim`, `mlp`), which
`sharding.py` maps onto mesh axes; the model never mentions a mesh. Params are f32 by default; matmuls run in
`dtype`; norms, softmax and logits are f32.
"""
from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxllm import quant
from jaxllm.block_cache import block_starts, is_block_cache, write_blocks
from jaxllm.frozen_matmul import frozen_matmul
from jaxllm.fused_attention import fused_attention

Array = jax.Array
LoraTree = dict[str, Any] | None


_RUN_TIME = {"run_time": True}  # field metadata: a run-time choice a run may change, not the architecture
_FROM_LORA = {"from_lora": True}  # field metadata: filled from config.lora, not a config.model key


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """The model's configuration and the one list of `config.model` keys: configs/base.py builds that section from
  these fields and defaults (`config_section`), runtime copies `ARCHITECTURE_KEYS` from init_from's run."""
  vocab_size: int = 0  # 0 = the tokenizer's size rounded up to a multiple of 64 (filled in by runtime)
  d_model: int = 256  # residual width
  n_layers: int = 4  # transformer blocks
  n_heads: int = 8  # query heads
  n_kv_heads: int = 4  # key/value heads (GQA); must divide n_heads
  head_dim: int = 0  # 0 = d_model // n_heads
  mlp_dim: int = 704  # SwiGLU hidden width
  max_seq_len: int = 512  # longest sequence the model (and the KV cache) is built for
  rope_theta: float = 10000.0  # RoPE base
  rope_scaling: str = ""  # '' | llama3 (Llama 3.1 long-context) | linear (positions / rope_factor); HF import
  rope_factor: float = 1.0  # llama3 scaling: low-frequency stretch
  rope_low_freq_factor: float = 1.0  # llama3 scaling: wavelength band edges, as in the HF config
  rope_high_freq_factor: float = 4.0
  rope_original_max_len: int = 8192  # llama3 scaling: pre-training context length
  norm_eps: float = 1e-6  # RMSNorm epsilon
  qk_norm: bool = False  # RMSNorm on queries and keys per head (Qwen3)
  attn_bias: bool = False  # biases on q/k/v projections (Qwen2)
  tie_embeddings: bool = False  # output head shares the input embedding matrix
  sliding_window: int = 0  # > 0: each query attends to the last this-many positions only (Mistral); 0 = all
  global_every: int = 0  # with sliding_window: 0 = all layers windowed; k = every k-th layer global (Gemma)
  rope_local_theta: float = 0.0  # RoPE base of windowed layers, unscaled; 0 = as global ones (Gemma 3)
  norm_plus_one: bool = False  # RMSNorm scales by (1 + w), w initialised at 0 (Gemma)
  embed_scale: bool = False  # embeddings times sqrt(d_model) (Gemma)
  mlp_act: str = "silu"  # MLP gate activation: silu (SwiGLU) | gelu_tanh (GeGLU, Gemma)
  post_norms: bool = False  # RMSNorm on attention / MLP outputs before the residual add (Gemma 2 / 3)
  attn_softcap: float = 0.0  # > 0: attention scores soft-capped at this: cap * tanh(s / cap) (Gemma 2)
  final_softcap: float = 0.0  # > 0: output logits soft-capped at this (Gemma 2)
  query_pre_attn_scalar: float = 0.0  # > 0: scores scaled by this ** -0.5, not head_dim ** -0.5 (Gemma)
  # compute dtype: float32 | bfloat16 (params stay param_dtype; softmax/loss f32)
  dtype: str = dataclasses.field(default="float32", metadata=_RUN_TIME)
  param_dtype: str = dataclasses.field(default="float32", metadata=_RUN_TIME)  # parameter storage dtype
  # rematerialise each block: none | full | dots (save matmul outputs only)
  remat: str = dataclasses.field(default="none", metadata=_RUN_TIME)
  # attention kernel of a forward without a KV cache: xla (dot_attention below) | cudnn (GPU, bf16/fp16;
  # fused_attention.py says which masks go where)
  attention_impl: str = dataclasses.field(default="xla", metadata=_RUN_TIME)
  init_std: float = dataclasses.field(default=0.02, metadata=_RUN_TIME)  # std of the normal init of every matrix
  lora_scale: float = dataclasses.field(default=1.0, metadata=_FROM_LORA)  # alpha / rank, with a LoRA tree only
  lora_dropout: float = dataclasses.field(default=0.0, metadata=_FROM_LORA)

  def __post_init__(self):
    if self.head_dim == 0:
      object.__setattr__(self, "head_dim", self.d_model // self.n_heads)

  @classmethod
  def from_section(cls, model: dict | ml_collections.ConfigDict, **lora) -> "ModelConfig":
    """A `model.*` section (a run's config.json may lack keys added since: they keep their defaults)."""
    m = model.to_dict() if isinstance(model, ml_collections.ConfigDict) else dict(model)
    return cls(**{k: m[k] for k in MODEL_KEYS if k in m}, **lora)

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict) -> "ModelConfig":
    """config.model (resolved: vocab_size filled in) plus config.lora."""
    return cls.from_section(config.model, lora_scale=lora_scale(config.lora),
                            lora_dropout=config.lora.dropout)


MODEL_KEYS = tuple(f.name for f in dataclasses.fields(ModelConfig) if not f.metadata.get("from_lora"))
# The keys that define the architecture (copied from init_from's run); the others are run-time choices.
ARCHITECTURE_KEYS = tuple(f.name for f in dataclasses.fields(ModelConfig) if not f.metadata)


def config_section() -> ml_collections.ConfigDict:
  """`config.model` with every key and default of ModelConfig (configs/base.py)."""
  defaults = {f.name: f.default for f in dataclasses.fields(ModelConfig)}
  return ml_collections.ConfigDict({k: defaults[k] for k in MODEL_KEYS})


def lora_scale(lora: ml_collections.ConfigDict) -> float:
  """alpha / rank, or alpha / sqrt(rank) with rsLoRA (Kalajdzievski 2023: keeps the adapter's update size
  independent of the rank); 1 without LoRA."""
  if not lora.rank:
    return 1.0
  return lora.alpha / (math.sqrt(lora.rank) if lora.get("rslora", False) else lora.rank)


def windowed(cfg: ModelConfig, layer: int) -> bool:
  """Whether layer `layer` (0-based) attends through the sliding window."""
  return cfg.sliding_window > 0 and (cfg.global_every == 0 or (layer + 1) % cfg.global_every != 0)


def _init(cfg: ModelConfig, axes: tuple[str | None, ...]):
  return nn.with_logical_partitioning(nn.initializers.normal(cfg.init_std), axes)


class RMSNorm(nn.Module):
  eps: float
  param_dtype: Any = jnp.float32
  plus_one: bool = False  # scale by (1 + w), w starting at 0 (Gemma); else by w, starting at 1

  @nn.compact
  def __call__(self, x: Array) -> Array:
    init = nn.initializers.zeros if self.plus_one else nn.initializers.ones
    scale = self.param("scale", nn.with_logical_partitioning(init, ("norm",)), (x.shape[-1],), self.param_dtype)
    x32 = x.astype(jnp.float32)
    normed = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
    return (normed * (scale.astype(jnp.float32) + float(self.plus_one))).astype(x.dtype)


def norm(cfg: ModelConfig, name: str) -> RMSNorm:
  return RMSNorm(cfg.norm_eps, jnp.dtype(cfg.param_dtype), cfg.norm_plus_one, name=name)


def softcap(x: Array, cap: float) -> Array:
  return x if cap <= 0 else jnp.tanh(x / cap) * cap


def llama3_inv_freq(inv_freq, factor: float, low_freq_factor: float, high_freq_factor: float,
                    original_max_len: int):
  """Llama 3.1's long-context RoPE: stretch low frequencies by `factor`, keep high ones, blend in between
  (as transformers' `_compute_llama3_parameters`); numpy or jax arrays."""
  xp = np if isinstance(inv_freq, np.ndarray) else jnp
  low_freq_wavelen = original_max_len / low_freq_factor
  high_freq_wavelen = original_max_len / high_freq_factor
  wavelen = 2 * math.pi / inv_freq
  scaled = xp.where(wavelen > low_freq_wavelen, inv_freq / factor, inv_freq)
  smooth = (original_max_len / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor)
  smoothed = (1 - smooth) * scaled / factor + smooth * scaled
  medium = (wavelen >= high_freq_wavelen) & (wavelen <= low_freq_wavelen)
  return xp.where(medium, smoothed, scaled)


def rope_frequencies(cfg: ModelConfig, local: bool = False) -> Array:
  """Inverse frequencies [Dh/2] of the half-split ('rotate_half') RoPE layout Hugging Face Llama uses; `local`:
  a windowed layer's, at rope_local_theta and unscaled when that is set (Gemma 3)."""
  if local and cfg.rope_local_theta > 0:
    return 1.0 / (cfg.rope_local_theta ** (jnp.arange(0, cfg.head_dim, 2, dtype=jnp.float32) / cfg.head_dim))
  inv_freq = 1.0 / (cfg.rope_theta ** (jnp.arange(0, cfg.head_dim, 2, dtype=jnp.float32) / cfg.head_dim))
  if cfg.rope_scaling == "linear":
    return inv_freq / cfg.rope_factor
  if cfg.rope_scaling == "llama3":
    inv_freq = llama3_inv_freq(inv_freq, cfg.rope_factor, cfg.rope_low_freq_factor, cfg.rope_high_freq_factor,
                               cfg.rope_original_max_len)
  return inv_freq


def apply_rope(x_BLHk: Array, positions_BL: Array, inv_freq: Array) -> Array:
  angles_BLk = positions_BL[..., None].astype(jnp.float32) * inv_freq
  sin, cos = jnp.sin(angles_BLk)[:, :, None, :], jnp.cos(angles_BLk)[:, :, None, :]
  x1, x2 = jnp.split(x_BLHk.astype(jnp.float32), 2, axis=-1)
  return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1).astype(x_BLHk.dtype)


def attention_mask(q_slot_L: Array, k_slot_S: Array, q_seg_BL: Array, k_seg_BS: Array,
                   q_prefix_BL: Array | None = None) -> Array:
  """[B, L, S] bool: a query sees keys at earlier-or-equal slots (q_slot_L: [L], or [B, L] per row) of its own segment, and with `q_prefix_BL`
  also those of the segment named there (a prompt shared by several answers packed after it in one row).

  Segment 0 marks padding; a padding query sees only padding (so no row is empty and nothing is NaN), and
  its output is never read.
  """
  causal_LS = k_slot_S <= q_slot_L[..., None]  # [L, S], or [B, L, S] for per-row query slots [B, L]
  seen_BLS = q_seg_BL[:, :, None] == k_seg_BS[:, None, :]
  if q_prefix_BL is not None:
    seen_BLS = seen_BLS | (q_prefix_BL[:, :, None] == k_seg_BS[:, None, :])
  return (causal_LS if causal_LS.ndim == 3 else causal_LS[None]) & seen_BLS


def dot_attention(q_BLHk: Array, k_BKkS: Array | list, v_BKSk: Array | list, mask_BLS: Array | list,
                  scale: float | None = None, cap: float = 0.0) -> Array:
  """Softmax attention of H query heads over K kv heads (GQA) under a [B, L, S] bool mask; f32 softmax.

  Keys and values come kv-head-major in the KV cache's layouts, keys transposed ([B, K, Dh, S]) and values not
  ([B, K, S, Dh]), so neither a training step nor a decode step over a long cache copies them into another
  layout. Laid out for plain matmuls (faster on CPU than the einsum over [B, L, K, G, Dh] it replaced, which
  tests/test_optimisations.py keeps as the reference): the G query heads sharing a kv head are stacked along
  length (M = G * L rows), so each kv head is one [M, Dh] x [Dh, S] product, and the softmax is normalised
  after the probs @ V product, on [M, Dh] instead of [M, S]. Transposed keys make the scores a plain product
  rather than one against a transposed operand: the same speed in a training step, but in a decode step
  (M = G rows) XLA:CPU ran the transposed form ~6x slower (2.2 against 0.34 ms a layer at batch 128, 96
  slots). `jax.nn.dot_product_attention` (implementation=None is XLA's einsum here) was no faster.

  Keys, values and mask may instead be lists of blocks of the key axis (a block cache, block_cache.py): the
  max is taken over every block's scores first, then each block's exp-sums and probs @ V products are added
  in block order. A block where a row sees nothing adds exactly zero to that row's sums (exp of the mask
  value minus a real max is 0), so trailing blocks a row does not use leave its output bit-identical.

  `scale` replaces Dh ** -0.5; `cap` > 0 soft-caps the scores (cap * tanh(s / cap)) before the mask.
  """
  blocks = isinstance(k_BKkS, (list, tuple))
  ks, vs, masks = (k_BKkS, v_BKSk, mask_BLS) if blocks else ([k_BKkS], [v_BKSk], [mask_BLS])
  b, l, h, dh = q_BLHk.shape
  k_heads = ks[0].shape[1]
  g = h // k_heads
  q_BKMk = (q_BLHk * jnp.asarray(dh ** -0.5 if scale is None else scale, q_BLHk.dtype)).reshape(b, l, k_heads, g, dh)
  q_BKMk = q_BKMk.transpose(0, 2, 3, 1, 4).reshape(b, k_heads, g * l, dh)
  scores = [jnp.where(mask_BLS[:, None, None],
                      softcap(jnp.einsum("BKMk,BKkS->BKMS", q_BKMk, k, preferred_element_type=jnp.float32),
                              cap).reshape(b, k_heads, g, l, -1), jnp.finfo(jnp.float32).min)
            for k, mask_BLS in zip(ks, masks)]
  # exp(s - max): the softmax numerator, <= 1; a fully masked row (none: padding sees padding) would come out
  # uniform, as with jax.nn.softmax, never NaN
  max_BKGL1 = jax.lax.stop_gradient(functools.reduce(jnp.maximum, [s.max(axis=-1, keepdims=True) for s in scores]))
  out_BKMk = total_BKGL1 = None
  for scores_BKGLS, v in zip(scores, vs):
    exp_BKGLS = jnp.exp(scores_BKGLS - max_BKGL1)
    part_BKMk = jnp.einsum("BKMS,BKSk->BKMk", exp_BKGLS.reshape(b, k_heads, g * l, -1).astype(v.dtype), v,
                           preferred_element_type=jnp.float32)
    part_BKGL1 = exp_BKGLS.sum(axis=-1, keepdims=True)
    out_BKMk = part_BKMk if out_BKMk is None else out_BKMk + part_BKMk
    total_BKGL1 = part_BKGL1 if total_BKGL1 is None else total_BKGL1 + part_BKGL1
  out_BKGLk = out_BKMk.reshape(b, k_heads, g, l, dh) / total_BKGL1
  return out_BKGLk.astype(vs[0].dtype).transpose(0, 3, 1, 2, 4).reshape(b, l, h, dh)


def matmul_2d(x: Array, w: Array, n_in: int, preferred_element_type: Any = None) -> Array:
  """x [..., *in] @ w [*in, *out] -> [..., *out] (n_in = len(in)) as one [rows, prod(in)] x [prod(in), prod(out)]
  product; both reshapes are free.

  Why not one einsum over the named dims: with the leading [B, L] (and head) dims kept, XLA:CPU lays out the
  backward pass with transposed copies of the [B, L, F] activations; the same product over flattened rows makes
  a default-size train step's forward+backward ~12% faster (docs/performance.md). Numerically identical.
  """
  lead, in_shape, out_shape = x.shape[:x.ndim - n_in], x.shape[x.ndim - n_in:], w.shape[n_in:]
  k = math.prod(in_shape)
  y = jnp.dot(x.reshape(-1, k), w.reshape(k, -1), preferred_element_type=preferred_element_type)
  return y.reshape(lead + out_shape)


class Projection(nn.Module):
  """x @ W (+ b) (+ LoRA: dropout(x) @ A @ B * scale) over named input/output dims.

  The projection's `lora` node (lora.py) may hold adapters `a`, `b`, a DoRA magnitude `m` [*out] (the output
  is rescaled column-wise to m / ||W + scale * A @ B||), and `quant`: the frozen base stored quantized
  (QLoRA, quant.py), which then replaces the `w` param and is dequantized here, inside the projection.
  """
  cfg: ModelConfig
  in_shape: tuple[int, ...]
  out_shape: tuple[int, ...]
  axes: tuple[str | None, ...]
  use_bias: bool = False
  deterministic: bool = True

  @nn.compact
  def __call__(self, x: Array, lora: LoraTree = None) -> Array:
    cfg, dtype = self.cfg, jnp.dtype(self.cfg.dtype)
    n_in = len(self.in_shape)
    lora = lora or {}
    shape = self.in_shape + self.out_shape
    if "quant" in lora:
      # Dequantized again, a row slice at a time, in the backward pass (frozen_matmul.py) rather than kept from
      # the forward: one projection's matrix alive at a time.
      base = lambda: quant.dequantize(lora["quant"], shape, dtype)
      y = frozen_matmul(x, lora["quant"], n_in, self.out_shape, dtype)
    else:
      w = self.param("w", _init(cfg, self.axes), shape, jnp.dtype(cfg.param_dtype))
      base = lambda: w
      if "a" in lora and w.dtype != dtype:  # LoRA's frozen base, upcast: as a quantized one, not kept upcast
        y = frozen_matmul(x, w, n_in, self.out_shape, dtype)
      else:
        y = matmul_2d(x.astype(dtype), w.astype(dtype), n_in)
    if "a" in lora:
      x_in = x
      if cfg.lora_dropout > 0 and not self.deterministic:
        x_in = nn.Dropout(cfg.lora_dropout, deterministic=False)(x)
      h_R = matmul_2d(x_in.astype(dtype), lora["a"].astype(dtype), n_in)
      y = y + matmul_2d(h_R, lora["b"].astype(dtype), 1) * cfg.lora_scale
    if "m" in lora:  # DoRA; the norm is a constant to the gradient, as in the paper's section 4.3 (and peft)
      norm = jax.lax.stop_gradient(lora_column_norm(base(), lora["a"], lora["b"], cfg.lora_scale, n_in))
      y = y * (lora["m"] / norm).astype(y.dtype)
    if self.use_bias:
      bias = self.param("b", nn.with_logical_partitioning(nn.initializers.zeros, self.axes[n_in:]),
                        self.out_shape, jnp.dtype(cfg.param_dtype))
      y = y + bias.astype(dtype)
    return y


def lora_column_norm(w: Array, a: Array, b: Array, scale: float, n_in: int) -> Array:
  """||W + scale * A @ B|| over the input dims, per output: [*out] f32 (DoRA's weight norm)."""
  merged = w.astype(jnp.float32) + scale * jnp.tensordot(a.astype(jnp.float32), b.astype(jnp.float32),
                                                         axes=([n_in], [0]))
  return jnp.sqrt(jnp.sum(merged * merged, axis=tuple(range(n_in))))


class Attention(nn.Module):
  cfg: ModelConfig
  deterministic: bool = True
  local: bool = False  # a sliding-window layer (its own RoPE base where the config gives one)

  @nn.compact
  def __call__(self, x_BLD: Array, positions_BL: Array, mask_BLS: Array, cache: dict | None,
               cache_index: Array | None, lora: LoraTree) -> tuple[Array, dict | None]:
    cfg = self.cfg
    d, h, k, dh = cfg.d_model, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
    lora = lora or {}

    def proj(name, in_shape, out_shape, axes, bias=False):
      return Projection(cfg, in_shape, out_shape, axes, bias, self.deterministic, name=name)

    q_BLHk = proj("q", (d,), (h, dh), ("embed", "heads", "head_dim"), cfg.attn_bias)(x_BLD, lora.get("q"))
    k_BLKk = proj("k", (d,), (k, dh), ("embed", "kv_heads", "head_dim"), cfg.attn_bias)(x_BLD, lora.get("k"))
    v_BLKk = proj("v", (d,), (k, dh), ("embed", "kv_heads", "head_dim"), cfg.attn_bias)(x_BLD, lora.get("v"))
    if cfg.qk_norm:
      q_BLHk = norm(cfg, "q_norm")(q_BLHk)
      k_BLKk = norm(cfg, "k_norm")(k_BLKk)
    inv_freq = rope_frequencies(cfg, self.local)
    q_BLHk = apply_rope(q_BLHk, positions_BL, inv_freq)
    k_BLKk = apply_rope(k_BLKk, positions_BL, inv_freq)

    k_BKkL, v_BKLk = k_BLKk.transpose(0, 2, 3, 1), v_BLKk.transpose(0, 2, 1, 3)
    if cache is None:
      k_BKkS, v_BKSk, new_cache = k_BKkL, v_BKLk, None
    else:  # write this chunk's keys/values at cache_index, attend over the buffer (or the blocks passed in)
      k_BKkS = write_slots(cache["k"], k_BKkL, cache_index, axis=3)
      v_BKSk = write_slots(cache["v"], v_BKLk, cache_index, axis=2)
      new_cache = {"k": k_BKkS, "v": v_BKSk}

    scale = cfg.query_pre_attn_scalar ** -0.5 if cfg.query_pre_attn_scalar > 0 else None
    if cfg.attention_impl != "xla" and cache is None:  # decoding stays on dot_attention (fused_attention.py)
      out_BLHk = fused_attention(q_BLHk, k_BLKk, v_BLKk, mask_BLS, scale, cfg.attention_impl)
    else:
      as_q = lambda x: jax.tree.map(lambda a: a.astype(q_BLHk.dtype), x)  # a buffer or a list of blocks
      out_BLHk = dot_attention(q_BLHk, as_q(k_BKkS), as_q(v_BKSk), mask_BLS, scale, cfg.attn_softcap)
    out_BLD = proj("o", (h, dh), (d,), ("heads", "head_dim", "embed"))(out_BLHk, lora.get("o"))
    return out_BLD, new_cache


class Mlp(nn.Module):
  cfg: ModelConfig
  deterministic: bool = True

  @nn.compact
  def __call__(self, x_BLD: Array, lora: LoraTree) -> Array:
    cfg, lora = self.cfg, lora or {}
    d, f = cfg.d_model, cfg.mlp_dim
    gate_BLF = Projection(cfg, (d,), (f,), ("embed", "mlp"), False, self.deterministic, name="gate")(
        x_BLD, lora.get("gate"))
    up_BLF = Projection(cfg, (d,), (f,), ("embed", "mlp"), False, self.deterministic, name="up")(
        x_BLD, lora.get("up"))
    act = nn.silu if cfg.mlp_act == "silu" else functools.partial(nn.gelu, approximate=True)
    return Projection(cfg, (f,), (d,), ("mlp", "embed"), False, self.deterministic, name="down")(
        act(gate_BLF) * up_BLF, lora.get("down"))


class Block(nn.Module):
  cfg: ModelConfig
  deterministic: bool = True
  local: bool = False

  @nn.compact
  def __call__(self, x_BLD, positions_BL, mask_BLS, cache, cache_index, lora):
    cfg, lora = self.cfg, lora or {}
    attn_BLD, new_cache = Attention(cfg, self.deterministic, self.local, name="attn")(
        norm(cfg, "attn_norm")(x_BLD), positions_BL, mask_BLS, cache, cache_index, lora.get("attn"))
    if cfg.post_norms:
      attn_BLD = norm(cfg, "post_attn_norm")(attn_BLD)
    x_BLD = x_BLD + attn_BLD
    mlp_BLD = Mlp(cfg, self.deterministic, name="mlp")(norm(cfg, "mlp_norm")(x_BLD), lora.get("mlp"))
    if cfg.post_norms:
      mlp_BLD = norm(cfg, "post_mlp_norm")(mlp_BLD)
    x_BLD = x_BLD + mlp_BLD
    return nn.with_logical_constraint(x_BLD, ("batch", "length", None)), new_cache


_REMAT_POLICIES = {
    "full": jax.checkpoint_policies.nothing_saveable,
    "dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


class Transformer(nn.Module):
  """tokens [B, L] -> f32 logits [B, L, V] (or final hidden states [B, L, D] with return_hidden)."""
  cfg: ModelConfig
  deterministic: bool = True

  def setup(self):
    cfg = self.cfg
    block = Block if cfg.remat == "none" else nn.remat(Block, policy=_REMAT_POLICIES[cfg.remat])
    # Under QLoRA with quantized tables (lora.py) the weights lack `embedding` / `lm_head`: the lora tree holds them.
    stored = lambda name: self.is_initializing() or self.has_variable("params", name)
    self.embedding = self.param("embedding", _init(cfg, ("vocab", "embed")), (cfg.vocab_size, cfg.d_model),
                                jnp.dtype(cfg.param_dtype)) if stored("embedding") else None
    self.layers = [block(cfg, self.deterministic, windowed(cfg, i), name=f"layers_{i}")
                   for i in range(cfg.n_layers)]
    self.final_norm = RMSNorm(cfg.norm_eps, jnp.dtype(cfg.param_dtype), cfg.norm_plus_one)
    if not cfg.tie_embeddings and stored("lm_head"):
      self.lm_head = self.param("lm_head", _init(cfg, ("embed", "vocab")), (cfg.d_model, cfg.vocab_size),
                                jnp.dtype(cfg.param_dtype))

  def __call__(self, tokens_BL: Array, positions_BL: Array | None = None, segment_ids_BL: Array | None = None,
               cache: dict | None = None, lora: LoraTree = None, return_hidden: bool = False,
               prefix_ids_BL: Array | None = None):
    """Without cache: returns logits (or hidden). With cache (from `init_cache`): the chunk is written at
    cache['index'] and (logits or hidden, new_cache) is returned.

    `prefix_ids_BL` (no cache only) packs branches behind a shared prefix: each token also sees the earlier
    tokens of the segment named there (`attention_mask`); data/branches.py builds such rows."""
    b, l = tokens_BL.shape
    if positions_BL is None:
      positions_BL = jnp.broadcast_to(jnp.arange(l, dtype=jnp.int32), (b, l))
    if segment_ids_BL is None:
      segment_ids_BL = jnp.ones((b, l), jnp.int32)
    lora = lora or {}
    window = self.cfg.sliding_window
    if cache is None:
      slots_L = jnp.arange(l, dtype=jnp.int32)
      mask_BLS = attention_mask(slots_L, slots_L, segment_ids_BL, segment_ids_BL, prefix_ids_BL)
      local_BLS = mask_BLS & (positions_BL[:, :, None] - positions_BL[:, None, :] < window) if window else None
      # ^ by RoPE position: right for packed rows and shared-prefix branches alike
      index = None
    else:
      if prefix_ids_BL is not None:
        raise ValueError("prefix_ids_BL: shared-prefix rows are a training layout; the KV cache does not take them")
      index = cache["index"]  # one write slot for every row, or [B] (a slot per row: speculative.py, serving)
      seg_BS = write_slots(cache["segment_ids"], segment_ids_BL.astype(jnp.int32), index, axis=1)
      q_slot_L = index[..., None] + jnp.arange(l, dtype=jnp.int32)

      def masks(seg_BS: Array, start: int) -> tuple[Array, Array | None]:
        k_slot_S = start + jnp.arange(seg_BS.shape[1], dtype=jnp.int32)
        mask_BLS = attention_mask(q_slot_L, k_slot_S, segment_ids_BL, seg_BS)
        # by slot: a row's tokens sit in consecutive slots (sampling.py), so slot gaps are position gaps
        return mask_BLS, mask_BLS & (q_slot_L[..., None] - k_slot_S < window) if window else None

      if is_block_cache(cache):  # a mask per block
        mask_BLS, local_BLS = (list(m) for m in zip(*map(masks, seg_BS, block_starts(seg_BS, axis=1))))
      else:
        mask_BLS, local_BLS = masks(seg_BS, 0)

    x_BLD = self.embed(tokens_BL, lora)
    if self.cfg.embed_scale:  # Gemma: sqrt(D) rounded to the compute dtype first, as transformers does
      x_BLD = x_BLD * jnp.asarray(self.cfg.d_model ** 0.5, x_BLD.dtype)
    x_BLD = nn.with_logical_constraint(x_BLD, ("batch", "length", None))
    new_layers = []
    for i, layer in enumerate(self.layers):
      x_BLD, layer_cache = layer(x_BLD, positions_BL, local_BLS if windowed(self.cfg, i) else mask_BLS,
                                 None if cache is None else cache["layers"][i],
                                 index, lora.get(f"layers_{i}"))
      new_layers.append(layer_cache)
    hidden_BLD = self.final_norm(x_BLD)
    out = hidden_BLD if return_hidden else self.head(hidden_BLD, lora)
    if cache is None:
      return out
    return out, {"layers": new_layers, "segment_ids": seg_BS, "index": index + l}

  def embed(self, tokens_BL: Array, lora: LoraTree = None) -> Array:
    """Token embeddings [B, L, D] in the compute dtype; from a quantized table only the gathered rows are
    dequantized."""
    dtype = jnp.dtype(self.cfg.dtype)
    q = ((lora or {}).get("embedding") or {}).get("quant")
    if q is not None:
      return quant.take_columns(q, tokens_BL.reshape(-1), dtype).T.reshape(tokens_BL.shape + (-1,))
    return jnp.take(self.embedding, tokens_BL, axis=0).astype(dtype)

  def head_matrix(self) -> Array:
    """The output head's [D, V] weights in the compute dtype (the embedding's transpose when tied)."""
    w_DV = self.embedding.T if self.cfg.tie_embeddings else self.lm_head
    return w_DV.astype(jnp.dtype(self.cfg.dtype))

  def head(self, hidden_BLD: Array, lora: LoraTree = None) -> Array:
    """Final hidden states -> f32 logits [B, L, V]. A frozen head that must be converted first (quantized, or
    LoRA's in another dtype than the compute) goes through frozen_matmul.py: a slice at a time, never whole."""
    dtype = jnp.dtype(self.cfg.dtype)
    frozen_DV = quantized_head(self.cfg, lora)
    if frozen_DV is None and lora and not self.cfg.tie_embeddings and self.lm_head.dtype != dtype:
      frozen_DV = self.lm_head
    if frozen_DV is not None:
      logits_BLV = frozen_matmul(hidden_BLD, frozen_DV, 1, (self.cfg.vocab_size,), dtype, jnp.float32)
    else:
      logits_BLV = matmul_2d(hidden_BLD.astype(dtype), self.head_matrix(), 1, preferred_element_type=jnp.float32)
    return softcap(logits_BLV, self.cfg.final_softcap)


def quantized_head(cfg: ModelConfig, lora: LoraTree) -> dict | None:
  """The output head's quantized [D, V] dict from the lora tree (the embedding's when tied), or None."""
  node = (lora or {}).get("embedding" if cfg.tie_embeddings else "lm_head") or {}
  return node.get("quant")


def write_slots(buffer: Array | list, chunk: Array, index: Array, axis: int) -> Array | list:
  """`chunk` written into `buffer` (both batch-major) at slot `index` along `axis`: one slot for all rows (a
  scalar: one dynamic_update_slice) or one per row ([B]: a vmapped one, i.e. a scatter); into a block cache's
  list of blocks (block_cache.py) one token per row. Cast to the buffer's dtype."""
  if isinstance(buffer, (list, tuple)):
    return write_blocks(buffer, chunk.astype(buffer[0].dtype), index, axis)
  chunk = chunk.astype(buffer.dtype)
  def write(buf, new, i):
    return jax.lax.dynamic_update_slice_in_dim(buf, new, i, axis - (buf.ndim != buffer.ndim))
  return write(buffer, chunk, index) if jnp.ndim(index) == 0 else jax.vmap(write)(buffer, chunk, index)


def init_cache(cfg: ModelConfig, batch: int, length: int, dtype: Any = None) -> dict:
  """An empty KV cache: per layer keys [B, K, Dh, S] and values [B, K, S, Dh] (only kv heads are cached; keys
  transposed, see dot_attention), slot segment ids, write index."""
  dtype = jnp.dtype(dtype or cfg.dtype)
  k_shape, v_shape = (batch, cfg.n_kv_heads, cfg.head_dim, length), (batch, cfg.n_kv_heads, length, cfg.head_dim)
  return {
      "layers": [{"k": jnp.zeros(k_shape, dtype), "v": jnp.zeros(v_shape, dtype)} for _ in range(cfg.n_layers)],
      "segment_ids": jnp.zeros((batch, length), jnp.int32),
      "index": jnp.zeros((), jnp.int32),
  }


def count_params(params) -> int:
  return sum(x.size for x in jax.tree.leaves(params))
