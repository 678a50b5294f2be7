"""Sampling a GRPO rollout across processes, two ways side by side (issue 27: which one rl.rollout uses).

  python benchmarks/rollout_sampling.py [--out=FILE.json]      # 2 processes x 4 CPU devices, a few minutes
  python benchmarks/rollout_sampling.py --smoke                 # the tiny model, one repeat (checks the script)

Both ways sample the same P prompts x G samples (each process its own half, rows keyed by their global index)
from a policy trained on the mesh data 1 x fsdp 4 x tensor 2 (so each process holds half of every weight):

  sharded   what rl.rollout does (jaxllm/spmd_sampling.py): each process puts its prompts into one global batch,
            one jitted generation runs over it on the training mesh with the policy sharded as it trains
            (each decode step gathers weight shards across processes), each process reads back its rows
  replica   the alternative: all-gather the weights once (one jitted copy to the replicated sharding), regroup
            this process's copies as a replica on its own devices, and sample this process's prompts there alone

Seconds are per rollout, after a warm-up call (compilation excluded), the slower process's; "gather" is the
replica's weight all-gather alone. Both ways draw identical tokens (checked; printed as `same_tokens`).
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZES = {  # model.* and the rollout: prompts, group size, prompt tokens, new tokens
    "smoke": dict(model=dict(d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, mlp_dim=128), prompts=8, group=2,
                  prompt_len=16, new=8, repeats=1),
    "default": dict(model=dict(d_model=256, n_layers=4, n_heads=8, n_kv_heads=4, mlp_dim=704), prompts=16,
                    group=8, prompt_len=48, new=32, repeats=5),
}


def _worker(size: str, coordinator: str, process_id: int, out: str) -> None:
  import flax.linen as nn
  import jax
  from jax.experimental import multihost_utils
  from jax.sharding import Mesh, NamedSharding, PartitionSpec

  sys.path.insert(0, REPO)
  from configs import grpo
  from jaxllm import runtime, sampling, sharding, spmd_sampling

  s = SIZES[size]
  config = grpo.get_config("tiny")
  config.model.update(vocab_size=512, max_seq_len=128, **s["model"])
  config.mesh.update(data=1, fsdp=4, tensor=2)
  config.dist.update(coordinator=coordinator, num_processes=2, process_id=process_id)
  config.workdir = os.path.join(out + ".runs", str(process_id))
  config.log.tensorboard = False
  env = runtime.prepare(config)
  with env.mesh_context():
    weights = env.base_weights(jax.random.PRNGKey(0))
  p, g, n = s["prompts"], s["group"], s["new"]
  rng = np.random.default_rng(0)
  prompts = rng.integers(1, 500, (p, s["prompt_len"])).astype(np.int32)
  params = sampling.SamplingParams(max_new_tokens=n, temperature=1.0)
  keys_R = np.asarray(jax.random.split(jax.random.PRNGKey(1), p * g))
  lo, hi = spmd_sampling.share(p)

  local_mesh = Mesh(np.asarray(jax.local_devices()).reshape(-1, 1, 1), sharding.MESH_AXES)
  gather_all = jax.jit(lambda t: t, out_shardings=NamedSharding(env.mesh, PartitionSpec()))

  def replica(tree):  # one device all-gather, then this process's copies regrouped as an array of its devices
    mine = NamedSharding(local_mesh, PartitionSpec())
    def regroup(x):
      on_device = {s.device: s.data for s in x.addressable_shards}
      return jax.make_array_from_single_device_arrays(x.shape, mine, [on_device[d] for d in local_mesh.devices.flat])
    return jax.tree.map(regroup, gather_all(tree))

  def replica_way():
    t0 = time.perf_counter()
    local = jax.block_until_ready(replica(weights))
    t_gather = time.perf_counter() - t0
    with jax.set_mesh(local_mesh), nn.logical_axis_rules(sharding.LOGICAL_RULES):
      gen = sampling.generate(env.model, local, prompts[lo:hi].tolist(), params, keys_R[lo * g:hi * g],
                              samples_per_prompt=g)
    return spmd_sampling.gather(gen.tokens), t_gather

  def sharded_way():
    gen = spmd_sampling.generate(env, weights, None, prompts[lo:hi].tolist(), params, keys_R[lo * g:hi * g],
                                 samples_per_prompt=g)
    return spmd_sampling.gather(gen.tokens), 0.0

  ways = {"replica": replica_way, "sharded": sharded_way}
  result = {name: {"times": [], "gathers": [], "tokens": way()[0]} for name, way in ways.items()}  # compiled
  for r in range(s["repeats"]):  # interleaved, so load from other jobs falls on every way alike
    for name, way in ways.items():
      multihost_utils.sync_global_devices(f"{name}{r}")
      t0 = time.perf_counter()
      _, t_gather = way()
      result[name]["times"].append(time.perf_counter() - t0)
      result[name]["gathers"].append(t_gather)
  for v in result.values():
    v["sec"], v["gather_sec"] = float(np.median(v.pop("times"))), float(np.median(v.pop("gathers")))
  same = bool(np.array_equal(result["replica"].pop("tokens"), result["sharded"].pop("tokens")))
  slowest = {k: float(spmd_sampling.gather(np.array([v["sec"]])).max()) for k, v in result.items()}
  if process_id == 0:
    record = {"size": size, "prompts": p, "group": g, "prompt_len": s["prompt_len"], "new_tokens": n,
              "processes": 2, "devices_per_process": 4, "mesh": "data 1 x fsdp 4 x tensor 2",
              "replica_sec": slowest["replica"], "replica_gather_sec": result["replica"]["gather_sec"],
              "sharded_sec": slowest["sharded"], "sharded_over_replica": slowest["sharded"] / slowest["replica"],
              "same_tokens": same,
              "params": int(sum(x.size for x in jax.tree.leaves(weights)))}
    with open(out, "w") as f:
      json.dump(record, f)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--size", default="default", choices=sorted(SIZES))
  parser.add_argument("--smoke", action="store_true", help="--size=smoke")
  parser.add_argument("--out", default="rollout_sampling.json")
  parser.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)  # coordinator process_id size
  args = parser.parse_args()
  if args.worker:
    _worker(args.worker[2], args.worker[0], int(args.worker[1]), args.out)
    return
  size = "smoke" if args.smoke else args.size
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    coordinator = f"127.0.0.1:{s.getsockname()[1]}"
  env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4", "JAX_PLATFORMS": "cpu"}
  procs = [subprocess.Popen([sys.executable, __file__, f"--out={os.path.abspath(args.out)}", "--worker",
                             coordinator, str(i), size], env=env, cwd=REPO) for i in range(2)]
  if any(p.wait() for p in procs):
    sys.exit("a worker failed")
  with open(args.out) as f:
    print(json.dumps(json.load(f)))


if __name__ == "__main__":
  main()
