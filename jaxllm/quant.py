"""Block-wise weight quantization for QLoRA's frozen base: NF4 (4-bit NormalFloat) and int8, both absmax-scaled.

A projection weight [*in, *out] is viewed as a [k, n] matrix (k = prod(in), n = prod(out)); each block of
`block` consecutive input rows of one output column shares one absmax scale, as bitsandbytes' blocks of 64
consecutive inputs of one output row. A quantized weight is a plain dict pytree (so it shards, checkpoints and
jits like any other leaf tree):

  {"nf4": uint8 [k, n/2] (two 4-bit codes a byte, adjacent outputs), "absmax": scales}
  {"int8": int8 [k, n], "absmax": scales}
  scales = f32 [k/block, n], or double-quantized (QLoRA's "DQ"): {"q": int8 [k/block, n] of (absmax - offset),
           "scale": f32 [k/block, n/group] (absmax of each group of outputs), "offset": f32 []}

Storage per weight: NF4 0.5 byte + scales (4/64 B, or 1/64 + 4/(64*256) B with DQ), int8 1 byte + scales.
`dequantize` rebuilds the matrix in the compute dtype; inside the model the projections multiply through
frozen_matmul.py, which dequantizes `slice_columns` / `slice_rows` slices one at a time in the forward and the
backward pass instead of keeping every layer's dequantized matrix alive until the gradient reaches it.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

KINDS = ("none", "int8", "nf4")
# The 16 NF4 levels of QLoRA (Dettmers et al. 2023, appendix E): quantiles of N(0, 1) scaled to [-1, 1], with
# an exact zero.
NF4_LEVELS = np.array([
    -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635,
    -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725,
    0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941, 0.7229568362236023,
    1.0], np.float32)
# Midpoints between neighbouring levels: a value's code is how many midpoints lie below it (nearest level).
_NF4_BOUNDS = (NF4_LEVELS[1:] + NF4_LEVELS[:-1]) / 2
DQ_GROUP = 256  # outputs sharing one second-level scale under double quantization


def is_quantized(node) -> bool:
  return isinstance(node, dict) and ("nf4" in node or "int8" in node)


def _blocks(k: int, block: int) -> int:
  if block <= 0 or k % block:
    raise ValueError(f"config.lora.quant_block: {block} does not divide a projection's input size {k}")
  return k // block


def _quantize_scales(absmax_Nn: jax.Array) -> dict:
  """Double quantization: the f32 scales as int8 around their mean, one f32 scale per group of outputs."""
  nb, n = absmax_Nn.shape
  group = DQ_GROUP if n % DQ_GROUP == 0 else n
  offset = absmax_Nn.mean()
  centred = (absmax_Nn - offset).reshape(nb, n // group, group)
  scale = jnp.maximum(jnp.abs(centred).max(axis=-1), 1e-30) / 127.0
  q = jnp.clip(jnp.round(centred / scale[..., None]), -127, 127).astype(jnp.int8)
  return {"q": q.reshape(nb, n), "scale": scale, "offset": offset}


def _dequantize_scales(scales) -> jax.Array:
  if not isinstance(scales, dict):
    return scales
  q, scale = scales["q"], scales["scale"]
  nb, n = q.shape
  group = n // scale.shape[1]
  centred = q.reshape(nb, n // group, group).astype(jnp.float32) * scale[..., None]
  return centred.reshape(nb, n) + scales["offset"]


def quantize(w: jax.Array, kind: str, n_in: int, block: int = 64, double_quant: bool = True) -> dict:
  """w [*in, *out] (n_in input dims) -> its quantized dict (module docstring)."""
  k, n = math.prod(w.shape[:n_in]), math.prod(w.shape[n_in:])
  nb = _blocks(k, block)
  w_NBn = w.reshape(nb, block, n).astype(jnp.float32)
  absmax_Nn = jnp.abs(w_NBn).max(axis=1)
  normed_NBn = w_NBn / jnp.where(absmax_Nn > 0, absmax_Nn, 1.0)[:, None, :]
  if kind == "nf4":
    if n % 2:
      raise ValueError(f"lora.quantize=nf4: a projection's output size {n} is odd (codes are packed in pairs)")
    codes_kn = jnp.searchsorted(jnp.asarray(_NF4_BOUNDS), normed_NBn.reshape(k, n)).astype(jnp.uint8)
    out = {"nf4": codes_kn[:, 0::2] | (codes_kn[:, 1::2] << 4)}
  elif kind == "int8":
    out = {"int8": jnp.round(normed_NBn * 127.0).astype(jnp.int8).reshape(k, n)}
  else:
    raise ValueError(f"config.lora.quantize: {kind!r} is not one of {KINDS}")
  # With double quantization the scales dequantize slightly off their absmax; the codes were chosen against
  # the exact absmax, as in QLoRA, so a code's error is the level error plus the scale's.
  out["absmax"] = _quantize_scales(absmax_Nn) if double_quant else absmax_Nn
  return out


def dequantize(q: dict, shape: tuple[int, ...], dtype=jnp.float32) -> jax.Array:
  """The quantized dict back to a [*shape] array in `dtype` (one fused elementwise pass over the codes)."""
  absmax_Nn = _dequantize_scales(q["absmax"])
  if "nf4" in q:
    packed = q["nf4"]
    codes_kn = jnp.stack([packed & 0xF, packed >> 4], axis=-1).reshape(packed.shape[0], absmax_Nn.shape[1])
    values_kn = jnp.take(jnp.asarray(NF4_LEVELS), codes_kn.astype(jnp.int32), axis=0)
  else:
    values_kn = q["int8"].astype(jnp.float32) / 127.0
  return _scaled(values_kn, absmax_Nn).reshape(shape).astype(dtype)


def _scaled(values_kC: jax.Array, absmax_NC: jax.Array) -> jax.Array:
  """Unit-range values [k, C] times their blocks' absmax [k/block, C]."""
  (k, c), nb = values_kC.shape, absmax_NC.shape[0]
  return (values_kC.reshape(nb, k // nb, c) * absmax_NC[:, None, :]).reshape(k, c)


def _scales(q: dict) -> jax.Array:
  """The block scales [k/block, n] (their int8 codes when double-quantized)."""
  return q["absmax"]["q"] if isinstance(q["absmax"], dict) else q["absmax"]


def shape_2d(q: dict) -> tuple[int, int]:
  """(k, n) of the [k, n] matrix a quantized dict holds."""
  return (q["nf4"] if "nf4" in q else q["int8"]).shape[0], _scales(q).shape[1]


def block_rows(q: dict) -> int:
  """Input rows per quantization block."""
  return shape_2d(q)[0] // _scales(q).shape[0]


def _column_scales(scales, cols: jax.Array) -> jax.Array:
  """The dequantized block scales [k/block, C] of columns `cols` [C] only."""
  if not isinstance(scales, dict):
    return jnp.take(scales, cols, axis=1)
  group = scales["q"].shape[1] // scales["scale"].shape[1]
  return (jnp.take(scales["q"], cols, axis=1).astype(jnp.float32) * jnp.take(scales["scale"], cols // group, axis=1)
          + scales["offset"])


def take_columns(q: dict, cols: jax.Array, dtype=jnp.float32) -> jax.Array:
  """Columns `cols` [C] (any order, repeats allowed) of the quantized [k, n] matrix, dequantized: [k, C]. Only
  those columns' codes and scales are read (an embedding lookup dequantizes just the gathered tokens)."""
  cols = cols.astype(jnp.int32)
  if "nf4" in q:
    bytes_kC = jnp.take(q["nf4"], cols // 2, axis=1)
    codes_kC = (bytes_kC >> (4 * (cols % 2)).astype(jnp.uint8)[None, :]) & 0xF
    values_kC = jnp.take(jnp.asarray(NF4_LEVELS), codes_kC.astype(jnp.int32), axis=0)
  else:
    values_kC = jnp.take(q["int8"], cols, axis=1).astype(jnp.float32) / 127.0
  return _scaled(values_kC, _column_scales(q["absmax"], cols)).astype(dtype)


def slice_columns(q: dict, start, size: int, dtype=jnp.float32) -> jax.Array:
  """Columns [start, start + size) of the quantized [k, n] matrix, dequantized: [k, size] (`start` may be traced;
  NF4 needs it and `size` even, as two adjacent columns share a byte)."""
  cols = start + jnp.arange(size, dtype=jnp.int32)
  if "nf4" in q:
    if size % 2:
      raise ValueError(f"quant.slice_columns: an NF4 slice of {size} columns is odd (codes are packed in pairs)")
    packed = jax.lax.dynamic_slice_in_dim(q["nf4"], start // 2, size // 2, axis=1)
    codes_kC = jnp.stack([packed & 0xF, packed >> 4], axis=-1).reshape(packed.shape[0], size)
    values_kC = jnp.take(jnp.asarray(NF4_LEVELS), codes_kC.astype(jnp.int32), axis=0)
  else:
    values_kC = jax.lax.dynamic_slice_in_dim(q["int8"], start, size, axis=1).astype(jnp.float32) / 127.0
  return _scaled(values_kC, _column_scales(q["absmax"], cols)).astype(dtype)


def slice_rows(q: dict, start, size: int, dtype=jnp.float32) -> jax.Array:
  """Rows [start, start + size) of the quantized [k, n] matrix, dequantized: [size, n] (`start` may be traced;
  both must be multiples of the block, whose scales are sliced with the codes)."""
  block = block_rows(q)
  if size % block:
    raise ValueError(f"quant.slice_rows: {size} rows are not whole blocks of {block}")
  rows = lambda x, first, n: jax.lax.dynamic_slice_in_dim(x, first, n, axis=0) if x.ndim == 2 else x
  part = {name: rows(codes, start, size) for name, codes in q.items() if name != "absmax"}
  part["absmax"] = jax.tree.map(lambda x: rows(x, start // block, size // block), q["absmax"])
  return dequantize(part, (size, shape_2d(q)[1]), dtype)


def nbytes(tree) -> int:
  return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(tree))
