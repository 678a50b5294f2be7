"""Device mesh from `config.mesh`, the logical-axis -> mesh-axis rules, and placement of state and batches.

Parameters name their dims logically (model.py); this one table decides where each lands. Activations are
constrained by the same names at block boundaries. The same code runs on 1 CPU, 8 fake CPU devices, a GPU
node or many hosts: only the mesh differs.
"""
from __future__ import annotations

import math

import flax.linen as nn
import jax
import ml_collections
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

MESH_AXES = ("data", "fsdp", "tensor")

# Logical axis -> mesh axes. 'batch' spreads over every data-parallel axis; weights are split along 'embed'
# by fsdp and along heads / mlp / vocab by tensor parallelism (Megatron-style column/row splits).
LOGICAL_RULES = (
    ("batch", ("data", "fsdp")),
    ("embed", "fsdp"),
    ("heads", "tensor"),
    ("kv_heads", "tensor"),
    ("mlp", "tensor"),
    ("vocab", "tensor"),
    ("length", None),
    ("head_dim", None),
    ("norm", None),
    ("lora_rank", None),
)


def mesh_shape(mesh_cfg: ml_collections.ConfigDict, n_devices: int) -> tuple[int, int, int]:
  """Axis sizes with one -1 filled in; raises naming the keys when the product is not the device count."""
  sizes = [mesh_cfg.data, mesh_cfg.fsdp, mesh_cfg.tensor]
  if sizes.count(-1) > 1:
    raise ValueError(f"config.mesh: at most one of data/fsdp/tensor may be -1, got {sizes}")
  known = math.prod(s for s in sizes if s != -1)
  if -1 in sizes:
    if known <= 0 or n_devices % known:
      raise ValueError(f"config.mesh: {n_devices} devices cannot be split with data/fsdp/tensor = {sizes}")
    sizes[sizes.index(-1)] = n_devices // known
  if math.prod(sizes) != n_devices or min(sizes) < 1:
    raise ValueError(f"config.mesh: data*fsdp*tensor = {sizes[0]}*{sizes[1]}*{sizes[2]} = {math.prod(sizes)} "
                     f"but there are {n_devices} devices")
  return tuple(sizes)


def make_mesh(mesh_cfg: ml_collections.ConfigDict) -> Mesh:
  shape = mesh_shape(mesh_cfg, jax.device_count())
  devices = np.asarray(jax.devices()).reshape(shape)
  return Mesh(devices, MESH_AXES)


def logical_shardings(boxed_tree, mesh: Mesh):
  """NamedShardings for a tree whose leaves may be `nn.LogicallyPartitioned` (unannotated -> replicated)."""
  specs = nn.get_partition_spec(boxed_tree)
  return nn.logical_to_mesh_sharding(specs, mesh, LOGICAL_RULES)


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(("data", "fsdp")))


def data_parallel_size(mesh: Mesh) -> int:
  return mesh.shape["data"] * mesh.shape["fsdp"]


def put_batch(local_batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """Assemble global arrays from this process's rows (split along the leading batch dim)."""
  sharding = batch_sharding(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v)) for k, v in local_batch.items()}
