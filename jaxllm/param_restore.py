"""The trained parameters of one orbax train-state checkpoint, read straight into the current mesh's shardings.

A partial restore: only `params` is read (never the step, rng or Adam moments), into a target tree of
jax.ShapeDtypeStructs carrying the shardings this run wants, so each process reads only the blocks its devices
hold, on any number of processes and whatever mesh or device count wrote the checkpoint. Leaves are read in
groups of at most `GROUP_BYTES` (largest first): a checkpoint written on fewer devices stores each array in
fewer, larger chunks, and a chunk is read (and decompressed) whole even when this process keeps only part of
it, so reading everything at once would hold a full copy of the weights in flight
(benchmarks/hf_import_memory.py measures the peak).
"""
from __future__ import annotations

import math
from typing import Any

import jax
import orbax.checkpoint as ocp
from etils import epath
from flax import traverse_util

GROUP_BYTES = 32 * 2**20  # saved bytes read per restore call (a larger leaf is read alone)


def _single_device() -> jax.sharding.Sharding:
  return jax.sharding.SingleDeviceSharding(jax.local_devices()[0])


def _replicated_like(shardings: Any) -> jax.sharding.Sharding:
  """Replicated over the mesh the weights' shardings use (adapters, heads: small, every device holds them)."""
  leaf = jax.tree.leaves(shardings)[0]
  if isinstance(leaf, jax.sharding.NamedSharding):
    return jax.sharding.NamedSharding(leaf.mesh, jax.sharding.PartitionSpec())
  return leaf


def saved_params(state_dir: str) -> dict:
  """Shape/dtype metadata of the checkpoint's `params` subtree (its metadata file only, no array data)."""
  tree = ocp.PyTreeCheckpointHandler().metadata(epath.Path(state_dir))
  return getattr(tree, "tree", tree)["params"]


def _check_fits(saved: dict, shardings: Any, where: str) -> None:
  """The saved model tree must be the tree the current model's shardings describe, else a clear error."""
  want = {jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_leaves_with_path(shardings)}
  have = {jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_leaves_with_path(saved)}
  if want != have:
    raise ValueError(f"{where}: the saved weights do not fit this model (only in the checkpoint: "
                     f"{sorted(have - want)[:3]}, only in the model: {sorted(want - have)[:3]})")


def _groups(flat: dict[tuple, jax.ShapeDtypeStruct]) -> list[list[tuple]]:
  """Leaf paths, largest first, in consecutive groups of at most GROUP_BYTES saved bytes."""
  nbytes = lambda k: math.prod(flat[k].shape) * flat[k].dtype.itemsize
  groups, size = [[]], 0
  for key in sorted(flat, key=lambda k: (-nbytes(k), k)):
    if groups[-1] and size + nbytes(key) > GROUP_BYTES:
      groups.append([])
      size = 0
    groups[-1].append(key)
    size += nbytes(key)
  return groups


def restore_params(state_dir: str, shardings: Any = None) -> dict:
  """The `params` of a train-state checkpoint folder (`W/checkpoints/N/state`): `params["model"]` into
  `shardings` (a pytree of shardings shaped like the model's weights), adapters and heads replicated over the
  same mesh; with no shardings, everything on this process's first device."""
  saved = saved_params(state_dir)
  small = _single_device() if shardings is None else _replicated_like(shardings)
  if shardings is not None and "model" in saved:
    _check_fits(saved["model"], shardings, state_dir)
  target_sh = {k: (shardings if k == "model" and shardings is not None else jax.tree.map(lambda _: small, v))
               for k, v in saved.items()}
  target = jax.tree.map(lambda m, sh: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=sh), saved, target_sh)
  flat = traverse_util.flatten_dict(target)
  restored = {}
  handler = ocp.PyTreeCheckpointHandler()
  try:
    for group in _groups(flat):
      item = {"params": traverse_util.unflatten_dict({k: flat[k] for k in group})}
      out = handler.restore(epath.Path(state_dir), args=ocp.args.PyTreeRestore(
          item=item, restore_args=ocp.checkpoint_utils.construct_restore_args(item), partial_restore=True))
      restored.update(traverse_util.flatten_dict(out["params"]))
  finally:
    handler.close()
  return traverse_util.unflatten_dict(restored)
