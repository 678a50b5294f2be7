"""Fine-tuning from a checkpoint across processes (issue 33): a checkpoint written by 1 process x 1 device is
read by 2 processes x 4 devices (data 2 x fsdp 4, and data 1 x fsdp 2 x tensor 4), whose SFT and DPO losses
equal those of 1 process x 8 devices on the same meshes; checkpoints written by the 2 processes are read back
by 1 process. Two launches in all (tests/finetune_worker.py runs every case of one launch)."""
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from conftest import REPO, free_port, save_initial_state
from finetune_worker import weights_checksums
from jaxllm import hf
from jaxllm.checkpoint import load_pretrained
from jaxllm.tokenizer import Tokenizer

MESHES = "2x4x1,1x2x4"
WORKER = str(REPO / "tests" / "finetune_worker.py")


@pytest.fixture(scope="module")
def pretrain_workdir(tmp_path_factory, tokenizer_dir) -> str:
  """An initial pretrain state saved by 1 process x 1 device, with a seed unlike the fine-tuning runs' (so a
  run that re-initialised instead of loading would show), kv heads that split over tensor=4."""
  return save_initial_state("pretrain", tmp_path_factory.mktemp("pretrain_1x1"), tokenizer_dir, seed=7, **{"model.n_kv_heads": 4})


def _launch(processes: int, devices: int, *args: str) -> None:
  port = free_port()
  env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}", "JAX_PLATFORMS": "cpu"}
  dist = lambda i: {"JAXLLM_DIST": f"127.0.0.1:{port},{processes},{i}"} if processes > 1 else {}
  procs = [subprocess.Popen([sys.executable, WORKER, *args], cwd=REPO, env={**env, **dist(i)},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(processes)]
  outputs = [p.communicate(timeout=600) for p in procs]
  for i, (p, (_, err)) in enumerate(zip(procs, outputs)):
    assert p.returncode == 0, f"process {i}:\n{err[-4000:]}"


@pytest.mark.slow
def test_finetune_across_processes_from_checkpoint(tmp_path, tokenizer_dir, pretrain_workdir):
  multi, single, hf_folder = tmp_path / "multi", tmp_path / "single", str(tmp_path / "hf")
  written = load_pretrained(pretrain_workdir)  # read back as written: 1 process, 1 device
  # the same weights as a Hugging Face folder, in two safetensors files (through the index)
  hf.export(hf_folder, written.config.model.to_dict(), written.weights, Tokenizer.load(tokenizer_dir),
            max_shard_bytes=300_000)
  args = (pretrain_workdir, hf_folder, tokenizer_dir)
  _launch(2, 4, str(tmp_path / "multi.json"), *args, str(multi), MESHES, "-")
  _launch(1, 8, str(tmp_path / "single.json"), *args, str(single), MESHES, str(multi))
  got = json.loads((tmp_path / "multi.json").read_text())
  want = json.loads((tmp_path / "single.json").read_text())

  checksums = weights_checksums(written.weights)
  for mesh in MESHES.split(","):
    for source in ("checkpoint", "hf"):  # every process read its blocks from the right place
      np.testing.assert_allclose(got[f"checksums_{source}_{mesh}"], checksums, rtol=1e-5, atol=1e-5)
      np.testing.assert_allclose(want[f"checksums_{source}_{mesh}"], checksums, rtol=1e-5, atol=1e-5)
    for stage in ("sft", "dpo"):
      assert len(got[f"{stage}_{mesh}"]) == 3, got
      np.testing.assert_allclose(got[f"{stage}_{mesh}"], want[f"{stage}_{mesh}"], rtol=1e-5)
    # checkpoints written by 2 processes, read by 1 process on 1 device: the 8-device run's weights
    read_back = jax.tree.leaves(load_pretrained(str(multi / f"sft_{mesh}")).weights)
    reference = jax.tree.leaves(load_pretrained(str(single / f"sft_{mesh}")).weights)
    for a, b in zip(read_back, reference, strict=True):
      np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-7)
  # ... and by 1 process on 8 devices: DPO from the 2-process SFT workdir trains as it does on 2 processes
  np.testing.assert_allclose(want["dpo_from_multi_sft"], got["dpo_from_multi_sft"], rtol=1e-5)
