"""orbax checkpoints of the train state and data-iterator position; loading weights from a finished run.

A checkpoint holds `step, params, opt_state, rng, skipped` (not `frozen`, which is rebuilt from init_from, so a
LoRA run's checkpoint is the adapters plus the pointer to its base in config.json) and the data iterator's
JSON state. orbax writes each step into a temporary folder and renames it when complete, so a run killed
mid-save leaves the previous checkpoint usable; `jaxllm_manifest.json` in each step folder (sizes and SHA-256 of its
files, written once the save is complete) catches bit rot and truncation on restore.
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Callable

import jax
import ml_collections
import orbax.checkpoint as ocp

from jaxllm import hf, manifest, param_restore
from jaxllm import lora as lora_lib
from jaxllm.errors import CheckpointError, TrainingStopped, UserError
from jaxllm.model import lora_scale
from jaxllm.state import TrainState, all_finite

_SAVED_FIELDS = ("step", "params", "opt_state", "rng", "skipped")


def _saveable(state: TrainState) -> dict:
  return {f: getattr(state, f) for f in _SAVED_FIELDS}


class Checkpointer:
  """Saves (asynchronously) and restores the train state; every finished save gets a checksum manifest.

  Restore takes the newest checkpoint that verifies and restores; each one that fails is reported in one line
  (step and reason) and moved to `workdir/rejected_checkpoints/` (kept, never deleted) before the previous one is
  tried, so a later save of the same step is not skipped and keep-N rotation never counts it. Only finite
  states are saved, so rotation never deletes the newest finite checkpoint.
  """

  def __init__(self, workdir: str, keep: int, log: Callable[[str], None] = print):
    self.workdir = os.path.abspath(workdir)
    self.directory = os.path.join(self.workdir, "checkpoints")
    self._keep = keep
    self._log = log
    self._unsealed: int | None = None  # step saved asynchronously whose manifest is not written yet
    self._finite = jax.jit(lambda params, opt_state: all_finite((params, opt_state)))
    self.manager = self._open()

  def _open(self) -> ocp.CheckpointManager:
    return ocp.CheckpointManager(self.directory, options=ocp.CheckpointManagerOptions(max_to_keep=self._keep,
                                                                                      create=True))

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def save(self, state: TrainState, data_state: dict) -> None:
    step = int(jax.device_get(state.step))
    if step in self.manager.all_steps():
      return
    if not bool(jax.device_get(self._finite(state.params, state.opt_state))):
      raise TrainingStopped(f"checkpoint: the state at step {step} is not finite; not saved (the last checkpoint, "
                            f"step {self.latest_step()}, is kept)")
    self._seal()  # orbax finishes the previous save before starting this one anyway
    self.manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(_saveable(state)), data=ocp.args.JsonSave(data_state)))
    self._unsealed = step

  def poll(self) -> None:
    """Write the manifest of a finished asynchronous save (cheap when none is pending): call once a step."""
    if self._unsealed is not None and not self.manager.is_saving_in_progress():
      self._seal()

  def _seal(self) -> None:
    if self._unsealed is None:
      return
    self.manager.wait_until_finished()
    folder = os.path.join(self.directory, str(self._unsealed))
    if jax.process_index() == 0 and os.path.isdir(folder):
      manifest.write(folder)
    self._unsealed = None

  def restore(self, like: TrainState) -> tuple[TrainState, dict]:
    """Restore the newest usable step into the shapes/shardings of `like` (a freshly initialised state)."""
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding),
                            _saveable(like))
    rejected = []
    for step in sorted(self.manager.all_steps(), reverse=True):
      try:
        restored = self._restore_step(step, abstract)
      except Exception as e:  # noqa: BLE001 -- any failure (bad bytes, truncated arrays, bad JSON) means: unusable
        reason = " ".join(str(e).split())[:300] or type(e).__name__
        rejected.append(step)
        self._reject(step, reason)
        continue
      if rejected:
        self._log(f"checkpoint: using step {step} instead (rejected: {rejected})")
      return like.replace(**restored["state"]), restored["data"]
    raise CheckpointError(f"checkpoint: none of {rejected} in {self.directory} could be restored (moved to "
                          f"{self._rejected_dir()}); remove the workdir or point workdir elsewhere")

  def _restore_step(self, step: int, abstract) -> dict:
    folder = os.path.join(self.directory, str(step))
    problem = manifest.verify(folder)
    if problem:
      raise ValueError(problem)
    restored = self.manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract), data=ocp.args.JsonRestore()))
    state = restored["state"]
    if not bool(jax.device_get(self._finite(state["params"], state["opt_state"]))):
      raise ValueError("restored parameters or optimizer state are not finite")
    if int(jax.device_get(state["step"])) != step:
      raise ValueError(f"it holds step {int(jax.device_get(state['step']))}")
    return restored

  def _rejected_dir(self) -> str:
    return os.path.join(self.workdir, "rejected_checkpoints")

  def _reject(self, step: int, reason: str) -> None:
    self._log(f"checkpoint: step {step} in {self.directory} is unusable ({reason}); moved to "
              f"{self._rejected_dir()}, trying the previous one")
    if jax.process_index() == 0:
      os.makedirs(self._rejected_dir(), exist_ok=True)
      target = os.path.join(self._rejected_dir(), str(step))
      n = 1
      while os.path.exists(target):
        target, n = os.path.join(self._rejected_dir(), f"{step}.{n}"), n + 1
      os.replace(os.path.join(self.directory, str(step)), target)
    self.manager.close()  # its step list still holds the moved step
    self.manager = self._open()

  def close(self) -> None:
    self._seal()
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


def _convert_each(tree: dict, convert, path=()) -> dict:
  """convert(path, leaf) over a nested dict, one leaf at a time, dropping each original as it goes."""
  for key in list(tree):
    sub = tree[key]
    tree[key] = _convert_each(sub, convert, path + (key,)) if isinstance(sub, dict) else convert(path + (key,), sub)
  return tree


def read_run_config(workdir: str) -> ml_collections.ConfigDict:
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    raise FileNotFoundError(f"init_from={workdir!r}: no config.json there (not a jaxllm workdir)")
  try:
    with open(path) as f:
      config = json.load(f)
  except ValueError as e:
    raise UserError(f"{path}: not valid JSON ({e})") from None
  if not isinstance(config, dict):
    raise UserError(f"{path}: not a JSON object")
  if "model_type" in config or "architectures" in config:  # a Hugging Face folder that is_hf_folder turned down
    found = sorted(n for n in os.listdir(workdir) if n.endswith((".safetensors", ".bin", ".pt", ".pth")))
    raise UserError(f"init_from={workdir!r}: a Hugging Face config.json but no model.safetensors or "
                    f"model.safetensors.index.json (found: {found or 'no weight files'}); only safetensors "
                    "weights are read")
  return ml_collections.ConfigDict(config)


def resolve_workdir(path: str) -> tuple[str, int | None]:
  """A workdir, or one checkpoint step folder inside it (`W/checkpoints/123`) -> (workdir, step or None)."""
  path = os.path.abspath(path)
  parent = os.path.dirname(path)
  if os.path.basename(parent) == "checkpoints" and os.path.basename(path).isdigit():
    return os.path.dirname(parent), int(os.path.basename(path))
  return path, None


def load_pretrained(path: str, shardings: Any = None, dtype: str = "float32", convert: Any = None) -> Pretrained:
  """Trained weights of a jaxllm workdir (latest or the given step), LoRA adapters merged into their base; or
  a Hugging Face model folder (read tensor by tensor in `dtype`). With `shardings` (a pytree shaped like the
  model's weights) every process reads only its devices' slices into them (param_restore.py); without, the
  weights land whole on this process's first device (single-process tools: chat, export, scoring).
  `convert(path, array)`, when given, replaces each weight, tensor by tensor (QLoRA quantizes the base here)."""
  if hf.is_hf_folder(path):
    cfg, weights = hf.load(path, dtype, shardings, convert)
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
    # A QLoRA run's base is quantized and dequantized as in training (config.lora.quantize), then merged.
    merge = lambda w, a: lora_lib.merge(w, a, lora_scale(config.lora), config.lora)
    weights = jax.jit(merge, out_shardings=shardings)(base.weights, restored["lora"])
  else:
    weights = restored["model"]
  if convert is not None:
    weights = _convert_each(weights, convert)
  return Pretrained(config=config, weights=weights, workdir=workdir, extras=extras)
