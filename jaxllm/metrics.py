"""Where numbers go: `metrics.jsonl` (one JSON object a line), TensorBoard event files, a tqdm bar, and any
extra sinks (objects with `write(step, split, scalars)` and `close()`, e.g. wandb_sink.WandbSink).

Only process 0 writes. Values are plain Python floats by the time they get here: the loop fetches device
metrics one step late, at logging steps only, so writing never stalls the accelerator.
"""
from __future__ import annotations

import json
import math
import os
import sys

from tqdm import tqdm


def _finite_or_none(v: float):
  return v if math.isfinite(v) else None  # JSON has no NaN/inf; null says "not a number" plainly


def drop_rows_after(path: str, step: int) -> int:
  """Keep only the rows of `path` at or before `step` (and no half-written last line): what a run resumed from
  the checkpoint of `step` would otherwise log twice. Atomic (temp file + rename); returns the rows dropped."""
  if not os.path.exists(path):
    return 0
  kept, dropped = [], 0
  with open(path) as f:
    for line in f:
      try:
        row = json.loads(line)
      except ValueError:  # a run killed mid-write leaves a partial last line
        dropped += 1
        continue
      if row.get("step", 0) <= step:
        kept.append(line if line.endswith("\n") else line + "\n")
      else:
        dropped += 1
  if dropped:
    with open(path + ".tmp", "w") as f:
      f.writelines(kept)
    os.replace(path + ".tmp", path)
  return dropped


class MetricsWriter:
  def __init__(self, workdir: str, *, enabled: bool, tensorboard: bool, progress: bool, total_steps: int,
               initial_step: int = 0, sinks: tuple = ()):
    """`initial_step`: the step the run starts (or resumes) from; rows logged past it by an earlier, interrupted
    run are dropped (from TensorBoard too, by purge_step) so that no step is logged twice."""
    self.enabled = enabled
    self._sinks = tuple(s for s in sinks if s is not None) if enabled else ()
    path = os.path.join(workdir, "metrics.jsonl")
    if enabled:
      drop_rows_after(path, initial_step)
    self._jsonl = open(path, "a") if enabled else None
    self._tb = None
    if enabled and tensorboard:
      from tensorboardX import SummaryWriter
      self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"), purge_step=initial_step + 1)
    show_bar = enabled and progress and sys.stderr.isatty() and not os.environ.get("CI")
    self._bar = tqdm(total=total_steps, initial=initial_step, dynamic_ncols=True) if show_bar else None

  def write(self, step: int, split: str, scalars: dict[str, float]) -> None:
    if not self.enabled:
      return
    row = {"step": int(step), "split": split, **{k: _finite_or_none(float(v)) for k, v in scalars.items()}}
    self._jsonl.write(json.dumps(row) + "\n")
    self._jsonl.flush()
    if self._tb is not None:
      for k, v in scalars.items():
        self._tb.add_scalar(f"{split}/{k}", float(v), int(step))
    for sink in self._sinks:
      sink.write(int(step), split, scalars)
    if self._bar is not None and split == "train":
      self._bar.set_postfix(loss=f"{scalars.get('loss', float('nan')):.4f}")
    elif self._bar is None:
      shown = " ".join(f"{k}={float(v):.4g}" for k, v in scalars.items())
      print(f"[{split} step {step}] {shown}", flush=True)

  def advance(self, n: int = 1) -> None:
    if self._bar is not None:
      self._bar.update(n)

  def close(self) -> None:
    if self._bar is not None:
      self._bar.close()
    if self._tb is not None:
      self._tb.close()
    if self._jsonl is not None:
      self._jsonl.close()
    for sink in self._sinks:
      sink.close()


def read_metrics(workdir: str) -> list[dict]:
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]
