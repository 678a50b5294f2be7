"""The generic loop: loss falls, 1 device == 8 devices, exact resume, non-finite steps are skipped."""
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from conftest import REPO, tiny_config
from jaxllm import runtime, train
from jaxllm.data.pipelines import lm_batch
from jaxllm.metrics import read_metrics
from jaxllm.stages import pretrain
from jaxllm.state import make_optimizer


def _train_losses(workdir) -> list[float]:
  return [r["loss"] for r in read_metrics(str(workdir)) if r["split"] == "train"]


def test_loss_falls_on_a_tiny_overfit_batch(tmp_path, tokenizer_dir):
  config = tiny_config("pretrain", tmp_path, tokenizer_dir, steps=40, **{"optim.warmup_steps": 2})
  env = runtime.prepare(config)
  flat = pretrain.token_stream(env, ["Mia has 7 apples. She buys 5 more. How many? 7 + 5 = 12 #### 12"] * 40)
  batch = lm_batch(flat, np.arange(8) % ((len(flat) - 1) // 64), 64, env.tokenizer.eot_id)

  class Same:
    def next(self, state):
      return batch

    def get_state(self):
      return {}

    def set_state(self, s):
      pass

  summary = train.fit(env, train.Task(loss="pretrain", batches=Same()))
  losses = _train_losses(tmp_path)
  assert summary["step"] == 40
  assert losses[-1] < 0.3 * losses[0], losses


def _run_pretrain(workdir, devices: int, tokenizer_dir: str, mesh: tuple[int, int, int], steps=5):
  """python run.py in a fresh process with `devices` fake CPU devices; returns its train losses."""
  data, fsdp, tensor = mesh
  env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}", "JAX_PLATFORMS": "cpu"}
  cmd = [sys.executable, "run.py", "--config=configs/pretrain.py:tiny", f"--config.workdir={workdir}",
         f"--config.tokenizer.path={tokenizer_dir}", f"--config.steps={steps}", "--config.log.every=1",
         f"--config.mesh.data={data}", f"--config.mesh.fsdp={fsdp}", f"--config.mesh.tensor={tensor}",
         "--config.sample.num=0", "--config.log.tensorboard=False"]
  proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return _train_losses(workdir)


@pytest.mark.slow
def test_one_device_equals_eight_devices(tmp_path, tokenizer_dir):
  one = _run_pretrain(tmp_path / "one", 1, tokenizer_dir, (1, 1, 1))
  eight = _run_pretrain(tmp_path / "eight", 8, tokenizer_dir, (2, 2, 2))
  assert len(one) == len(eight) == 5
  np.testing.assert_allclose(eight, one, rtol=1e-5)


def test_resume_continues_exactly(tmp_path, tokenizer_dir):
  common = {"log.every": 1, "optim.decay_steps": 12, "checkpoint.every": 6, "sample.num": 0}
  straight = tiny_config("pretrain", tmp_path / "straight", tokenizer_dir, steps=12, **common)
  pretrain.run(straight)
  first = tiny_config("pretrain", tmp_path / "resumed", tokenizer_dir, steps=6, **common)
  pretrain.run(first)
  second = tiny_config("pretrain", tmp_path / "resumed", tokenizer_dir, steps=12, **common)
  summary = pretrain.run(second)
  assert summary["step"] == 12
  a = [r for r in read_metrics(str(tmp_path / "straight")) if r["split"] == "train"]
  b = [r for r in read_metrics(str(tmp_path / "resumed")) if r["split"] == "train"]
  assert [r["step"] for r in a] == [r["step"] for r in b] == list(range(1, 13))
  assert [r["loss"] for r in a] == [r["loss"] for r in b]  # bitwise


def test_non_finite_step_is_skipped_and_counted(tmp_path, tokenizer_dir):
  # No warmup: a skipped step leaves the optimizer's step count alone, so warmup would keep the lr at 0.
  config = tiny_config("pretrain", tmp_path, tokenizer_dir, **{"optim.warmup_steps": 0})
  env = runtime.prepare(config)
  tx = make_optimizer(env.config.optim, 10)
  state, _ = train.init_state(env, train.Task(loss="pretrain", batches=None), tx)
  step = jax.jit(train.make_train_step(env, "pretrain", tx, lambda s: 0.0))
  tokens = np.ones((8, 64), np.int32)
  batch = {"tokens": tokens, "targets": tokens, "positions": np.tile(np.arange(64, dtype=np.int32), (8, 1)),
           "segment_ids": np.ones_like(tokens), "loss_mask": np.ones((8, 64), np.float32)}
  bad = dict(batch, loss_mask=batch["loss_mask"].copy())
  bad["loss_mask"][0, 0] = np.nan
  before = jax.device_get(state.params)
  state2, metrics = step(state, bad)
  assert int(state2.skipped) == 1 and int(state2.step) == 1 and int(metrics["skipped_steps"]) == 1
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(state2.params), before)
  state3, _ = step(state2, batch)
  assert int(state3.skipped) == 1
  changed = jax.tree.map(lambda a, b: not np.array_equal(a, b), jax.device_get(state3.params), before)
  assert any(jax.tree.leaves(changed))


def test_pretrain_writes_the_contract(tmp_path, tokenizer_dir):
  config = tiny_config("pretrain", tmp_path, tokenizer_dir, steps=10, **{"log.tensorboard": True})
  summary = pretrain.run(config)
  rows = read_metrics(str(tmp_path))
  train_rows = [r for r in rows if r["split"] == "train"]
  eval_rows = [r for r in rows if r["split"] == "eval"]
  assert all("loss" in r and "tokens_per_sec" in r for r in train_rows)
  assert eval_rows and eval_rows[-1]["step"] == 10 and "ppl" in eval_rows[-1]
  assert json.load(open(tmp_path / "config.json"))["model"]["vocab_size"] % 64 == 0
  assert os.path.isdir(tmp_path / "checkpoints" / "10")
  assert os.listdir(tmp_path / "tensorboard")
  assert os.path.exists(tmp_path / "tokenizer" / "tokenizer.tiktoken")
  assert summary["step"] == 10


def test_incompatible_workdir_is_refused(tmp_path, tokenizer_dir):
  pretrain.run(tiny_config("pretrain", tmp_path, tokenizer_dir, steps=2, **{"sample.num": 0}))
  with pytest.raises(ValueError, match="model.d_model"):
    pretrain.run(tiny_config("pretrain", tmp_path, tokenizer_dir, steps=4, **{"model.d_model": 32}))
