"""Kill -9 soak: a tiny pretraining run killed at random points (many during asynchronous checkpoint saves) and
restarted until it finishes, against the same run uninterrupted.

  python benchmarks/soak.py --kills=30            # ~10 min on 2 contended CPU cores
  python benchmarks/soak.py --kills=2 --steps=12  # what tests/faults runs in CI

Reports the resumes (every restart after a kill must print "resumed from ... at step k" or start from 0 when no
checkpoint was complete yet), the kills that landed while a save was in flight (an orbax temporary folder in
checkpoints/ at the moment of the kill), duplicated and missing train rows in metrics.jsonl, and whether every
logged loss is bitwise identical to the uninterrupted run's. Writes benchmarks/results/soak.json. Every random
choice (which step to kill after, how long past it) comes from --seed.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

_STEP_LINE = re.compile(r"^\[train step (\d+)\]")
_RESUMED = re.compile(r"resumed from .* at step (\d+)")


def _command(workdir: str, tokenizer: str, steps: int, every: int) -> list[str]:
  return [sys.executable, "run.py", "--config=configs/pretrain.py:tiny", f"--config.workdir={workdir}",
          f"--config.tokenizer.path={tokenizer}", f"--config.steps={steps}", "--config.log.every=1",
          f"--config.checkpoint.every={every}", "--config.checkpoint.keep=2", "--config.eval.every=1000000",
          f"--config.optim.decay_steps={steps}", "--config.sample.num=0", "--config.log.tensorboard=False",
          "--config.log.progress=False"]


def _environment(cache: str) -> dict:
  # One XLA compilation cache for every restart (the caller's, if it has one): the same program, so the same
  # numbers, and restarts skip recompiling (what a preempted job on a shared cache does too).
  return {**os.environ, "JAX_PLATFORMS": "cpu", "JAX_COMPILATION_CACHE_DIR": cache,
          "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0", "PYTHONUNBUFFERED": "1"}


def _train_rows(workdir: str) -> list[dict]:
  """Train rows of metrics.jsonl; a line cut by a kill is skipped (the next start drops it from the file)."""
  rows = []
  path = os.path.join(workdir, "metrics.jsonl")
  if os.path.exists(path):
    with open(path) as f:
      for line in f:
        try:
          row = json.loads(line)
        except ValueError:
          continue
        if row.get("split") == "train":
          rows.append(row)
  return rows


def _unfinished_saves(workdir: str) -> set[str]:
  """orbax's temporary folders: a save that has not been renamed into place (yet)."""
  folder = os.path.join(workdir, "checkpoints")
  return {name for name in os.listdir(folder) if "tmp" in name} if os.path.isdir(folder) else set()


def _run_until(cmd: list[str], env: dict, kill_after: int | None, delay: float) -> tuple[int, str, bool]:
  """Start `cmd`; once it logs train step `kill_after`, wait `delay` s and kill -9 it (None: let it finish).
  Returns (exit status, its output, whether it was killed)."""
  proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  out = []
  for line in proc.stdout:
    out.append(line)
    m = _STEP_LINE.match(line)
    if kill_after is not None and m and int(m.group(1)) >= kill_after:
      time.sleep(delay)
      proc.send_signal(signal.SIGKILL)
      proc.wait()
      return proc.returncode, "".join(out), True
  proc.wait()
  return proc.returncode, "".join(out), False


