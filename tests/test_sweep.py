"""The sweep runner: runs every setting x seed, survives a failing run, skips finished runs, writes tables."""
import csv
import json
import os
import subprocess
import sys

import pytest

from conftest import REPO

SWEEP = """
BASE = "configs/pretrain.py:tiny"
SEEDS = [0, 1]
METRICS = ["eval_loss"]
OVERRIDES = {{"steps": 3, "sample.num": 0, "log.tensorboard": False, "tokenizer.path": {tok!r}, "eval.every": 3}}
def settings():
  return [{{"optim.lr": 0.003}}, {{"model.n_kv_heads": 3}}]  # the second is invalid: both its runs fail
"""


@pytest.mark.slow
def test_sweep_runs_records_failures_and_resumes(tmp_path, tokenizer_dir):
  sweep_file = tmp_path / "tiny_sweep.py"
  sweep_file.write_text(SWEEP.format(tok=tokenizer_dir))
  out = tmp_path / "out"
  cmd = [sys.executable, "experiments/sweep.py", str(sweep_file), "--out", str(out), "--parallel", "2"]
  first = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
  assert first.returncode == 0, first.stderr[-3000:]
  with open(out / "sweep.csv") as f:
    rows = list(csv.DictReader(f))
  assert sorted(r["status"] for r in rows) == ["failed", "failed", "ok", "ok"]
  assert all(float(r["eval_loss"]) > 0 for r in rows if r["status"] == "ok")
  table = (out / "sweep.md").read_text()
  assert "optim.lr=0.003" in table and "2/2" in table and "0/2" in table and " ± " in table
  assert (out / "eval_loss.png").stat().st_size > 0
  again = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
  assert "4 already finished, 0 to go" in again.stdout
  ok_dirs = [d for d in os.listdir(out) if os.path.exists(out / d / "result.json")
             and json.load(open(out / d / "result.json"))["status"] == "ok"]
  assert len(ok_dirs) == 2
