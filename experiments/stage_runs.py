"""Run one stage as `python run.py ...` in a subprocess and time it: what the experiment scripts share."""
from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(config: str, workdir: str, *overrides: str) -> tuple[dict, dict]:
  """python run.py --config=<config> --config.workdir=<workdir> <overrides> -> (its final JSON line, timing).

  Timing: wall seconds, CPU seconds (user + system) and the 1-minute load average at the end. On a shared
  machine the CPU time is the fairer measure: cpu_seconds / 2 is about the wall time on 2 idle cores.
  """
  cmd = [sys.executable, "run.py", f"--config={config}", f"--config.workdir={workdir}",
         "--config.log.progress=False", *overrides]
  print("$ " + " ".join(cmd[1:]), flush=True)
  start, cpu = time.perf_counter(), _child_cpu()
  proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
  timing = {"wall_seconds": round(time.perf_counter() - start, 1), "cpu_seconds": round(_child_cpu() - cpu, 1),
            "load_average": os.getloadavg()[0]}
  if proc.returncode != 0:
    sys.exit(f"failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
  samples = [line for line in proc.stdout.splitlines() if not line.startswith("{")]
  print("\n".join(samples[-12:]), flush=True)
  return json.loads(proc.stdout.strip().splitlines()[-1]), timing


def _child_cpu() -> float:
  usage = resource.getrusage(resource.RUSAGE_CHILDREN)
  return usage.ru_utime + usage.ru_stime