def soak(kills: int, steps: int, every: int, seed: int, root: str, tokenizer: str = "", log=print) -> dict:
  """Run the soak in `root` (a fresh folder); `tokenizer`: a tokenizer folder to use ('' = train the tiny one)."""
  rng = random.Random(seed)
  env = _environment(os.environ.get("JAX_COMPILATION_CACHE_DIR") or os.path.join(root, "xla_cache"))
  if not tokenizer:
    tokenizer = os.path.join(root, "tokenizer")
    subprocess.run([sys.executable, "run.py", "--config=configs/tokenizer.py:tiny",
                    f"--config.workdir={tokenizer}"], cwd=REPO, env=env, check=True, capture_output=True)
  straight, soaked = os.path.join(root, "straight"), os.path.join(root, "soaked")
  t0 = time.perf_counter()
  rc, out, _ = _run_until(_command(straight, tokenizer, steps, every), env, None, 0.0)
  if rc != 0:
    raise RuntimeError(f"the uninterrupted run failed:\n{out[-3000:]}")
  log(f"uninterrupted run: {steps} steps in {time.perf_counter() - t0:.1f}s")

  cmd = _command(soaked, tokenizer, steps, every)
  done_kills = during_save = resumes = fresh_starts = 0
  restarts, failures = [], []
  while True:
    last = _train_rows(soaked)
    at = max((r["step"] for r in last), default=0)
    kill_after = None
    if done_kills < kills:
      # A step at most `every` logged steps ahead (so the run gets past a save before most kills), then a delay
      # up to ~one step so the kill lands anywhere in it: in the step, in the flush, in an async save.
      kill_after = min(at + rng.randint(1, every + 1), steps - 1)
      if kill_after <= at:  # too close to the end to kill again: let the runs finish
        kill_after = None
    unfinished_before = _unfinished_saves(soaked)
    rc, out, killed = _run_until(cmd, env, kill_after, rng.uniform(0.0, 0.3))
    resumed = _RESUMED.search(out)
    restarts.append({"kill_after": kill_after, "killed": killed, "resumed_at": int(resumed.group(1)) if resumed
                     else None})
    if restarts[-1]["resumed_at"] is not None:
      resumes += 1
    elif len(restarts) > 1:
      fresh_starts += 1
    if killed:
      done_kills += 1
      during_save += bool(_unfinished_saves(soaked) - unfinished_before)
      continue
    if rc != 0:
      failures.append(out[-2000:])
      break
    if kill_after is None:
      break

  a, b = _train_rows(straight), _train_rows(soaked)
  steps_b = [r["step"] for r in b]
  result = {
      "kills": done_kills,
      "kills_during_async_save": during_save,
      "restarts": len(restarts) - 1,
      "resumes": resumes,
      "starts_from_zero_after_a_kill": fresh_starts,
      "duplicated_rows": len(steps_b) - len(set(steps_b)),
      "missing_rows": len(set(range(1, steps + 1)) - set(steps_b)),
      "losses_bitwise_identical": [r["loss"] for r in a] == [r["loss"] for r in b],
      "final_step": max(steps_b, default=0),
      "steps": steps,
      "checkpoint_every": every,
      "failures": failures,
      "rejected_checkpoints": sorted(os.listdir(os.path.join(soaked, "rejected_checkpoints")))
      if os.path.isdir(os.path.join(soaked, "rejected_checkpoints")) else [],
      "seconds": time.perf_counter() - t0,
  }
  return result


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--kills", type=int, default=30)
  parser.add_argument("--steps", type=int, default=0, help="0 = 3 * kills + 10")
  parser.add_argument("--every", type=int, default=2, help="checkpoint.every")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--out", default=os.path.join(REPO, "benchmarks", "results", "soak.json"))
  args = parser.parse_args()
  steps = args.steps or 3 * args.kills + 10
  root = tempfile.mkdtemp(prefix="jaxllm-soak-")
  try:
    result = soak(args.kills, steps, args.every, args.seed, root)
  finally:
    shutil.rmtree(root, ignore_errors=True)
  print(f"kills: {result['kills']} ({result['kills_during_async_save']} during an async save); restarts: "
        f"{result['restarts']}, resumed from a checkpoint: {result['resumes']}, from step 0 (no checkpoint yet): "
        f"{result['starts_from_zero_after_a_kill']}")
  print(f"metrics.jsonl: {result['duplicated_rows']} duplicated, {result['missing_rows']} missing train rows of "
        f"{steps}; losses bitwise identical to the uninterrupted run: {result['losses_bitwise_identical']}; "
        f"rejected checkpoints: {len(result['rejected_checkpoints'])}; failures: {len(result['failures'])}; "
        f"{result['seconds']:.0f}s")
  os.makedirs(os.path.dirname(args.out), exist_ok=True)
  with open(args.out, "w") as f:
    json.dump(result, f, indent=1)


if __name__ == "__main__":
  main()
