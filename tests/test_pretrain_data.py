"""Pretraining data: real text through dataset_info.json, packing, and bad input that names what is wrong."""
import json

import numpy as np
import pytest

from conftest import tiny_config
from jaxllm.data import pipelines
from jaxllm.data.sources import DataError
from jaxllm.metrics import read_metrics
from jaxllm.stages import pretrain


def test_windows_restart_segments_and_positions_at_each_document():
  flat = pipelines.concat_documents([[5, 6, 7], [8, 9], [10, 11, 12, 13]], eot_id=0)
  assert flat.tolist() == [0, 5, 6, 7, 0, 8, 9, 0, 10, 11, 12, 13]
  batch = pipelines.lm_batch(flat, np.array([0]), seq_len=11, eot_id=0)
  assert batch["tokens"][0].tolist() == flat[:11].tolist()
  assert batch["targets"][0].tolist() == flat[1:12].tolist()
  assert batch["segment_ids"][0].tolist() == [1, 1, 1, 1, 2, 2, 2, 3, 3, 3, 3]
  assert batch["positions"][0].tolist() == [0, 1, 2, 3, 0, 1, 2, 0, 1, 2, 3]


def test_batches_are_seeded_and_resumable():
  flat = np.arange(1000, dtype=np.int32) % 50 + 1
  a = pipelines.packed_lm_batches(flat, 16, 4, seed=1, eot_id=0)
  b = pipelines.packed_lm_batches(flat, 16, 4, seed=1, eot_id=0)
  c = pipelines.packed_lm_batches(flat, 16, 4, seed=2, eot_id=0)
  first = [a.next()["tokens"] for _ in range(3)]
  assert all(np.array_equal(x, b.next()["tokens"]) for x in first)
  assert not np.array_equal(first[0], c.next()["tokens"])
  saved = a.get_state()
  expected = a.next()["tokens"]
  b.set_state(saved)
  np.testing.assert_array_equal(b.next()["tokens"], expected)


def test_tinyshakespeare_through_dataset_info(tmp_path, tokenizer_dir, shared_data):
  config = tiny_config("pretrain", tmp_path, tokenizer_dir, steps=4, **{
      "data.name": "tinyshakespeare", "data.dataset_info": str(shared_data / "dataset_info.json"),
      "data.max_examples": 2000, "sample.num": 0})
  summary = pretrain.run(config)
  assert summary["step"] == 4 and np.isfinite(summary["eval_ppl"])
  assert any(r["split"] == "eval" for r in read_metrics(str(tmp_path)))


def _with_file(tmp_path, tokenizer_dir, name, content):
  path = tmp_path / name
  path.write_text(content)
  return tiny_config("pretrain", tmp_path / "run", tokenizer_dir, steps=2, **{"data.name": str(path)})


def test_missing_data_file_is_named(tmp_path, tokenizer_dir):
  config = tiny_config("pretrain", tmp_path, tokenizer_dir, **{"data.name": str(tmp_path / "nope.jsonl")})
  with pytest.raises(FileNotFoundError, match="nope.jsonl"):
    pretrain.run(config)


def test_missing_dataset_name_lists_known_ones(tmp_path, tokenizer_dir, shared_data):
  config = tiny_config("pretrain", tmp_path, tokenizer_dir, **{
      "data.name": "shakespeare", "data.dataset_info": str(shared_data / "dataset_info.json")})
  with pytest.raises(DataError, match="tinyshakespeare"):
    pretrain.run(config)


def test_empty_corpus_is_an_error(tmp_path, tokenizer_dir):
  with pytest.raises(DataError, match="empty"):
    pretrain.run(_with_file(tmp_path, tokenizer_dir, "empty.txt", "\n\n"))


def test_malformed_jsonl_line_names_file_and_line(tmp_path, tokenizer_dir):
  rows = [json.dumps({"text": "fine " * 50})] * 3 + ["{not json"]
  with pytest.raises(DataError, match=r"bad\.jsonl.*line 4"):
    pretrain.run(_with_file(tmp_path, tokenizer_dir, "bad.jsonl", "\n".join(rows)))


def test_skipping_bad_rows_is_counted(tmp_path, tokenizer_dir, capsys):
  rows = [json.dumps({"text": "fine words " * 400})] * 6 + ["{not json"]
  config = _with_file(tmp_path, tokenizer_dir, "bad.jsonl", "\n".join(rows))
  config.data.on_bad_row = "skip"
  config.sample.num = 0
  pretrain.run(config)
  assert "skipped 1 malformed rows" in capsys.readouterr().out
