"""orbax checkpoints of the train state and data-iterator position; loading weights from a finished run.

A checkpoint holds `step, params, opt_state, rng, skipped` (not `frozen`, which is rebuilt from init_from, so a
LoRA run's checkpoint is the adapters plus the pointer to its base in config.json) and the data iterator's
JSON state. orbax writes each step into a temporary folder and renames it when complete, so a run killed
mid-save leaves the previous checkpoint usable.
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import jax
import ml_collections
import orbax.checkpoint as ocp

from jaxllm import hf, param_restore
from jaxllm import lora as lora_lib
from jaxllm.state import TrainState

_SAVED_FIELDS = ("step", "params", "opt_state", "rng", "skipped")


def _saveable(state: TrainState) -> dict:
  return {f: getattr(state, f) for f in _SAVED_FIELDS}


class Checkpointer:
  def __init__(self, workdir: str, keep: int):
    self.directory = os.path.join(os.path.abspath(workdir), "checkpoints")
    self.manager = ocp.CheckpointManager(
        self.directory, options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True))

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def save(self, state: TrainState, data_state: dict) -> None:
    step = int(jax.device_get(state.step))
    if step in self.manager.all_steps():
      return
    self.manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(_saveable(state)), data=ocp.args.JsonSave(data_state)))

  def restore(self, like: TrainState) -> tuple[TrainState, dict]:
    """Restore the latest step into the shapes/shardings of `like` (a freshly initialised state)."""
    step = self.latest_step()
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding),
                            _saveable(like))
    try:
      restored = self.manager.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(abstract), data=ocp.args.JsonRestore()))
    except (ValueError, KeyError, TypeError) as e:
      raise ValueError(f"checkpoint {self.directory}/{step} does not fit this run's config (model size, LoRA "
                       f"or stage differ?): {e}") from e
    return like.replace(**restored["state"]), restored["data"]

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()


@dataclasses.dataclass
class Pretrained:
  """Weights of a finished run (LoRA merged in), or of a Hugging Face folder (config holds only `model`), with
  the config and folder they came from."""
  config: ml_collections.ConfigDict
  weights: dict
  workdir: str
  extras: dict  # trained params beside the model (e.g. a reward model's score_head)


def read_run_config(workdir: str) -> ml_collections.ConfigDict:
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    raise FileNotFoundError(f"init_from={workdir!r}: no config.json there (not a jaxllm workdir)")
  with open(path) as f:
    return ml_collections.ConfigDict(json.load(f))


def resolve_workdir(path: str) -> tuple[str, int | None]:
  """A workdir, or one checkpoint step folder inside it (`W/checkpoints/123`) -> (workdir, step or None)."""
  path = os.path.abspath(path)
  parent = os.path.dirname(path)
  if os.path.basename(parent) == "checkpoints" and os.path.basename(path).isdigit():
    return os.path.dirname(parent), int(os.path.basename(path))
  return path, None


def load_pretrained(path: str, shardings: Any = None, dtype: str = "float32") -> Pretrained:
  """Trained weights of a jaxllm workdir (latest or the given step), LoRA adapters merged into their base; or
  a Hugging Face model folder (read tensor by tensor in `dtype`). With `shardings` (a pytree shaped like the
  model's weights) every process reads only its devices' slices into them (param_restore.py); without, the
  weights land whole on this process's first device (single-process tools: chat, export, scoring)."""
  if hf.is_hf_folder(path):
    cfg, weights = hf.load(path, dtype, shardings)
    return Pretrained(config=ml_collections.ConfigDict({"model": cfg}), weights=weights,
                      workdir=os.path.abspath(path), extras={})
  workdir, step = resolve_workdir(path)
  config = read_run_config(workdir)
  directory = os.path.join(workdir, "checkpoints")
  steps = sorted(int(n) for n in os.listdir(directory) if n.isdigit()) if os.path.isdir(directory) else []
  step = (steps[-1] if steps else None) if step is None else step
  if step is None:
    raise FileNotFoundError(f"init_from={path!r}: the workdir has no checkpoint")
  state_dir = os.path.join(directory, str(step), "state")
  if not os.path.isdir(state_dir):
    raise FileNotFoundError(f"init_from={path!r}: no checkpoint at {state_dir}")
  restored = param_restore.restore_params(state_dir, shardings)
  extras = {k: v for k, v in restored.items() if k not in ("model", "lora")}
  if "lora" in restored:
    base = load_pretrained(config.init_from, shardings, dtype)
    merge = lambda w, a: lora_lib.merge(w, a, config.lora.alpha / config.lora.rank)
    weights = jax.jit(merge, out_shardings=shardings)(base.weights, restored["lora"])
  else:
    weights = restored["model"]
  return Pretrained(config=config, weights=weights, workdir=workdir, extras=extras)
