"""The benchmark scripts run end to end at tiny sizes (their numbers are not checked, only that they work)."""
import json
import subprocess
import sys

from conftest import REPO


def test_decode_smoke(tmp_path):
  out = tmp_path / "decode.json"
  # one torch thread: on a busy 2-core machine torch's spinning worker threads can take seconds per token
  proc = subprocess.run([sys.executable, "benchmarks/decode.py", "--smoke", "--torch_threads=1", f"--out={out}"],
                        cwd=REPO, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "| batch | engine tok/s |" in proc.stdout
  rows = json.loads(out.read_text())["rows"]
  assert [r["batch"] for r in rows] == [1, 2]
  assert all(r["engine_tok_s"] > 0 and r["naive_tok_s"] > 0 and r["transformers_tok_s"] > 0 for r in rows)
  # same weights, same greedy decoding: the engine and transformers agree on the first tokens at least
  assert all(r["agree_transformers"]["mean_common_prefix"] >= 1 for r in rows)
