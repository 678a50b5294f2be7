"""Generation over the training mesh, across processes: each process brings its own share of the prompts, one
jitted generation runs over the global batch with the policy sharded as it trains, and each process reads back
its own rows.

  lo, hi = spmd_sampling.share(len(prompts))                                  # this process's share
  gen = spmd_sampling.generate(env, weights, lora, prompts[lo:hi], params, keys)   # its rows (sampling.Generation)
  everything = spmd_sampling.gather(local_array)                               # every process's rows, in order

The global batch is every process's rows in process order (`sharding.put_batch`), so with row keys taken by
global row index the samples do not depend on the process count. Every process must call `generate` with as
many rows (the global batch is split evenly over the data-parallel devices); prompt lengths may differ, the
padded length is the longest over all processes.

Why the sharded policy rather than a replica of it on each process's devices (measured side by side with
benchmarks/rollout_sampling.py, docs/scaling.md): at the size GRPO runs at here it was 7-34% faster (the
replica's all-gather of the weights per rollout is a cost of its own, and its decode was no faster), and it never
needs one process to hold the whole model. The replica won for a tiny model (latency-bound decoding) and on an
oversubscribed host (the sharded decode steps in lockstep across processes).
"""
from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils

from jaxllm import sampling, sharding

_STATIC = ("model", "params", "pad_id", "samples_per_prompt")


def share(n: int) -> tuple[int, int]:
  """[start, stop) of this process's share of n items: contiguous, ceil(n / processes) each (the last shorter)."""
  per = -(-n // jax.process_count())
  i = jax.process_index()
  return min(n, i * per), min(n, (i + 1) * per)


def gather(x: np.ndarray) -> np.ndarray:
  """Every process's `x` (the same shape on all) concatenated along axis 0 in process order; a collective.
  One process: `x`."""
  if jax.process_count() == 1:
    return np.asarray(x)
  return np.asarray(multihost_utils.process_allgather(np.asarray(x), tiled=True))


def local_rows(x: jax.Array) -> np.ndarray:
  """This process's rows of a batch-sharded global array: the rows `sharding.put_batch` took from it, in order."""
  shards = {s.index[0].start or 0: s.data for s in x.addressable_shards}  # replicas of a row block: read once
  return np.concatenate([np.asarray(shards[start]) for start in sorted(shards)])


def _jitted(env):
  rows = sharding.batch_sharding(env.mesh)
  return env.jit_cache(("spmd_generate",), lambda: jax.jit(
      sampling.generate_arrays, static_argnames=_STATIC, out_shardings=(rows, rows, rows, rows)))


def generate(env, weights: Any, lora: Any, prompts: list[list[int]], params: sampling.SamplingParams,
             keys: np.ndarray, samples_per_prompt: int = 1) -> sampling.Generation:
  """This process's completions (rows prompt-major) of its `prompts`, drawn with `keys` (raw uint32 [rows, 2],
  one per output row) in one generation over every process's rows; a collective."""
  for i, prompt in enumerate(prompts):  # what sampling.generate checks: shapes here are fixed by the caller
    if not 0 < len(prompt) <= env.model_cfg.max_seq_len - params.max_new_tokens:
      raise ValueError(f"prompt {i}: {len(prompt)} tokens do not fit max_seq_len={env.model_cfg.max_seq_len} with "
                       f"max_new_tokens={params.max_new_tokens} (or it is empty)")
  longest = int(gather(np.array([max(len(p) for p in prompts)])).max())
  tokens = np.zeros((len(prompts), sampling.bucket_length(longest)), np.int32)
  for row, prompt in zip(tokens, prompts):
    row[:len(prompt)] = prompt
  lengths = np.array([len(p) for p in prompts], np.int32)
  batch = sharding.put_batch({"tokens": tokens, "lengths": lengths, "keys": np.asarray(keys, np.uint32)}, env.mesh)
  with env.mesh_context():
    out = _jitted(env)(env.model, weights, batch["tokens"], batch["lengths"], params, batch["keys"], lora,
                       pad_id=env.tokenizer.pad_id, samples_per_prompt=int(samples_per_prompt))
  return sampling.Generation(*(local_rows(x) for x in out))


def gather_shares(ids: list[list[int]], values: list[list[float]], flags: np.ndarray, n: int
                  ) -> tuple[list[list[int]], list[list[float]], np.ndarray]:
  """Every process's rows of a `share(n)` split, back in the order of the n items; a collective. A row is its
  token ids, one float per id (log-probs) and a flag. One process: as they are."""
  if jax.process_count() == 1:
    return ids, values, flags
  per = -(-n // jax.process_count())
  width = max(1, int(gather(np.array([max([len(r) for r in ids], default=0)])).max()))
  ids_PW, values_PW = np.zeros((per, width), np.int64), np.zeros((per, width), np.float32)
  lengths, mine = np.zeros(per, np.int64), np.zeros(per, bool)
  for i, (r, v) in enumerate(zip(ids, values)):
    ids_PW[i, :len(r)], values_PW[i, :len(r)], lengths[i], mine[i] = r, v, len(r), flags[i]
  ids_PW, values_PW, lengths, mine = gather(ids_PW), gather(values_PW), gather(lengths), gather(mine)
  return ([ids_PW[i, :lengths[i]].tolist() for i in range(n)], [values_PW[i, :lengths[i]].tolist() for i in range(n)],
          mine[:n])
