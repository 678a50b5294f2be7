"""LoRA adapters: build the adapter tree for chosen projections, and merge it back into the base weights.

The adapter tree mirrors the base params down to each targeted projection: `{..., "q": {"a": [in.., R],
"b": [R, out..]}}`. The model adds `x @ a @ b * alpha/rank` (model.Projection); the base weights stay in
`state.frozen` and get no optimizer state. `b` starts at zero so a fresh adapter changes nothing.

Variants: DoRA (`lora.dora`) adds a trainable magnitude `m` [out..] per projection, initialised to the base's
column norms; QLoRA (`lora.quantize`) stores the targeted base weights quantized (quant.py) in
`frozen["quant"]`, a tree of the same shape as the adapters', with their `w` taken out of `frozen["model"]`;
`with_base` joins the two into the one tree the model reads. With `lora.quantize_embeddings` the token embedding
and the output head are quantized too, into `frozen["quant"]["embedding" | "lm_head"]["quant"]`, both in the
head's [D, V] layout (the embedding transposed: blocks of `quant_block` along D, so each token has its own
scales, and one quantized table serves a tied head as well). LoRA+ (`lora.plus_ratio`) lives in the optimizer
(state.py); rsLoRA (`lora.rslora`) in the scale (model.lora_scale).
"""
from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from jaxllm import quant
from jaxllm.model import lora_column_norm

# Number of leading (input) dims of each projection's weight `w`; the rest are output dims.
INPUT_DIMS = {"q": 1, "k": 1, "v": 1, "o": 2, "gate": 1, "up": 1, "down": 1}
# The vocabulary tables (top-level params) quantized under lora.quantize_embeddings.
TABLES = ("embedding", "lm_head")


def parse_targets(targets: str) -> tuple[str, ...]:
  names = tuple(t.strip() for t in targets.split(",") if t.strip())
  unknown = [t for t in names if t not in INPUT_DIMS]
  if unknown or not names:
    raise ValueError(f"config.lora.targets: unknown projection(s) {unknown or targets!r}; "
                     f"choose from {sorted(INPUT_DIMS)}")
  return names


def _walk(tree: dict, fn, path=()):
  """Apply fn(path, projection_params) to every targeted projection dict ({'w': ...}); rebuild the tree."""
  out = {}
  for key, sub in tree.items():
    if isinstance(sub, dict) and "w" in sub and key in INPUT_DIMS:
      res = fn(path + (key,), sub)
      if res is not None:
        out[key] = res
    elif isinstance(sub, dict):
      child = _walk(sub, fn, path + (key,))
      if child:
        out[key] = child
  return out


def init_lora(base: dict, targets: tuple[str, ...], rank: int, rng: jax.Array) -> dict:
  """Adapters for every projection named in targets: a ~ N(0, 1/fan_in), b = 0 (f32)."""
  counter = iter(range(1 << 30))

  def make(path, proj):
    if path[-1] not in targets:
      return None
    w = proj["w"]
    n_in = INPUT_DIMS[path[-1]]
    in_shape, out_shape = w.shape[:n_in], w.shape[n_in:]
    fan_in = 1
    for s in in_shape:
      fan_in *= s
    key = jax.random.fold_in(rng, next(counter))
    a = jax.random.normal(key, in_shape + (rank,), jnp.float32) / jnp.sqrt(fan_in)
    return {"a": a, "b": jnp.zeros((rank,) + out_shape, jnp.float32)}

  return _walk(base, make)


def init_magnitudes(weights: dict, shapes: dict, targets: tuple[str, ...]) -> dict:
  """DoRA magnitudes {"m": [out..]}: each targeted projection's column norms (of the dequantized base when its
  `w` is quantized; `shapes` mirrors the weights with full-precision shapes), so a fresh DoRA adapter (b = 0)
  reproduces the base exactly."""

  def norms(path, proj):
    if path[-1] not in targets:
      return None
    w = proj["w"]
    if quant.is_quantized(w):
      w = quant.dequantize(w, _lookup(shapes, path)["w"].shape, jnp.float32)
    w32 = w.astype(jnp.float32)
    return {"m": jnp.sqrt(jnp.sum(w32 * w32, axis=tuple(range(INPUT_DIMS[path[-1]]))))}

  return _walk(weights, norms)


def _lookup(tree: dict, path: tuple) -> dict:
  for key in path:
    tree = tree[key]
  return tree


def quantizes_tables(lora: ml_collections.ConfigDict) -> bool:
  """Whether a run quantizes the embedding and output head (a run from before the key existed did not)."""
  return lora.get("quantize", "none") != "none" and bool(lora.get("quantize_embeddings", False))


