"""Two runs on one workdir, a full disk, a run too big to fit, bad input files and targets: each refused or
reported in one line naming what is wrong, nothing overwritten, nothing silently dropped."""
import errno
import json
import os
import subprocess
import sys
import types

import pytest

from conftest import REPO, tiny_config
from jaxllm import manifest, memory_check, metrics, user_errors, workdir_lock
from jaxllm.data import files, registry
from jaxllm.data.files import DataError
from jaxllm.errors import UserError
from jaxllm.stages import export, pretrain


# The schedule of the checkpoint tests' runs, so that every tiny run here compiles the same train step (one XLA
# compilation, then the session's persistent cache).
SAME_STEP = {"optim.decay_steps": 8, "sample.num": 0, "eval.every": 100}


def _run_py(*args, timeout=300):
  env = {**os.environ, "JAX_PLATFORMS": "cpu"}
  return subprocess.run([sys.executable, "run.py", *args], cwd=REPO, env=env, capture_output=True, text=True,
                        timeout=timeout)


@pytest.mark.slow
def test_a_second_run_on_a_locked_workdir_refuses_at_once_naming_the_holder(tmp_path, tokenizer_dir):
  with workdir_lock.hold(str(tmp_path)):
    proc = _run_py("--config=configs/pretrain.py:tiny", f"--config.workdir={tmp_path}",
                   f"--config.tokenizer.path={tokenizer_dir}")
  assert proc.returncode == 2, proc.stderr[-2000:]
  assert proc.stderr.strip().splitlines() == [
      f"error: workdir {str(tmp_path)!r} is in use by another run (pid {os.getpid()} on host {os.uname().nodename}); "
      "wait for it to finish or use another workdir"]
  assert not os.path.exists(tmp_path / "config.json")  # refused before writing anything
  with workdir_lock.hold(str(tmp_path)):  # released when the holder's block ends (or it dies)
    pass


@pytest.mark.slow
def test_an_unknown_config_key_is_one_line_naming_it():
  proc = _run_py("--config=configs/pretrain.py:tiny", "--config.optim.foo=3", timeout=120)
  assert proc.returncode == 2
  assert proc.stderr.strip() == "error: --config.optim.foo: the config has no key 'foo'"


def test_disk_full_at_a_save_is_one_line(tmp_path, tokenizer_dir, monkeypatch):
  write = manifest.write

  def full(folder):  # the disk fills up once training starts saving (the tokenizer got written)
    if os.sep + "checkpoints" + os.sep not in folder:
      return write(folder)
    raise OSError(errno.ENOSPC, "No space left on device", os.path.join(folder, manifest.NAME))

  monkeypatch.setattr(manifest, "write", full)
  with pytest.raises(Exception) as info:
    pretrain.run(tiny_config("pretrain", tmp_path, tokenizer_dir, steps=2, **{"checkpoint.every": 1, **SAME_STEP}))
  message = user_errors.describe(info.value)
  assert message.startswith("disk full writing ") and f"checkpoints/1/{manifest.NAME}" in message, message


def test_a_run_that_cannot_fit_is_refused_with_both_numbers(monkeypatch):
  analysis = types.SimpleNamespace(temp_size_in_bytes=300 * 2**30, output_size_in_bytes=2**30,
                                   alias_size_in_bytes=2**30)
  compiled = types.SimpleNamespace(memory_analysis=lambda: analysis)
  monkeypatch.setattr(memory_check, "available_bytes", lambda: (8 * 2**30, "free on TestDevice 0"))
  with pytest.raises(UserError, match=r"estimate of the train step is 300.00 GiB.* but 8.00 GiB is free on"):
    memory_check.check(compiled)


def test_skipped_rows_are_counted_the_same_in_log_metrics_and_summary(tmp_path, tokenizer_dir, capsys):
  corpus = tmp_path / "corpus.jsonl"
  lines = [json.dumps({"text": f"Mia has {i} apples. She buys {i + 2} more. How many? {2 * i + 2}"})
           for i in range(300)]
  lines[5], lines[17], lines[40] = "{broken", json.dumps({"nope": 1}), json.dumps([1, 2])
  corpus.write_text("\n".join(lines) + "\n")
  config = tiny_config("pretrain", tmp_path / "w", tokenizer_dir, steps=2, **{
      "data.name": str(corpus), "data.on_bad_row": "skip", "data.doc_chars": 0, "log.every": 1, **SAME_STEP})
  summary = pretrain.run(config)
  out = capsys.readouterr().out
  assert "data: 3 malformed rows skipped in all" in out
  rows = [r for r in metrics.read_metrics(str(tmp_path / "w")) if r["split"] == "train"]
  assert [r["data_skipped_rows"] for r in rows] == [3, 3]
  assert summary["data_skipped_rows"] == 3


def test_a_stray_csv_quote_is_one_bad_row_not_hundreds_merged(tmp_path):
  lines = ["instruction,output"] + [f"question {i},answer {i}" for i in range(1, 401)]
  lines[100] = 'question 100,"answer 100'
  path = tmp_path / "d.csv"
  path.write_text("\n".join(lines) + "\n")
  sink = files.Sink("skip")
  rows = files._read_csv(str(path), path.read_bytes(), sink)
  assert len(rows) == 399 and sink.skipped == 1
  assert sink.reasons == [f"{path}: line 101: unbalanced quote (unexpected end of data)"]
  with pytest.raises(DataError, match=r"d.csv: line 101: unbalanced quote"):
    files._read_csv(str(path), path.read_bytes(), files.Sink("fail"))


def test_registry_paths_stay_inside_the_registry_folder(tmp_path):
  (tmp_path / "inside.jsonl").write_text('{"text": "x"}\n')
  info = {"ok": {"file_name": "inside.jsonl", "formatting": "text"},
          "up": {"file_name": "../secret.jsonl", "formatting": "text"},
          "abs": {"file_name": "/etc/passwd", "formatting": "text"}}
  (tmp_path / "dataset_info.json").write_text(json.dumps(info))
  assert registry.resolve("ok", str(tmp_path))["file_name"] == str(tmp_path / "inside.jsonl")
  for name in ("up", "abs"):
    with pytest.raises(DataError, match=f"dataset '{name}': file_name .* points outside .*allow_outside_paths"):
      registry.resolve(name, str(tmp_path))
  assert registry.resolve("abs", str(tmp_path), allow_outside=True)["file_name"] == "/etc/passwd"


def test_export_refuses_a_non_empty_target(tmp_path, initial_pretrain_workdir):
  from configs import export as export_config

  target = tmp_path / "hf"
  target.mkdir()
  (target / "model.safetensors").write_bytes(b"another model")
  config = export_config.get_config()
  config.init_from, config.export.path = initial_pretrain_workdir, str(target)
  with pytest.raises(UserError, match=r"hf is not empty \(1 entries\).*export.overwrite=True"):
    export.run(config)
  assert (target / "model.safetensors").read_bytes() == b"another model"
  config.export.overwrite = True
  export.run(config)
  assert (target / "model.safetensors").read_bytes() != b"another model"
  assert sorted(os.listdir(tmp_path)) == ["hf"]  # the temp folder was renamed into place, the old one removed
