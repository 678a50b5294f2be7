"""Weights & Biases as a third place numbers go, beside metrics.jsonl and TensorBoard (`log.wandb=True`).

  python run.py --config=configs/sft.py --config.log.wandb=True --config.log.wandb_project=jaxllm
  WANDB_MODE=offline python run.py ...      # wandb's own switch: the run is kept under wandb/ for `wandb sync`

A run logs every scalar `MetricsWriter` writes, as `<split>/<name>` against the metric `step` (a custom step
axis, so a resumed run can log a step again), and the resolved config. The run id is kept in
workdir/wandb_run_id, so a run resumed in the same workdir continues the same W&B run. `log_report` adds a
pipeline's or sweep's report (markdown and plots) as one more run of their group. W&B stays optional: with
wandb missing, not logged in or unreachable, one line says so and the run goes on.
"""
from __future__ import annotations

import os
from typing import Any

import ml_collections

RUN_ID_FILE = "wandb_run_id"


class WandbSink:
  """A `MetricsWriter` sink over one open W&B run."""

  def __init__(self, run: Any):
    self._run = run
    run.define_metric("step")
    run.define_metric("*", step_metric="step")

  def write(self, step: int, split: str, scalars: dict[str, float]) -> None:
    self._run.log({"step": int(step), **{f"{split}/{k}": float(v) for k, v in scalars.items()}})

  def log_files(self, markdown: str, images: list[str]) -> None:
    import wandb

    with open(markdown) as f:
      self._run.summary["report"] = f.read()  # the results table, readable in the run's overview
    self._run.log({os.path.splitext(os.path.basename(p))[0]: wandb.Image(p) for p in images})
    self._run.save(markdown, base_path=os.path.dirname(markdown), policy="now")

  def close(self) -> None:
    self._run.finish()


def _warn(why: str) -> None:
  print(f"log.wandb=True but {why}; logging to metrics.jsonl / TensorBoard only", flush=True)


def open_sink(config: ml_collections.ConfigDict, *, name: str = "", job_type: str = "") -> WandbSink | None:
  """A sink for a W&B run of `config` (None when log.wandb is off or W&B cannot be used)."""
  log = config.log
  if not log.wandb:
    return None
  try:
    import wandb
  except ImportError:
    _warn("wandb is not installed (pip install 'jaxllm[wandb]')")
    return None
  id_path = os.path.join(config.workdir, RUN_ID_FILE)
  run_id = None
  if os.path.exists(id_path):
    with open(id_path) as f:
      run_id = f.read().strip() or None
  try:
    run = wandb.init(project=log.wandb_project or None, entity=log.wandb_entity or None,
                     name=name or log.wandb_run_name or os.path.basename(os.path.abspath(config.workdir)),
                     group=log.wandb_group or None, job_type=job_type or config.stage,
                     tags=[t.strip() for t in log.wandb_tags.split(",") if t.strip()] or None,
                     config=config.to_dict(), dir=config.workdir, id=run_id, resume="allow" if run_id else None)
  except Exception as e:  # wandb raises its own types for missing login, network, bad settings
    _warn(f"W&B could not start a run ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})")
    return None
  with open(id_path, "w") as f:
    f.write(run.id)
  return WandbSink(run)


def log_report(config: ml_collections.ConfigDict, markdown: str, images: list[str]) -> None:
  """Log a report (markdown + PNG plots) as a `report` run of config's W&B group (when log.wandb is on)."""
  sink = open_sink(config, name=f"{config.log.wandb_group or 'run'} report", job_type="report")
  if sink is not None:
    sink.log_files(markdown, images)
    sink.close()