def quantize_table(w: jax.Array, name: str, lora: ml_collections.ConfigDict) -> dict:
  """The embedding [V, D] or output head [D, V] quantized in the [D, V] layout (module docstring)."""
  return quant.quantize(w.T if name == "embedding" else w, lora.quantize, 1, lora.quant_block, lora.double_quant)


def dequantize_table(q: dict, name: str, dtype=jnp.float32) -> jax.Array:
  """`quantize_table`'s inverse, in the table's own layout."""
  w_DV = quant.dequantize(q, quant.shape_2d(q), dtype)
  return w_DV.T if name == "embedding" else w_DV


def quantize_leaf(w: jax.Array, name: str, lora: ml_collections.ConfigDict) -> dict:
  """One targeted projection's weight (named by its projection) quantized as `lora.*` asks."""
  return quant.quantize(w, lora.quantize, INPUT_DIMS[name], lora.quant_block, lora.double_quant)


# One jitted quantizer for all tensors: compiled once per weight shape, not once per tensor.
_quantize_jit = jax.jit(quant.quantize, static_argnums=(1, 2, 3, 4))
_quantize_transposed_jit = jax.jit(lambda w, *static: quant.quantize(w.T, *static), static_argnums=(1, 2, 3, 4))


def _quantize_placed(w: jax.Array, name: str, lora: ml_collections.ConfigDict, shardings=None) -> dict:
  static = (lora.quantize, INPUT_DIMS.get(name, 1), lora.quant_block, lora.double_quant)
  q = (_quantize_transposed_jit if name == "embedding" else _quantize_jit)(w, *static)
  return q if shardings is None else jax.device_put(q, shardings)


def quantize_weights(weights: dict, lora: ml_collections.ConfigDict, convert=None) -> dict:
  """The weights tree with every targeted projection's `w` replaced by its quantized dict, one tensor at a
  time (each full-precision matrix is released once its quantized copy exists); `convert` as
  `tensor_quantizer` makes it (default: unsharded)."""
  targets = parse_targets(lora.targets)
  convert = convert or tensor_quantizer(lora)

  def one(path, proj):
    if path[-1] not in targets or quant.is_quantized(proj["w"]):
      return proj
    return {**proj, "w": convert(path + ("w",), proj["w"])}

  out = _rebuild(weights, one)
  for name in TABLES:
    if name in out and not quant.is_quantized(out[name]):
      out[name] = convert((name,), out[name])
  return out


def tensor_quantizer(lora: ml_collections.ConfigDict, weight_shardings: dict | None = None,
                     mesh: jax.sharding.Mesh | None = None):
  """convert(path, array) for loaders reading a checkpoint tensor by tensor: a targeted projection's `w` (and,
  with lora.quantize_embeddings, the embedding and output head) comes back quantized (in shardings derived from
  the weight's), anything else unchanged; the full-precision tensor is garbage once converted, so at most one is
  alive beside the quantized model."""
  targets = parse_targets(lora.targets)
  tables = quantizes_tables(lora)

  def convert(path: tuple[str, ...], x: jax.Array):
    if tables and path in (("embedding",), ("lm_head",)):
      name, quantize = path[0], lambda w: quantize_table(w, path[0], lora)
    elif len(path) >= 2 and path[-1] == "w" and path[-2] in targets:
      name, quantize = path[-2], lambda w: quantize_leaf(w, path[-2], lora)
    else:
      return x
    if weight_shardings is None:
      return _quantize_placed(x, name, lora)
    abstract = jax.eval_shape(quantize, x)
    return _quantize_placed(x, name, lora, quant_shardings(name, _lookup(weight_shardings, path), abstract, mesh))

  return convert


def _rebuild(tree: dict, fn, path=()) -> dict:
  """Like _walk, but keeps every node: fn(path, projection) replaces each projection dict."""
  out = {}
  for key, sub in tree.items():
    if isinstance(sub, dict) and "w" in sub and key in INPUT_DIMS:
      out[key] = fn(path + (key,), sub)
    elif isinstance(sub, dict):
      out[key] = _rebuild(sub, fn, path + (key,))
    else:
      out[key] = sub
  return out


def split_quantized(weights: dict) -> tuple[dict, dict]:
  """(weights without the quantized `w`s and tables, tree of {"quant": quantized dict} per quantized projection
  or table)."""
  quantized = _walk(weights, lambda path, proj: {"quant": proj["w"]} if quant.is_quantized(proj["w"]) else None)
  rest = _rebuild(weights, lambda path, proj: {k: v for k, v in proj.items()
                                                if not (k == "w" and quant.is_quantized(v))})
  for name in TABLES:
    if quant.is_quantized(rest.get(name)):
      quantized[name] = {"quant": rest.pop(name)}
  return rest, quantized


