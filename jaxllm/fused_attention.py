"""`model.attention_impl = cudnn`: the training forward's attention through `jax.nn.dot_product_attention`'s
cuDNN flash kernel (shape legend in model.py).

What the model's masks become here:
- causality: `is_causal=True`, so the kernel skips the blocks above the diagonal (a forward without a cache has
  query slot = key slot, so the model's causal-by-slot mask is exactly the kernel's);
- segments (packed rows), shared-prefix branches (GRPO group rows, preference pairs) and sliding windows: the
  model's [B, L, S] bool mask goes in as `mask`, which jax turns into an additive bias the fused kernel reads
  tile by tile. cuDNN's own segment support (q/kv offsets, the packed layout) needs Hopper and one segment
  layout per row, and cannot express a prefix shared across segments, so the bias is the one path for all three.
Where cuDNN is not used (model.py's `dot_attention` instead; docs/scaling.md):
- decoding with a KV cache: one query row against the cache is a memory-bound product where a flash kernel
  saves nothing, and the cache keeps keys transposed ([B, K, Dh, S]) for the XLA path, so cuDNN would need a
  copy of the whole cache every step;
- soft-capped scores (Gemma 2's attn_softcap): cuDNN has no tanh on the scores; config.validate refuses the pair.

`IMPLEMENTATION` maps the config value to jax's `implementation=`; a CPU test maps `cudnn` to jax's `xla` to run
every line of this path except the kernel itself against `dot_attention`.
"""
from __future__ import annotations

import jax

Array = jax.Array
IMPLEMENTATION = {"cudnn": "cudnn"}


def fused_attention(q_BLHk: Array, k_BLKk: Array, v_BLKk: Array, mask_BLS: Array, scale: float | None,
                    impl: str) -> Array:
  """Causal softmax attention of H query heads over K kv heads (GQA) under the model's [B, L, L] bool mask."""
  dh = q_BLHk.shape[-1]
  return jax.nn.dot_product_attention(
      q_BLHk, k_BLKk, v_BLKk, mask=mask_BLS[:, None], scale=dh ** -0.5 if scale is None else scale,
      is_causal=True, implementation=IMPLEMENTATION[impl])
