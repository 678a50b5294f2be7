"""Weights & Biases logging: an offline run holds every scalar of metrics.jsonl and the resolved config; without
wandb or a login the run goes on; sweeps and the pipeline group their runs."""
import glob
import json
import os
import struct
import sys

import pytest

from conftest import REPO, tiny_config

wandb = pytest.importorskip("wandb")


def read_offline_run(run_dir: str) -> list:
  """The protobuf records of an offline run's .wandb file: a LevelDB-style log (32 KiB blocks of records, each
  with a 7-byte header: crc32, length, type FULL/FIRST/MIDDLE/LAST) after a 7-byte ':W&B' file header."""
  from wandb.proto import wandb_internal_pb2

  (path,) = glob.glob(os.path.join(run_dir, "run-*.wandb"))
  data = open(path, "rb").read()
  assert data[:4] == b":W&B"
  pos, records, chunks = 7, [], b""
  while pos + 7 <= len(data):
    if 32768 - pos % 32768 < 7:  # a block's tail too short for a header is padding
      pos += 32768 - pos % 32768
      continue
    _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
    chunks += data[pos + 7:pos + 7 + length]
    pos += 7 + length
    if kind in (1, 4):  # FULL or LAST: a whole record
      record = wandb_internal_pb2.Record()
      record.ParseFromString(chunks)
      records.append(record)
      chunks = b""
  return records


def test_offline_run_holds_every_metrics_jsonl_scalar_and_the_config(tmp_path, tokenizer_dir, monkeypatch):
  from jaxllm import stages
  from jaxllm.metrics import read_metrics

  monkeypatch.setenv("WANDB_MODE", "offline")
  monkeypatch.setenv("WANDB_SILENT", "true")
  workdir = tmp_path / "pt"
  config = tiny_config("pretrain", workdir, tokenizer_dir, **{
      "steps": 3, "log.every": 1, "eval.every": 3, "sample.num": 0, "log.wandb": True,
      "log.wandb_project": "jaxllm-tests", "log.wandb_run_name": "tiny", "log.wandb_tags": "a, b",
      "log.wandb_group": "g"})
  stages.run(config)
  (run_dir,) = glob.glob(str(workdir / "wandb" / "offline-run-*"))
  records = read_offline_run(run_dir)
  run = next(r.run for r in records if r.WhichOneof("record_type") == "run")
  assert (run.project, run.display_name, run.run_group, list(run.tags)) == ("jaxllm-tests", "tiny", "g", ["a", "b"])
  assert run.run_id == (workdir / "wandb_run_id").read_text()
  logged_config = {item.key: json.loads(item.value_json) for item in run.config.update}
  assert logged_config["model"]["d_model"] == 64 and logged_config["steps"] == 3
  history = [{item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in r.history.item}
             for r in records if r.WhichOneof("record_type") == "history"]
  rows = read_metrics(str(workdir))
  assert {r["split"] for r in rows} == {"train", "eval"} and len(history) == len(rows)
  for row, logged in zip(rows, history):
    assert logged["step"] == row["step"]
    for key, value in row.items():
      if key not in ("step", "split"):
        assert logged[f"{row['split']}/{key}"] == pytest.approx(value, rel=1e-6), key


def test_without_wandb_or_a_login_one_line_and_the_run_goes_on(tmp_path, monkeypatch, capsys):
  from configs import base
  from jaxllm import wandb_sink

  config = base.get_config()
  config.workdir, config.log.wandb = str(tmp_path), True
  monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb -> ImportError
  assert wandb_sink.open_sink(config) is None
  monkeypatch.undo()
  wandb.teardown()  # drop settings an earlier run in this process left in wandb's singleton (offline mode)
  monkeypatch.setenv("WANDB_MODE", "online")  # no API key anywhere: wandb.init refuses without a terminal
  monkeypatch.delenv("WANDB_API_KEY", raising=False)
  monkeypatch.setenv("HOME", str(tmp_path))
  monkeypatch.setenv("NETRC", str(tmp_path / "no_netrc"))
  monkeypatch.setattr("sys.stdin", open(os.devnull))
  assert wandb_sink.open_sink(config) is None
  lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("log.wandb=True")]
  assert len(lines) == 2 and "not installed" in lines[0] and "could not start a run" in lines[1]


def test_sweeps_and_the_pipeline_group_their_runs(tmp_path):
  sys.path.insert(0, str(REPO / "experiments"))
  import sweep as sweep_lib
  from configs import pipeline
  from jaxllm.stages.pipeline import stage_config

  sweep_file = tmp_path / "lr_study.py"
  sweep_file.write_text('BASE = "configs/sft.py:tiny"\nSEEDS = [0, 1]\nMETRICS = ["eval_loss"]\n'
                        'OVERRIDES = {"log.wandb": True, "log.wandb_project": "p"}\n'
                        'def settings():\n  return [{"optim.lr": 0.001}]\n')
  sweep = sweep_lib.load_sweep(str(sweep_file))
  runs = sweep_lib.plan(sweep, str(tmp_path / "out"))
  commands = [sweep_lib.command(sweep, run) for run in runs]
  assert all("--config.log.wandb_group=lr_study" in c for c in commands)
  assert [next(a for a in c if a.startswith("--config.log.wandb_run_name=")) for c in commands] == [
      "--config.log.wandb_run_name=optim.lr=0.001 seed=0", "--config.log.wandb_run_name=optim.lr=0.001 seed=1"]
  report = sweep_lib.report_config(sweep, str(tmp_path / "out"))
  assert (report.log.wandb, report.log.wandb_project, report.log.wandb_group) == (True, "p", "lr_study")

  config = pipeline.get_config("tiny")
  config.workdir, config.log.wandb, config.log.wandb_project = str(tmp_path / "my_pipeline"), True, "p"
  sft = stage_config(config, "sft", "pretrain", None)
  assert (sft.log.wandb, sft.log.wandb_project, sft.log.wandb_group, sft.log.wandb_run_name) == (
      True, "p", "my_pipeline", "sft")
