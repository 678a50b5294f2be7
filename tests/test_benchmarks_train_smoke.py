"""benchmarks/train_step.py runs end to end at its tiny --smoke size (its numbers are not checked, only that every
row ran and reported what the README table is built from)."""
import json
import subprocess
import sys

from conftest import REPO

ROW_KEYS = {"step_s", "tokens_s", "mfu", "peak_mem_mb", "matmul_peak_flops", "model_flops_per_step", "first_loss"}


def test_train_step_benchmark_smoke(tmp_path):
  out = tmp_path / "train_step.json"
  # one torch thread: on a busy 2-core machine torch's spinning OpenMP threads can take seconds per step
  proc = subprocess.run([sys.executable, "benchmarks/train_step.py", "--smoke", "--torch_threads=1", f"--out={out}"],
                        cwd=REPO, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "| row | step ms | tokens/s | MFU |" in proc.stdout
  result = json.loads(out.read_text())
  rows = result["rows"]
  assert set(rows) == {"jax_full", "jax_lora", "jax_reward", "torch_eager", "hf_eager"}
  for name, row in rows.items():
    assert ROW_KEYS <= set(row), (name, sorted(ROW_KEYS - set(row)))
    assert row["step_s"] > 0 and row["tokens_s"] > 0 and row["peak_mem_mb"] > 0 and row["mfu"] > 0, name
  # untrained models start near log(vocab) in both frameworks (the same work is being timed)
  assert abs(rows["jax_full"]["first_loss"] - rows["torch_eager"]["first_loss"]) < 0.5
  assert {"rollout_tok_s", "ref_logprobs_tok_s", "update_tok_s"} <= set(result["grpo"])
