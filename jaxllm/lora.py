"""LoRA adapters: build the adapter tree for chosen projections, and merge it back into the base weights.

The adapter tree mirrors the base params down to each targeted projection: `{..., "q": {"a": [in.., R],
"b": [R, out..]}}`. The model adds `x @ a @ b * alpha/rank` (model.Projection); the base weights stay in
`state.frozen` and get no optimizer state. `b` starts at zero so a fresh adapter changes nothing.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

# Number of leading (input) dims of each projection's weight `w`; the rest are output dims.
INPUT_DIMS = {"q": 1, "k": 1, "v": 1, "o": 2, "gate": 1, "up": 1, "down": 1}


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


def merge(base: dict, lora: dict, scale: float) -> dict:
  """Base weights with the adapters folded in: w + scale * a @ b, in the base dtype."""

  def fold(node_base, node_lora):
    out = dict(node_base)
    for key, sub in node_lora.items():
      if "a" in sub and "b" in sub:
        w = node_base[key]["w"]
        n_in = sub["a"].ndim - 1
        delta = jnp.tensordot(sub["a"].astype(jnp.float32), sub["b"].astype(jnp.float32), axes=([n_in], [0]))
        out[key] = {**node_base[key], "w": (w.astype(jnp.float32) + scale * delta).astype(w.dtype)}
      else:
        out[key] = fold(node_base[key], sub)
    return out

  return fold(base, lora)
