"""The one train-state pytree every stage shares, the optimizer, and how params are split.

`params` is what the optimizer trains: `{"model": weights}` for full fine-tuning or `{"lora": adapters}` under
LoRA, plus any stage-specific extras (e.g. `{"score_head": ...}` for a reward model). `frozen` holds what a
step reads but never trains: `{"model": base weights}` under LoRA (which is also the reference policy; under
QLoRA also `"quant"`, the quantized base projections, lora.py), the reference policy under full fine-tuning for
DPO/GRPO, else `{}`. `frozen` is never checkpointed: it is always
rebuilt from `init_from`.
"""
from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import ml_collections
import optax

from jaxllm import galore
from jaxllm import lora as lora_lib


@flax.struct.dataclass
class TrainState:
  step: jax.Array  # optimizer steps taken
  params: Any  # trainable pytree
  frozen: Any  # read-only pytree (base weights / reference policy)
  opt_state: Any
  rng: jax.Array  # root key of the train stream; per-step keys are fold_in(rng, step)
  skipped: jax.Array  # steps whose loss, gradient or updated state was not finite (update skipped)
  # Consecutive skipped steps, sticky once it reaches train.max_skipped_steps (every later update is skipped too,
  # so the state stays the last finite one until the host sees it and stops). Not checkpointed: 0 on resume.
  bad_streak: Any = None


def all_finite(tree) -> jax.Array:
  """One boolean: every floating leaf of `tree` is finite (integer leaves, e.g. Adam's count, always are)."""
  leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.inexact)]
  return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)


def policy_weights(params: dict, frozen: dict) -> tuple[dict, dict | None]:
  """(base weights, LoRA tree or None) of the policy being trained."""
  if "lora" in params:
    return frozen["model"], lora_lib.with_base(params["lora"], frozen.get("quant"))
  return params["model"], None


def reference_weights(frozen: dict) -> tuple[dict, dict | None]:
  """The reference policy: init_from's weights (under LoRA: the base without adapters; under QLoRA the
  quantized base projections come as the second element, the tree the model reads beside its weights)."""
  return frozen["model"], frozen.get("quant") or None


def learning_rate_schedule(optim: ml_collections.ConfigDict, steps: int) -> optax.Schedule:
  steps = optim.decay_steps or steps
  warmup = min(optim.warmup_steps, max(steps - 1, 0))
  return optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=optim.lr, warmup_steps=warmup, decay_steps=max(steps, warmup + 1),
      end_value=optim.lr * optim.min_lr_ratio)


def _decay_mask(params, decay_embeddings: bool):
  """Decay matrices only; never norms, biases or scalars; embeddings / output head only if configured."""
  def want(path, leaf):
    names = {getattr(p, "key", None) for p in path}
    if not decay_embeddings and names & {"embedding", "lm_head"}:
      return False
    return leaf.ndim >= 2
  return jax.tree_util.tree_map_with_path(want, params)


def _adamw(optim: ml_collections.ConfigDict, schedule: optax.Schedule, seed: int) -> optax.GradientTransformation:
  del seed
  return optax.adamw(schedule, b1=optim.b1, b2=optim.b2, eps=optim.eps, weight_decay=optim.weight_decay,
                     mu_dtype=optim.mu_dtype or None, mask=lambda p: _decay_mask(p, optim.decay_embeddings))


def _galore(optim: ml_collections.ConfigDict, schedule: optax.Schedule, seed: int) -> optax.GradientTransformation:
  return galore.galore_adamw(
      schedule, rank=optim.galore_rank, update_every=optim.galore_update_every, scale=optim.galore_scale,
      b1=optim.b1, b2=optim.b2, eps=optim.eps, weight_decay=optim.weight_decay,
      mask=lambda p: _decay_mask(p, optim.decay_embeddings), input_dims=galore_input_dims, seed=seed)


def galore_input_dims(path, leaf) -> int:
  """How many leading dims of a weight are its inputs (a projection's per lora.INPUT_DIMS; else 1): GaLore
  projects the [inputs, outputs] matrix."""
  names = [getattr(p, "key", None) for p in path]
  for name in reversed(names[:-1]):
    if name in lora_lib.INPUT_DIMS:
      return lora_lib.INPUT_DIMS[name]
  return 1


OPTIMIZERS = {"adamw": _adamw, "galore": _galore}


def _lora_plus_labels(params):
  """LoRA+: the adapters' `b` matrices get their own learning rate; everything else the base one."""
  return jax.tree_util.tree_map_with_path(
      lambda path, _: "lora_b" if getattr(path[-1], "key", None) == "b" and "lora" in
      {getattr(p, "key", None) for p in path} else "base", params)


def make_optimizer(optim: ml_collections.ConfigDict, steps: int, plus_ratio: float = 1.0,
                   seed: int = 0) -> optax.GradientTransformation:
  """optim.name's optimizer after global-norm clipping; with plus_ratio != 1 (LoRA+, Hayou et al. 2024) the
  LoRA `b` matrices train at plus_ratio x the learning rate of everything else. `seed` (config.seed) seeds
  GaLore's randomized SVD."""
  parts = []
  if optim.grad_clip > 0:
    parts.append(optax.clip_by_global_norm(optim.grad_clip))
  schedule = learning_rate_schedule(optim, steps)
  build = OPTIMIZERS[optim.get("name", "adamw")]
  if plus_ratio != 1.0:
    parts.append(optax.multi_transform(
        {"base": build(optim, schedule, seed), "lora_b": build(optim, lambda s: plus_ratio * schedule(s), seed)},
        _lora_plus_labels))
  else:
    parts.append(build(optim, schedule, seed))
  return optax.chain(*parts)
