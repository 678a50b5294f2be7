"""One process of tests/test_finetune_scaling.py: fine-tunes (SFT, DPO) from a checkpoint on each mesh named
and writes, from process 0, the first train losses and a checksum of the loaded weights as JSON.

  python tests/finetune_worker.py OUT.json PRETRAIN_WORKDIR HF_FOLDER TOKENIZER_DIR RUNS_DIR MESHES SFT_FROM

HF_FOLDER holds the same weights exported to Hugging Face format; on each mesh both are loaded and checksummed.
MESHES is `2x4x1,1x2x4` (data x fsdp x tensor). On the first mesh a DPO run also starts from the SFT workdir
written by the multi-process launch: SFT_FROM is that launch's RUNS_DIR (`-`: this launch's own). (GRPO across
processes from an init_from workdir: tests/test_grpo_scaling.py.)
The launcher sets jax's device count (XLA_FLAGS) and the dist.* keys (JAXLLM_DIST=coordinator,n,i).
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from conftest import tiny_config  # noqa: E402
from jaxllm import runtime, stages  # noqa: E402
from jaxllm.metrics import read_metrics  # noqa: E402

STEPS = 3


def weights_checksums(weights) -> list[float]:
  """Per weight, its sum weighted by a function of each element's position: equal to the checksum of the
  weights read whole on one device only if every process read every block from the right place."""
  def checksum(x):
    position = jnp.arange(x.size, dtype=jnp.float32).reshape(x.shape)
    return jnp.sum(x.astype(jnp.float32) * jnp.cos(position))
  return [float(c) for c in jax.jit(lambda w: [checksum(x) for x in jax.tree.leaves(w)])(weights)]


def config_for(stage: str, workdir: str, init_from: str, tokenizer: str, mesh: str, dist: list[str]):
  data, fsdp, tensor = (int(n) for n in mesh.split("x"))
  overrides = {"init_from": init_from, "steps": STEPS, "log.every": 1, "checkpoint.every": STEPS,
               "mesh.data": data, "mesh.fsdp": fsdp, "mesh.tensor": tensor, "eval.batches": 1,
               "log.progress": False}
  if dist:  # the tiny configs' held-out generation and samples stay on: across processes they are skipped
    overrides.update({"dist.coordinator": dist[0], "dist.num_processes": int(dist[1]),
                      "dist.process_id": int(dist[2])})
  else:  # off on one process, where they would run (a sampler to compile; they do not change the losses)
    overrides.update({"sample.num": 0, **({"sft.eval_examples": 0} if stage == "sft" else {})})
  return tiny_config(stage, workdir, tokenizer, **overrides)


def main(out: str, pretrain: str, hf_folder: str, tokenizer: str, runs: str, meshes: str, sft_from: str) -> None:
  dist = os.environ["JAXLLM_DIST"].split(",") if os.environ.get("JAXLLM_DIST") else []
  result = {}

  def train(name: str, stage: str, init_from: str, mesh: str) -> None:
    workdir = os.path.join(runs, name)
    stages.run(config_for(stage, workdir, init_from, tokenizer, mesh, dist))
    if jax.process_index() == 0:
      result[name] = [r["loss"] for r in read_metrics(workdir) if r["split"] == "train"]

  for mesh in meshes.split(","):
    for name, init_from in (("checkpoint", pretrain), ("hf", hf_folder)):
      env = runtime.prepare(config_for("sft", os.path.join(runs, f"load_{name}_{mesh}"), init_from, tokenizer,
                                       mesh, dist))
      result[f"checksums_{name}_{mesh}"] = weights_checksums(env.pretrained.weights)
    train(f"sft_{mesh}", "sft", pretrain, mesh)
    train(f"dpo_{mesh}", "dpo", pretrain, mesh)
  first = meshes.split(",")[0]
  multi_sft = os.path.join(runs if sft_from == "-" else sft_from, f"sft_{first}")
  train("dpo_from_multi_sft", "dpo", multi_sft, first)
  if jax.process_index() == 0:
    with open(out, "w") as f:
      json.dump(result, f)


if __name__ == "__main__":
  main(*sys.argv[1:])
