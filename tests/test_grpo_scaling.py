"""GRPO across processes: 2 processes x 4 CPU devices (gloo on localhost) sample the same rollouts, score them
with the same rewards (a reward model's included), compute the same advantages and reference log-probs, train to
the same losses and score the same held-out generations as 1 process x 8 devices, running configs/grpo.py:tiny
from an init_from workdir with the README's --config.dist.* keys (tests/grpo_worker.py is run.py plus a test
reward and a dump of each process's rollout rows)."""
import glob
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO, free_port, save_initial_state
from jaxllm.metrics import read_metrics

WORKER = str(REPO / "tests" / "grpo_worker.py")
STEPS = 2


@pytest.fixture(scope="module")
def reward_workdir(tmp_path_factory, tokenizer_dir) -> str:
  """A reward-stage workdir holding its initial state (trunk and score head) as a checkpoint: a reward model
  whose scores vary from reply to reply, which is all the rewards need here."""
  return save_initial_state("reward", tmp_path_factory.mktemp("reward_model"), tokenizer_dir)


def _cmd(dump, workdir, tokenizer_dir, init_from, reward_model, *dist):
  # mesh data 2 x fsdp 2 x tensor 2: 4 data-parallel blocks of the 4 prompts' groups, 2 on each process
  return [sys.executable, WORKER, str(dump), "--config=configs/grpo.py:tiny", f"--config.workdir={workdir}",
          f"--config.tokenizer.path={tokenizer_dir}", f"--config.steps={STEPS}", f"--config.eval.every={STEPS}",
          f"--config.checkpoint.every={STEPS}", f"--config.init_from={init_from}",
          "--config.rl.rewards=test_fives:1.0,format:0.1,reward_model:0.5", f"--config.rl.reward_model={reward_model}",
          "--config.optim.lr=3e-3", "--config.optim.warmup_steps=1", "--config.mesh.data=2", "--config.mesh.fsdp=2",
          "--config.mesh.tensor=2", "--config.log.tensorboard=False", "--config.log.progress=False", *dist]


def _env(devices: int) -> dict:
  return {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}", "JAX_PLATFORMS": "cpu"}


def _rollouts(dump) -> list[dict[str, np.ndarray]]:
  """Each rollout's rows, every process's in process order (as the global batch lays them out)."""
  out = []
  for k in range(STEPS):
    parts = [np.load(f) for f in sorted(glob.glob(os.path.join(dump, f"rollout{k}_p*.npz")))]
    out.append({key: np.concatenate([p[key] for p in parts]) for key in parts[0].files})
  return out


@pytest.mark.slow
def test_two_processes_sample_and_train_like_one(tmp_path, tokenizer_dir, initial_pretrain_workdir, reward_workdir):
  common = (tokenizer_dir, initial_pretrain_workdir, reward_workdir)
  port = free_port()
  dist = lambda i: (f"--config.dist.coordinator=127.0.0.1:{port}", "--config.dist.num_processes=2",
                    f"--config.dist.process_id={i}")
  procs = [subprocess.Popen(_cmd(tmp_path / "dump_multi", tmp_path / "multi", *common, *dist(i)), cwd=REPO,
                            env=_env(4), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
           for i in range(2)]
  single = subprocess.run(_cmd(tmp_path / "dump_single", tmp_path / "single", *common), cwd=REPO,
                          env=_env(8), capture_output=True, text=True, timeout=600)
  outputs = [p.communicate(timeout=600) for p in procs]
  assert single.returncode == 0, single.stderr[-3000:]
  for i, (p, (_, err)) in enumerate(zip(procs, outputs)):
    assert p.returncode == 0, f"process {i}:\n{err[-4000:]}"

  multi_rollouts, single_rollouts = _rollouts(tmp_path / "dump_multi"), _rollouts(tmp_path / "dump_single")
  for got, want in zip(multi_rollouts, single_rollouts, strict=True):
    for key in ("tokens", "segment_ids", "loss_mask"):  # the same samples, laid out the same
      np.testing.assert_array_equal(got[key], want[key], err_msg=key)
    for key in ("advantages", "ref_logprobs", "sampler_logprobs"):
      np.testing.assert_allclose(got[key], want[key], rtol=1e-5, atol=1e-5, err_msg=key)
  assert np.ptp(single_rollouts[0]["advantages"]) > 0  # the rewards gave signal: the losses below mean something

  rows = lambda w, split: [r for r in read_metrics(str(w)) if r["split"] == split]
  got, want = rows(tmp_path / "multi", "train"), rows(tmp_path / "single", "train")
  assert len(got) == STEPS == len(want)  # process 0 alone writes metrics
  assert all(r["reward_reward_model"] != 0 for r in want)
  for key in ("loss", "kl", "grad_norm", "reward_mean", "reward_std", "reward_reward_model", "completion_len",
              "zero_signal_groups", "row_len"):
    np.testing.assert_allclose([r[key] for r in got], [r[key] for r in want], rtol=1e-5, atol=1e-6, err_msg=key)
  (got_eval,), (want_eval,) = rows(tmp_path / "multi", "eval"), rows(tmp_path / "single", "eval")
  for key in ("accuracy", "answer_format", "gen_tokens", "stopped"):  # greedy held-out answers, split over processes
    assert got_eval[key] == pytest.approx(want_eval[key]), key
  assert os.path.isdir(tmp_path / "multi" / "checkpoints" / str(STEPS))
