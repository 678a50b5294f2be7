"""x @ W for a frozen base matrix that must be converted before the product: quantized (QLoRA, quant.py) or stored
in another dtype than the compute (a bf16 base under f32 compute). The forward pass converts W's columns, the
backward pass its rows, a slice at a time; nothing converted is kept from one pass to the other.

Why a custom VJP and not jax.checkpoint: differentiating dot(x, convert(W)) keeps convert(W), a compute-dtype
copy of the matrix, alive from the forward pass until dx = dy @ W^T, for every layer at once. jax.checkpoint asks
for the conversion to be recomputed and puts an optimization barrier on the recomputation's inputs so that XLA does
not merge it with the forward's; XLA:CPU drops those barriers before its common-subexpression elimination, merges
the two conversions, and the copy lives across the step again (at d_model 1024 x 12 layers: ~540 MiB of f32
projections in XLA's temporaries, benchmarks/memory.py --size=full, docs/memory.md). Here the backward pass
converts W inside a loop over row slices that reads dy, and the forward pass inside a loop over column slices that
reads x: nothing of the forward's conversion is reused, no conversion can be scheduled before its layer's input or
gradient exists (XLA:CPU's scheduler ran every layer's at the start of the step when it could), and one slice is
alive at a time.
"""
from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp

from jaxllm import quant


def frozen_matmul(x: jax.Array, base, n_in: int, out_shape: tuple[int, ...], dtype,
                  out_dtype=None) -> jax.Array:
  """x [..., *in] @ base -> [..., *out] in `out_dtype` (default `dtype`, the product's operand dtype; n_in =
  len(in)); `base` a quantized dict of the [k, n] matrix or a weight [*in, *out] in any float dtype. Numerically
  matmul_2d(x, W.astype(dtype)), its input gradient too; a float base gets its gradient as well (x^T dy in its own
  dtype), for callers that train it."""
  lead, in_shape = x.shape[:x.ndim - n_in], x.shape[x.ndim - n_in:]
  k = math.prod(in_shape)
  base_kn = base if quant.is_quantized(base) else base.reshape(k, -1)
  y_Tn = _product(x.reshape(-1, k), base_kn, jnp.dtype(dtype), jnp.dtype(out_dtype or dtype))
  return y_Tn.reshape(lead + tuple(out_shape))


def _columns(base_kn, i, size: int, dtype) -> jax.Array:
  """Column slice i (of `size` columns) of the matrix, converted to `dtype`."""
  if quant.is_quantized(base_kn):
    return quant.slice_columns(base_kn, i * size, size, dtype)
  return _float_slice(base_kn, i, size, 1).astype(dtype)


def _rows(base_kn, i, size: int, dtype) -> jax.Array:
  """Row slice i (of `size` rows) of the matrix, converted to `dtype`."""
  if quant.is_quantized(base_kn):
    return quant.slice_rows(base_kn, i * size, size, dtype)
  return _float_slice(base_kn, i, size, 0).astype(dtype)


def _float_slice(w: jax.Array, i, size: int, axis: int) -> jax.Array:
  """Slice i of a float matrix, as a switch over static slices rather than one dynamic_slice: XLA:CPU has no
  bf16 dynamic-slice and rewrites one as a slice of the whole matrix converted to f32, a loop-invariant
  conversion that it then hoists out of the loop and shares between the passes (slicing the matrix's uint16 view
  instead makes XLA:CPU copy the whole view out of the loop the same way)."""
  slices = [functools.partial(jax.lax.slice_in_dim, start_index=p * size, limit_index=(p + 1) * size, axis=axis)
            for p in range(w.shape[axis] // size)]
  return jax.lax.switch(i, slices, w)


SLICE_ELEMENTS = 1 << 22  # the most elements of W converted at once (16 MiB in f32: a [1024, 4096] head slice)


def _parts(units: int, other: int) -> int:
  """The fewest parts >= 2 that cut `units` evenly, each part's units x `other` elements within SLICE_ELEMENTS
  (1 for a single unit). Two, not one: XLA removes a one-trip loop, and with it the dependence on x or dy that
  keeps the conversion from being scheduled early or shared between the passes."""
  fits = [p for p in range(2, units + 1) if units % p == 0]
  return next((p for p in fits if (units // p) * other <= SLICE_ELEMENTS), fits[-1] if fits else 1)


def _shape(base_kn) -> tuple[int, int]:
  return quant.shape_2d(base_kn) if quant.is_quantized(base_kn) else base_kn.shape


def row_parts(base_kn) -> int:
  """Row slices the backward pass converts one after the other: whole quantization blocks."""
  k, n = _shape(base_kn)
  if quant.is_quantized(base_kn):
    block = quant.block_rows(base_kn)
    return _parts(k // block, block * n)
  return _parts(k, n)


def column_parts(base_kn) -> int:
  """Column slices the forward pass converts one after the other (NF4: whole bytes, two columns each)."""
  k, n = _shape(base_kn)
  pair = 2 if quant.is_quantized(base_kn) and "nf4" in base_kn else 1
  return _parts(n // pair, pair * k)


def _sliced(parts: int, like: jax.ShapeDtypeStruct, product) -> jax.Array:
  """product(i) [T, size] for slices i = 0 .. parts - 1 in a loop, joined along columns into `like`."""
  out_PTs = jax.lax.map(lambda i: product(i).astype(like.dtype), jnp.arange(parts, dtype=jnp.int32))
  return jnp.moveaxis(out_PTs, 0, 1).reshape(like.shape)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _product(x_Tk: jax.Array, base_kn, dtype, out_dtype) -> jax.Array:
  """Column slices in a loop that reads x; each output column is still one full dot over k."""
  x_Tk = x_Tk.astype(dtype)
  n = _shape(base_kn)[1]
  parts = column_parts(base_kn)
  return _sliced(parts, jax.ShapeDtypeStruct((x_Tk.shape[0], n), out_dtype),
                 lambda i: jnp.dot(x_Tk, _columns(base_kn, i, n // parts, dtype), preferred_element_type=out_dtype))


def _product_fwd(x_Tk, base_kn, dtype, out_dtype):
  return _product(x_Tk, base_kn, dtype, out_dtype), (x_Tk, base_kn)


def _product_bwd(dtype, out_dtype, residuals, dy_Tn):
  x_Tk, base_kn = residuals
  dy_Tn = dy_Tn.astype(dtype)
  k = x_Tk.shape[1]
  parts = row_parts(base_kn)
  contract_n = (((1,), (1,)), ((), ()))  # dy [T, n] . rows [size, n] -> [T, size]
  dx_Tk = _sliced(parts, jax.ShapeDtypeStruct(x_Tk.shape, x_Tk.dtype),
                  lambda i: jax.lax.dot_general(dy_Tn, _rows(base_kn, i, k // parts, dtype), contract_n,
                                                preferred_element_type=jnp.float32))
  if quant.is_quantized(base_kn):
    return dx_Tk, None  # integer codes: no gradient
  return dx_Tk, jnp.dot(x_Tk.astype(dtype).T, dy_Tn, preferred_element_type=jnp.float32).astype(base_kn.dtype)


_product.defvjp(_product_fwd, _product_bwd)
