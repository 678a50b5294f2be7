"""The ppo objective on an 8-device mesh (data 2 x fsdp 2 x tensor 2) gives the 1-device losses: two steps of
train.fit on test_objectives' batch, in fresh processes (the fake device count is fixed at jax import). (rft's
loss is SFT's, whose 8-device run tests/test_finetune_scaling.py checks.)"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO

SCRIPT = """
import json, sys
sys.path.insert(0, "tests")
from conftest import tiny_config
import test_objectives
from jaxllm import losses, runtime, train
from jaxllm.metrics import read_metrics

tokenizer_dir, out, mesh = sys.argv[1], sys.argv[2], [int(x) for x in sys.argv[3].split(",")]
result = {}
for name in ("ppo",):
  config = tiny_config(name, f"{out}/{name}", tokenizer_dir, steps=2, **{
      "model.n_layers": 1, "data.train_examples": 32, "log.every": 1, "sample.num": 0, "optim.warmup_steps": 0,
      "mesh.data": mesh[0], "mesh.fsdp": mesh[1], "mesh.tensor": mesh[2]})
  env = runtime.prepare(config)
  train.fit(env, train.Task(loss=name, batches=test_objectives.BATCHES[losses.get(name).feed](env)))
  result[name] = [r["loss"] for r in read_metrics(f"{out}/{name}") if r["split"] == "train"]
print(json.dumps(result))
"""


def _losses(tmp_path, tokenizer_dir, devices: int, mesh: str) -> dict:
  env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}", "JAX_PLATFORMS": "cpu"}
  proc = subprocess.run([sys.executable, "-c", SCRIPT, tokenizer_dir, str(tmp_path / str(devices)), mesh],
                        cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_ppo_on_an_8_device_mesh_equals_one_device(tmp_path, tokenizer_dir):
  one = _losses(tmp_path, tokenizer_dir, 1, "1,1,1")
  eight = _losses(tmp_path, tokenizer_dir, 8, "2,2,2")
  for name in ("ppo",):
    assert len(one[name]) == 2 and one[name][0] != one[name][1]  # the second step sees updated weights
    np.testing.assert_allclose(eight[name], one[name], rtol=2e-4, err_msg=name)