def with_base(adapters: dict | None, quantized: dict | None) -> dict | None:
  """The tree the model reads: each projection's adapters joined with its quantized base (either may be absent)."""
  if not quantized:
    return adapters
  if not adapters:
    return quantized
  out = dict(adapters)
  for key, sub in quantized.items():
    out[key] = {**sub, **adapters.get(key, {})} if "quant" in sub else with_base(adapters.get(key, {}), sub)
  return out


def merge(base: dict, lora: dict, scale: float, quantize: ml_collections.ConfigDict | None = None) -> dict:
  """Base weights with the adapters folded in: w + scale * a @ b (DoRA: m / ||w + scale * a @ b|| times that), in
  the base dtype. With `quantize` (a QLoRA run's config.lora) the adapted projections' base, and the embedding
  and output head when that run quantized them, are first quantized and dequantized as in training, so the
  merged model is the one the adapters were trained against."""

  def fold(node_base, node_lora, path=()):
    out = dict(node_base)
    for key, sub in node_lora.items():
      if "a" in sub and "b" in sub:
        w = node_base[key]["w"]
        n_in = sub["a"].ndim - 1
        w32 = w.astype(jnp.float32)
        if quantize is not None and quantize.get("quantize", "none") != "none":
          w32 = quant.dequantize(quantize_leaf(w32, key, quantize), w.shape, jnp.float32)
        delta = jnp.tensordot(sub["a"].astype(jnp.float32), sub["b"].astype(jnp.float32), axes=([n_in], [0]))
        merged = w32 + scale * delta
        if "m" in sub:
          merged = merged * (sub["m"] / lora_column_norm(w32, sub["a"], sub["b"], scale, n_in))
        out[key] = {**node_base[key], "w": merged.astype(w.dtype)}
      else:
        out[key] = fold(node_base[key], sub)
    return out

  merged = fold(base, lora)
  if quantize is not None and quantizes_tables(quantize):
    for name in TABLES:
      if name in merged:
        w = merged[name]
        merged[name] = dequantize_table(quantize_table(w.astype(jnp.float32), name, quantize), name).astype(w.dtype)
  return merged


def init_lora_state(weights: dict, weight_sh: dict, abstract: dict, lora: ml_collections.ConfigDict,
                    rng: jax.Array, mesh: jax.sharding.Mesh) -> tuple[dict, dict, dict]:
  """(params, frozen, frozen shardings) of a LoRA run: adapters (+ DoRA magnitudes) replicated; the base in
  its shardings, its targeted projections quantized into frozen["quant"] under QLoRA."""
  targets = parse_targets(lora.targets)
  shapes = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), nn.meta.unbox(abstract))
  repl = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  if lora.quantize != "none":
    weights = quantize_weights(weights, lora, tensor_quantizer(lora, weight_sh, mesh))
  adapters = jax.jit(lambda k: init_lora(shapes, targets, lora.rank, k), out_shardings=repl)(rng)
  if lora.dora:
    magnitudes = jax.jit(lambda w: init_magnitudes(w, shapes, targets), out_shardings=repl)(weights)
    adapters = jax.tree.map(lambda ab, m: {**ab, **m}, adapters, magnitudes, is_leaf=lambda x: isinstance(x, dict) and "a" in x)
  rest, quantized = split_quantized(weights)
  frozen, frozen_sh = {"model": rest}, {"model": _matching(weight_sh, rest)}
  if quantized:
    frozen["quant"] = quantized
    frozen_sh["quant"] = jax.tree.map(lambda x: x.sharding, quantized)
  return {"lora": adapters}, frozen, frozen_sh


def _matching(shardings: dict, tree: dict) -> dict:
  """The part of a shardings tree whose keys `tree` has."""
  return {k: _matching(shardings[k], v) if isinstance(v, dict) else shardings[k] for k, v in tree.items()}


def quant_shardings(name: str, w_sharding, abstract_q: dict, mesh: jax.sharding.Mesh):
  """Shardings of one quantized weight: its [k, n]-shaped arrays split along k and n as the weight's first input
  and first output dims are (when they divide; the embedding's are its second and first), everything else
  replicated."""
  spec = tuple(w_sharding.spec) + (None,) * 8
  in_axis, out_axis = (spec[1], spec[0]) if name == "embedding" else (spec[0], spec[INPUT_DIMS.get(name, 1)])

  def size(axis):
    if axis is None:
      return 1
    names = axis if isinstance(axis, tuple) else (axis,)
    return math.prod(mesh.shape[a] for a in names)

  def place(x):
    if x.ndim != 2:
      return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    rows = in_axis if x.shape[0] % size(in_axis) == 0 else None
    cols = out_axis if x.shape[1] % size(out_axis) == 0 else None
    return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(rows, cols))

  return jax.tree.map(place, abstract_q)
