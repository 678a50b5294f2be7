"""A KV cache held as a list of separate block buffers along the key axis, for decoding a batch whose rows
are at different lengths (the serving engine's slots, serve/slots.py).

  cache = init_block_cache(cfg, batch=32, length=512, block=64)   # per layer k: 8 x [B, K, Dh, 64], v alike
  live = first_blocks(cache["layers"], cache["segment_ids"], n, pos_B)   # what a step over n blocks reads
  logits, live = model.apply(variables, tokens_B1, pos_B[:, None], ones_B1, cache=live)
  layers, segment_ids = with_first_blocks(cache["layers"], cache["segment_ids"], live)

Why blocks, and why separate buffers: a decode step that attends over the whole fixed-size cache reads every
slot of every row, written or not (about a third of a step at the serving benchmark's sizes). Passing the
model only the first n blocks, enough for the longest row, makes a step read just those. Slicing the first n
blocks out of one big buffer does not work on XLA:CPU: its loop emitter copies such a slice at ~0.5 GB/s
(slower than attending over everything), whereas a list of buffers is sliced in Python, for free.
model.dot_attention combines the blocks so that a fully masked block adds exactly zero, which keeps a row's
numbers bit-identical whatever number of blocks (at least its own) a call spans.

Only one token per row is written a call (decoding); prompts are written by the caller (slots.admit).
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

Array = jax.Array


def block_sizes(length: int, block: int) -> list[int]:
  """Blocks of `block` slots covering `length`; the last one shorter when `block` does not divide it."""
  return [min(block, length - start) for start in range(0, length, block)]


def init_block_cache(cfg, batch: int, length: int, block: int, dtype: Any = None) -> dict:
  """An empty block cache: per layer lists of keys [B, K, Dh, b] and values [B, K, b, Dh] (the layouts of
  model.init_cache, cut along the key axis), segment-id blocks [B, b]; `index` is per row ([B])."""
  dtype = jnp.dtype(dtype or cfg.dtype)
  sizes = block_sizes(length, block)
  layer = lambda: {"k": [jnp.zeros((batch, cfg.n_kv_heads, cfg.head_dim, b), dtype) for b in sizes],
                   "v": [jnp.zeros((batch, cfg.n_kv_heads, b, cfg.head_dim), dtype) for b in sizes]}
  return {"layers": [layer() for _ in range(cfg.n_layers)],
          "segment_ids": [jnp.zeros((batch, b), jnp.int32) for b in sizes],
          "index": jnp.zeros((batch,), jnp.int32)}


def block_starts(blocks: list[Array], axis: int) -> list[int]:
  """The first slot of each block."""
  starts, start = [], 0
  for block in blocks:
    starts.append(start)
    start += block.shape[axis]
  return starts


def write_blocks(blocks: list[Array], chunk: Array, index_B: Array, axis: int) -> list[Array]:
  """`chunk` (one slot along `axis` per row) written at row b's slot index_B[b]: a scatter into every block
  that drops the rows whose slot lies in another block (or past the last block passed in)."""
  if chunk.shape[axis] != 1:
    raise ValueError(f"a block cache takes one token per row a call, not {chunk.shape[axis]}")
  new = jnp.squeeze(chunk, axis)
  rows_B = jnp.arange(chunk.shape[0])
  written = []
  for block, start in zip(blocks, block_starts(blocks, axis)):
    size = block.shape[axis]
    offset_B = index_B - start
    offset_B = jnp.where((offset_B >= 0) & (offset_B < size), offset_B, size)  # size: out of bounds, dropped
    written.append(block.at[(rows_B,) + (slice(None),) * (axis - 1) + (offset_B,)].set(new, mode="drop"))
  return written


def first_blocks(layers: list[dict], segment_ids: list[Array], n: int, index_B: Array) -> dict:
  """The model cache of the first n blocks of every layer, written at row b's slot index_B[b]."""
  return {"layers": [{"k": layer["k"][:n], "v": layer["v"][:n]} for layer in layers],
          "segment_ids": segment_ids[:n], "index": index_B}


def with_first_blocks(layers: list[dict], segment_ids: list[Array], live: dict) -> tuple[list[dict], list[Array]]:
  """(layers, segment_ids) with their first blocks replaced by those of `live` (first_blocks' cache, stepped)."""
  n = len(live["segment_ids"])
  layers = [{"k": new["k"] + old["k"][n:], "v": new["v"] + old["v"][n:]} for old, new in zip(layers, live["layers"])]
  return layers, live["segment_ids"] + segment_ids[n:]


def is_block_cache(cache: dict) -> bool:
  return isinstance(cache["segment_ids"], (list, tuple))
