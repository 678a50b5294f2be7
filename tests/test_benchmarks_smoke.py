"""The benchmark scripts run end to end at their tiny --smoke sizes (their numbers are not checked, only that every
row ran and reported what the docs/performance.md tables are built from)."""
import json
import subprocess
import sys

import pytest

from conftest import REPO

pytestmark = pytest.mark.slow  # every test here starts a benchmark script

ROW_KEYS = {"step_s", "tokens_s", "mfu", "peak_mem_mb", "matmul_peak_flops", "model_flops_per_step", "first_loss"}


def _smoke(script: str, out, timeout: int) -> tuple[str, dict]:
  """(stdout, the JSON written to `out`) of `benchmarks/<script> --smoke`."""
  # one torch thread: on a busy 2-core machine torch's spinning OpenMP threads can take seconds per step
  proc = subprocess.run([sys.executable, f"benchmarks/{script}", "--smoke", "--torch_threads=1", f"--out={out}"],
                        cwd=REPO, capture_output=True, text=True, timeout=timeout)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return proc.stdout, json.loads(out.read_text())


def test_decode_smoke(tmp_path):
  stdout, result = _smoke("decode.py", tmp_path / "decode.json", timeout=300)
  assert "| batch | engine tok/s |" in stdout
  rows = result["rows"]
  assert [r["batch"] for r in rows] == [1, 2]
  assert all(r["engine_tok_s"] > 0 and r["naive_tok_s"] > 0 and r["transformers_tok_s"] > 0 for r in rows)
  # same weights, same greedy decoding: the engine and transformers agree on the first tokens at least
  assert all(r["agree_transformers"]["mean_common_prefix"] >= 1 for r in rows)


def test_train_step_benchmark_smoke(tmp_path):
  stdout, result = _smoke("train_step.py", tmp_path / "train_step.json", timeout=600)
  assert "| row | step ms | tokens/s | MFU |" in stdout
  rows = result["rows"]
  assert set(rows) == {"jax_full", "jax_lora", "jax_reward", "torch_eager", "hf_eager"}
  for name, row in rows.items():
    assert ROW_KEYS <= set(row), (name, sorted(ROW_KEYS - set(row)))
    assert row["step_s"] > 0 and row["tokens_s"] > 0 and row["peak_mem_mb"] > 0 and row["mfu"] > 0, name
  # untrained models start near log(vocab) in both frameworks (the same work is being timed)
  assert abs(rows["jax_full"]["first_loss"] - rows["torch_eager"]["first_loss"]) < 0.5
  assert {"rollout_tok_s", "ref_logprobs_tok_s", "update_tok_s"} <= set(result["grpo"])


def test_op_profile_smoke(tmp_path):
  """The op-level profile reads a real trace back: the products dominate, and each is traced to its HLO op."""
  out = tmp_path / "op_profile.json"
  proc = subprocess.run([sys.executable, "benchmarks/op_profile.py", "--smoke", f"--out={out}"], cwd=REPO,
                        capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  result = json.loads(out.read_text())
  assert result["wall_ms"] > 0 and sum(result["ops_ms"].values()) > 0
  products = sum(ms for kind, ms in result["ops_ms"].items() if kind in ("ynn_fusion", "dot", "dot_general"))
  assert products > 0
  # Every listed op is found in the step's compiled HLO; the largest carries the jax op it lowers (a small
  # fusion may carry no op_name, and on a loaded machine one can make the list).
  assert result["top_ops"] and all(p["hlo"] != "(inside a fusion)" for p in result["top_ops"])
  assert "jit(train_step)" in result["top_ops"][0]["hlo"]


def test_matmul_smoke(tmp_path):
  """The products benchmark times every product of a step in both frameworks and sums them per step."""
  stdout, result = _smoke("matmul.py", tmp_path / "matmul.json", timeout=300)
  assert "| product | [m, k] x [k, n] |" in stdout
  s = result["model"]
  # 8 weights (7 projections + head) x forward / input gradient / weight gradient, the k and v (and gate and up)
  # products shared: the step's count of products and its FLOPs come out whole
  assert sum(p["count"] for p in result["products"]) == 3 * (7 * s["n_layers"] + 1)
  tokens, d, f, dh = s["batch"] * s["seq"], s["d_model"], s["mlp"], s["d_model"] // s["n_heads"]
  per_layer = 2 * d * s["n_heads"] * dh + 2 * d * s["n_kv_heads"] * dh + 3 * d * f
  assert result["products_flops"] == 3 * 2 * tokens * (s["n_layers"] * per_layer + d * s["vocab"])
  assert all(p["jax_s"] > 0 and p["torch_s"] > 0 for p in result["products"])
  assert result["products_s"]["jax"] > 0 and result["products_s"]["torch"] > 0


def _transformers_serve_missing() -> str:
  """Why `transformers serve --continuous-batching` cannot run here ('' when it can)."""
  import importlib.util
  import shutil

  if not shutil.which("transformers"):
    return "no `transformers` command on PATH"
  missing = [m for m in ("fastapi", "uvicorn", "openai", "accelerate") if importlib.util.find_spec(m) is None]
  return f"`transformers serve` needs {', '.join(missing)}" if missing else ""


def test_serve_step_smoke(tmp_path):
  """The decode-step benchmark times a step at every block count and over one whole-context block."""
  out = tmp_path / "serve_step.json"
  proc = subprocess.run([sys.executable, "benchmarks/serve_step.py", "--smoke", f"--out={out}"], cwd=REPO,
                        capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  step_ms = json.loads(out.read_text())["step_ms"]
  assert list(step_ms) == [f"{n} x 16 slots" for n in (1, 2, 3, 4)] + ["1 x 64 slots (whole context)"]
  assert all(ms > 0 for ms in step_ms.values())


def test_serve_smoke(tmp_path):
  """All three servers answer 1 and 2 concurrent streamed clients with every requested token, and the table
  has both ratios."""
  if reason := _transformers_serve_missing():
    pytest.skip(reason)
  stdout, result = _smoke("serve.py", tmp_path / "serve.json", timeout=600)
  assert "| clients | jaxllm tok/s | transformers tok/s | jaxllm_1 tok/s | jaxllm / transformers |" in stdout
  for name in ("jaxllm", "transformers", "jaxllm_1"):
    rows = result["servers"][name]
    assert isinstance(rows, list), (name, rows)  # a dict holds the error of a server that failed
    assert [r["clients"] for r in rows] == [1, 2]
    assert all(r["tokens_per_s"] > 0 and r["mean_tokens_per_request"] == result["answer_tokens"] for r in rows), name


def test_grpo_trl_smoke(tmp_path):
  """The GRPO side-by-side runs both sides on one shared model folder: same prompt ids, every part timed."""
  pytest.importorskip("trl")
  stdout, result = _smoke("grpo_trl.py", tmp_path / "grpo_trl.json", timeout=600)
  assert "jaxllm / TRL steps/s:" in stdout
  for side in ("jaxllm", "trl"):
    r = result["sides"][side]
    assert r["step_s"] > 0 and all(r[f"{part}_s"] >= 0 for part in ("sampling", "reference", "update")), side
  assert result["ratio_steps_per_s"] > 0
  # the same chat template on both sides: TRL tokenized the conversational prompts to jaxllm's ids
  assert result["prompt_lens"]["jaxllm"] == result["prompt_lens"]["trl"]
