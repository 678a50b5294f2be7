"""A damaged latest checkpoint is reported in one line and the previous one used; a resume never logs a step
twice; a config or tokenizer that differs from the workdir's is refused, never overwritten."""
import os

import pytest

from conftest import tiny_config
from jaxllm import manifest, metrics, runtime
from jaxllm.resume import ResumeRefused
from jaxllm.stages import pretrain

COMMON = {"log.every": 1, "checkpoint.every": 2, "checkpoint.keep": 3, "optim.decay_steps": 8, "sample.num": 0,
          "eval.every": 100}


def _largest_file(folder: str) -> str:
  files = [os.path.join(root, n) for root, _, names in os.walk(folder) for n in names if n != manifest.NAME]
  return max(files, key=os.path.getsize)


def _train_steps(workdir) -> list[int]:
  return [r["step"] for r in metrics.read_metrics(str(workdir)) if r["split"] == "train"]


def _losses(workdir) -> dict[int, float]:
  return {r["step"]: r["loss"] for r in metrics.read_metrics(str(workdir)) if r["split"] == "train"}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, tokenizer_dir):
  """A tiny 4-step pretraining workdir with checkpoints at steps 2 and 4."""
  workdir = tmp_path_factory.mktemp("run")
  pretrain.run(tiny_config("pretrain", workdir, tokenizer_dir, steps=4, **COMMON))
  return workdir


def test_bit_flipped_then_truncated_latest_checkpoint_falls_back(finished_run, tokenizer_dir, capsys):
  workdir = finished_run
  first = _losses(workdir)
  assert os.path.exists(os.path.join(workdir, "checkpoints", "4", manifest.NAME))
  victim = _largest_file(os.path.join(workdir, "checkpoints", "4"))
  with open(victim, "r+b") as f:  # one flipped bit in the middle of the largest array file
    f.seek(os.path.getsize(victim) // 2)
    byte = f.read(1)
    f.seek(-1, os.SEEK_CUR)
    f.write(bytes([byte[0] ^ 0x10]))
  pretrain.run(tiny_config("pretrain", workdir, tokenizer_dir, steps=6, **COMMON))
  out = capsys.readouterr().out
  assert "checkpoint: step 4 in" in out and "does not match its SHA-256" in out and "using step 2 instead" in out
  assert os.path.isdir(os.path.join(workdir, "rejected_checkpoints", "4"))  # kept, not deleted
  assert _train_steps(workdir) == [1, 2, 3, 4, 5, 6]  # rows 3, 4 of the lost checkpoint dropped, then rewritten
  second = _losses(workdir)
  assert [second[s] for s in (1, 2, 3, 4)] == [first[s] for s in (1, 2, 3, 4)]  # bitwise: steps 3, 4 redone

  victim = _largest_file(os.path.join(workdir, "checkpoints", "6"))
  with open(victim, "r+b") as f:
    f.truncate(os.path.getsize(victim) // 2)
  pretrain.run(tiny_config("pretrain", workdir, tokenizer_dir, steps=8, **COMMON))
  out = capsys.readouterr().out
  assert "checkpoint: step 6 in" in out and "(truncated?)" in out and "using step 4 instead" in out
  assert _train_steps(workdir) == list(range(1, 9))
  third = _losses(workdir)
  assert [third[s] for s in range(1, 7)] == [second[s] for s in range(1, 7)]


def test_resume_with_a_changed_seed_is_refused_and_the_tokenizer_kept(finished_run, tokenizer_dir):
  workdir = finished_run
  folder = os.path.join(workdir, "tokenizer")
  before = {n: open(os.path.join(folder, n), "rb").read() for n in os.listdir(folder)}
  config_before = open(os.path.join(workdir, "config.json")).read()
  changed = tiny_config("pretrain", workdir, tokenizer_dir, steps=10, **COMMON, **{"tokenizer.vocab_size": 300})
  changed.seed = 7
  with pytest.raises(ResumeRefused, match=r"2 key\(s\).*seed: 0 -> 7; tokenizer.vocab_size: 512 -> 300"):
    runtime.prepare(changed)
  assert {n: open(os.path.join(folder, n), "rb").read() for n in os.listdir(folder)} == before
  assert open(os.path.join(workdir, "config.json")).read() == config_before
  # A tokenizer damaged in place (truncated at a line boundary) is caught by its manifest, not loaded silently.
  ranks = [n for n in os.listdir(folder) if n.endswith(".tiktoken")][0]
  lines = before[ranks].splitlines(keepends=True)
  with open(os.path.join(folder, ranks), "wb") as f:
    f.writelines(lines[:len(lines) // 2])
  try:
    with pytest.raises(ResumeRefused, match="tokenizer: .*truncated"):
      runtime.prepare(tiny_config("pretrain", workdir, tokenizer_dir, steps=10, **COMMON))
  finally:
    with open(os.path.join(folder, ranks), "wb") as f:
      f.write(before[ranks])


def test_garbage_config_json_is_named(tmp_path):
  fake = tmp_path / "w"
  os.makedirs(fake / "checkpoints" / "2")
  (fake / "config.json").write_text("{not json")
  config = tiny_config("pretrain", fake, "", steps=4)
  with pytest.raises(ResumeRefused, match=r"w/config.json: not valid JSON"):
    runtime.prepare(config)
