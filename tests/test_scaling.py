"""Scaling: gradient accumulation is exact, FSDP really splits memory, and 2 processes x 4 devices train like
1 process x 8 devices. Multi-device runs are subprocesses (the fake device count is fixed at jax import)."""
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from conftest import REPO, free_port, tiny_config
from jaxllm import runtime, train
from jaxllm.data.pipelines import lm_batch
from jaxllm.metrics import read_metrics
from jaxllm.state import make_optimizer


def test_gradient_accumulation_equals_one_big_batch(tmp_path, tokenizer_dir):
  config = tiny_config("pretrain", tmp_path, tokenizer_dir, **{"data.batch_size": 8})
  env = runtime.prepare(config)
  tx = make_optimizer(env.config.optim, 10)
  state, _ = train.init_state(env, train.Task(loss="pretrain", batches=None), tx)
  flat = np.random.default_rng(0).integers(1, 200, size=4000).astype(np.int32)
  batch = lm_batch(flat, np.arange(8) * 3, 64, env.tokenizer.eot_id)
  batch["loss_mask"] = (np.random.default_rng(1).random((8, 64)) < 0.5).astype(np.float32)  # uneven slices
  results = []
  for k in (1, 4):
    env.config.optim.grad_accum = k
    step = jax.jit(train.make_train_step(env, "pretrain", tx, lambda s: 0.0))
    new_state, metrics = step(state, batch)
    results.append((jax.device_get(new_state.params), float(metrics["loss"])))
  (p1, l1), (p4, l4) = results
  np.testing.assert_allclose(l4, l1, rtol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), p4, p1)


_MEMORY_SCRIPT = """
import json, sys, jax
sys.path.insert(0, {repo!r})
from configs import pretrain
from jaxllm import runtime, train
from jaxllm.state import make_optimizer
config = pretrain.get_config()
config.workdir = {workdir!r}
config.tokenizer.path = {tok!r}
config.model.update(d_model=256, n_heads=8, n_kv_heads=8, mlp_dim=1024)
config.mesh.update(data=1, fsdp=8, tensor=1)
env = runtime.prepare(config)
state, _ = train.init_state(env, train.Task(loss="pretrain", batches=None), make_optimizer(env.config.optim, 10))
first = jax.devices()[0]
leaves = jax.tree.leaves((state.params, state.opt_state))
total = sum(x.nbytes for x in leaves)
on_first = sum(s.data.nbytes for x in leaves for s in x.addressable_shards if s.device == first)
print(json.dumps({{"total": total, "on_first": on_first}}))
"""


def _env(devices: int) -> dict:
  return {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}", "JAX_PLATFORMS": "cpu"}


@pytest.mark.slow
def test_fsdp_splits_params_and_optimizer_state(tmp_path, tokenizer_dir):
  script = _MEMORY_SCRIPT.format(repo=str(REPO), workdir=str(tmp_path), tok=tokenizer_dir)
  proc = subprocess.run([sys.executable, "-c", script], env=_env(8), capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  sizes = json.loads(proc.stdout.strip().splitlines()[-1])
  assert sizes["on_first"] <= sizes["total"] / 8 * 1.05, sizes


def _pretrain_cmd(workdir, tokenizer_dir, *extra):
  return [sys.executable, "run.py", "--config=configs/pretrain.py:tiny", f"--config.workdir={workdir}",
          f"--config.tokenizer.path={tokenizer_dir}", "--config.steps=5", "--config.log.every=1",
          "--config.mesh.data=2", "--config.mesh.fsdp=2", "--config.mesh.tensor=2", "--config.sample.num=0",
          "--config.log.tensorboard=False", *extra]


@pytest.mark.slow
def test_two_processes_match_one_process(tmp_path, tokenizer_dir):
  single = subprocess.run(_pretrain_cmd(tmp_path / "single", tokenizer_dir), cwd=REPO, env=_env(8),
                          capture_output=True, text=True, timeout=600)
  assert single.returncode == 0, single.stderr[-3000:]
  port = free_port()
  procs = [subprocess.Popen(_pretrain_cmd(tmp_path / "multi", tokenizer_dir,
                                          f"--config.dist.coordinator=127.0.0.1:{port}",
                                          "--config.dist.num_processes=2", f"--config.dist.process_id={i}"),
                            cwd=REPO, env=_env(4), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
           for i in range(2)]
  outputs = [p.communicate(timeout=600) for p in procs]
  for p, (_, err) in zip(procs, outputs):
    assert p.returncode == 0, err[-3000:]
  losses = lambda w: [r["loss"] for r in read_metrics(str(w)) if r["split"] == "train"]
  assert len(losses(tmp_path / "multi")) == 5  # process 0 alone writes metrics
  np.testing.assert_allclose(losses(tmp_path / "multi"), losses(tmp_path / "single"), rtol=1e-5)
  assert os.path.isdir(tmp_path / "multi" / "checkpoints" / "5")
