"""Run a sweep: every setting x every seed as its own `run.py` process, then tables and plots.

  python experiments/sweep.py experiments/sweeps/sft_lr.py [--out runs/sweeps/sft_lr] [--parallel 2]

A sweep file defines:
  BASE = "configs/sft.py:tiny"                  # config (with optional :arg)
  SEEDS = [0, 1, 2]
  METRICS = ["eval_accuracy", "eval_loss"]      # keys of each run's final JSON line
  OVERRIDES = {"steps": 100}                    # optional, applied to every run
  def settings() -> list[dict]: ...             # one dict of dotted-key overrides per setting
Runs already finished (a result.json in their folder) are skipped, so re-running continues a sweep; a failing
run is recorded as failed (its log kept) and the others go on. Writes sweep.csv (one row a run), sweep.md
(mean ± std over seeds per setting) and one PNG per metric.

With `--wandb` (or log.wandb=True in OVERRIDES) every run logs to Weights & Biases in the group named after the
sweep, as "<setting> seed=<seed>", and sweep.md with its plots is logged as the group's report run; other
log.wandb_* keys go in OVERRIDES (e.g. {"log.wandb_project": "jaxllm"}).
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import hashlib
import importlib.util
import json
import os
import subprocess
import sys
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
from configs import base  # noqa: E402
from jaxllm import report, wandb_sink  # noqa: E402


@dataclasses.dataclass
class Run:
  setting: dict
  seed: int
  workdir: str

  @property
  def label(self) -> str:
    return ", ".join(f"{k}={v}" for k, v in self.setting.items()) or "base"


def load_sweep(path: str):
  # named after its file, so tables say which sweep they come from
  spec = importlib.util.spec_from_file_location(os.path.splitext(os.path.basename(path))[0], path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  for name in ("BASE", "SEEDS", "METRICS", "settings"):
    if not hasattr(module, name):
      raise ValueError(f"sweep file {path} does not define {name}")
  return module


def plan(sweep, out: str) -> list[Run]:
  runs = []
  for setting in sweep.settings():
    key = hashlib.sha1(json.dumps(setting, sort_keys=True).encode()).hexdigest()[:8]
    for seed in sweep.SEEDS:
      runs.append(Run(setting, seed, os.path.join(out, f"{key}_seed{seed}")))
  return runs


def wandb_on(sweep) -> bool:
  return str(getattr(sweep, "OVERRIDES", {}).get("log.wandb", False)).lower() in ("true", "1")


def command(sweep, run: Run) -> list[str]:
  overrides = {**getattr(sweep, "OVERRIDES", {}), **run.setting, "seed": run.seed, "workdir": run.workdir}
  if wandb_on(sweep):
    overrides.update({"log.wandb_group": sweep.__name__, "log.wandb_run_name": f"{run.label} seed={run.seed}"})
  return [sys.executable, os.path.join(REPO, "run.py"), f"--config={os.path.join(REPO, sweep.BASE)}"] + [
      f"--config.{k}={v}" for k, v in overrides.items()]


def _finish(run: Run, proc: subprocess.Popen, log, started: float) -> None:
  log.close()
  with open(os.path.join(run.workdir, "run.log")) as f:
    lines = [line for line in f.read().splitlines() if line.strip()]
  result = {"status": "failed", "returncode": proc.returncode, "seconds": time.time() - started}
  if proc.returncode == 0 and lines:
    try:
      result = {"status": "ok", "seconds": time.time() - started, **json.loads(lines[-1])}
    except json.JSONDecodeError:
      pass
  with open(os.path.join(run.workdir, "result.json"), "w") as f:
    json.dump({"setting": run.setting, "seed": run.seed, **result}, f, indent=1)
  print(f"[{result['status']}] {run.label} seed={run.seed} ({result['seconds']:.0f}s)", flush=True)


def execute(sweep, runs: list[Run], parallel: int) -> None:
  todo = [r for r in runs if not os.path.exists(os.path.join(r.workdir, "result.json"))]
  print(f"{len(runs)} runs, {len(runs) - len(todo)} already finished, {len(todo)} to go", flush=True)
  active: list[tuple[Run, subprocess.Popen, object, float]] = []
  while todo or active:
    while todo and len(active) < parallel:
      run = todo.pop(0)
      os.makedirs(run.workdir, exist_ok=True)
      log = open(os.path.join(run.workdir, "run.log"), "w")
      proc = subprocess.Popen(command(sweep, run), cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
      active.append((run, proc, log, time.time()))
    time.sleep(0.5)
    for item in list(active):
      if item[1].poll() is not None:
        _finish(item[0], item[1], item[2], item[3])
        active.remove(item)


def summarise(sweep, runs: list[Run], out: str) -> str:
  results = []
  for run in runs:
    with open(os.path.join(run.workdir, "result.json")) as f:
      results.append((run, json.load(f)))
  with open(os.path.join(out, "sweep.csv"), "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(["setting", "seed", "status", "seconds"] + sweep.METRICS)
    for run, res in results:
      writer.writerow([run.label, run.seed, res["status"], f"{res['seconds']:.1f}"] +
                      [res.get(m, "") for m in sweep.METRICS])
  labels = list(dict.fromkeys(run.label for run in runs))
  rows, stats = [], {m: ([], []) for m in sweep.METRICS}
  for label in labels:
    group = [res for run, res in results if run.label == label]
    ok = [res for res in group if res["status"] == "ok"]
    row = [label, f"{len(ok)}/{len(group)}"]
    for m in sweep.METRICS:
      values = np.array([res[m] for res in ok if isinstance(res.get(m), (int, float))], dtype=float)
      mean = float(values.mean()) if len(values) else float("nan")
      std = float(values.std(ddof=1)) if len(values) > 1 else 0.0
      stats[m][0].append(mean)
      stats[m][1].append(std)
      row.append(f"{report.fmt(mean)} ± {report.fmt(std, 2)}" if len(values) else "–")
    rows.append(row)
  plots = [report.plot_bars(os.path.join(out, f"{m}.png"), labels, *stats[m], title=m,
                            ylabel=f"{m} (mean ± std over seeds)") for m in sweep.METRICS]
  text = (f"# Sweep `{sweep.__name__}` over {sweep.BASE}\n\n"
          f"Seeds: {sweep.SEEDS}. Mean ± sample std over the seeds that finished.\n\n"
          + report.markdown_table(["setting", "runs ok"] + sweep.METRICS, rows) + "\n\n"
          + "\n".join(f"![{p}]({p})" for p in plots) + "\n")
  with open(os.path.join(out, "sweep.md"), "w") as f:
    f.write(text)
  if wandb_on(sweep):
    wandb_sink.log_report(report_config(sweep, out), os.path.join(out, "sweep.md"),
                          [os.path.join(out, p) for p in plots])
  return text


def report_config(sweep, out: str):
  """The config the sweep's report run is logged with: base defaults, the sweep's log.* overrides, its group."""
  config = base.get_config()
  config.stage, config.workdir = "sweep", out
  config.update_from_flattened_dict({k: v for k, v in getattr(sweep, "OVERRIDES", {}).items() if k.startswith("log.")})
  config.log.wandb_group = sweep.__name__
  return config


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("sweep_file")
  parser.add_argument("--out", default="", help="folder for the runs and tables (default runs/sweeps/<name>)")
  parser.add_argument("--parallel", type=int, default=1, help="runs at a time, each its own process")
  parser.add_argument("--wandb", action="store_true", help="log every run, grouped, and the report to W&B")
  args = parser.parse_args()
  sweep = load_sweep(args.sweep_file)
  if args.wandb:
    sweep.OVERRIDES = {**getattr(sweep, "OVERRIDES", {}), "log.wandb": True}
  out = args.out or os.path.join("runs", "sweeps", os.path.splitext(os.path.basename(args.sweep_file))[0])
  os.makedirs(out, exist_ok=True)
  runs = plan(sweep, os.path.abspath(out))
  execute(sweep, runs, args.parallel)
  print(summarise(sweep, runs, out))


if __name__ == "__main__":
  main()
