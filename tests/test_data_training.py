"""Bring-your-own data end to end, through `datasets`: SFT on a Parquet folder of messages with tool calls and on
a streamed JSONL messages file; DPO on a dataset_info.json entry whose hf_hub_url names a save_to_disk folder;
DPO on dpo_zh_demo at the default budget with its long pairs truncated and counted. Every run is 2 steps of the
:tiny model, so the runs of a stage share one compiled train step."""
import json

import numpy as np
import pytest

from conftest import tiny_config
from jaxllm import stages
from jaxllm.metrics import read_metrics

CALL = {"type": "function", "function": {"name": "add", "arguments": '{"a": 2, "b": 3}'}}


def _messages(i: int) -> dict:
  return {"messages": [{"role": "user", "content": f"What is {i} plus 3?"},
                       {"role": "assistant", "content": "", "tool_calls": [CALL]},
                       {"role": "tool", "content": str(i + 3)},
                       {"role": "assistant", "content": f"#### {i + 3}"}],
          "tools": json.dumps([{"type": "function", "function": {"name": "add"}}])}


def _pair(i: int) -> dict:
  return {"prompt": [{"role": "user", "content": f"What is {i} plus 3?"}],
          "chosen": [{"role": "assistant", "content": f"#### {i + 3}"}],
          "rejected": [{"role": "assistant", "content": f"#### {i + 4}"}]}


@pytest.fixture(scope="module")
def own_data(tmp_path_factory):
  import datasets

  root = tmp_path_factory.mktemp("own_data")
  messages = datasets.Dataset.from_list([_messages(i) for i in range(40)])
  (root / "parquet").mkdir()
  for k in range(2):
    messages.shard(2, k).to_parquet(str(root / "parquet" / f"part-{k}.parquet"))
  (root / "tools.jsonl").write_text("".join(json.dumps(_messages(i)) + "\n" for i in range(40)))
  datasets.Dataset.from_list([_pair(i) for i in range(40)]).save_to_disk(str(root / "pairs_saved"))
  (root / "dataset_info.json").write_text(json.dumps({"my_pairs": {"hf_hub_url": "pairs_saved", "split": "train"}}))
  return root


def _run(module, workdir, tokenizer_dir, init_from, **overrides):
  config = tiny_config(module, workdir, tokenizer_dir, init_from=init_from, steps=2,
                       **{"eval.every": 2, "eval.batches": 1, "sample.num": 0, "log.every": 1, **overrides})
  summary = stages.run(config)
  train_rows = [r for r in read_metrics(str(workdir)) if r["split"] == "train"]
  assert summary["step"] == 2 and train_rows and all(np.isfinite(r["loss"]) for r in train_rows)
  return summary, train_rows


@pytest.mark.parametrize("source, streaming", [("parquet", False), ("tools.jsonl", True)])
def test_sft_trains_on_tool_call_messages_from_parquet_and_streamed_jsonl(own_data, source, streaming, tmp_path,
                                                                          tokenizer_dir, initial_pretrain_workdir):
  summary, rows = _run("sft", tmp_path, "", initial_pretrain_workdir, **{
      "data.name": str(own_data / source), "data.streaming": streaming, "sft.eval_examples": 0})
  assert summary["data_examples"] == 38 and summary["data_dropped"] == 0  # 40 rows, 5% held out
  assert rows[-1]["data_truncated"] == summary["data_truncated"]


def test_dpo_trains_on_an_hf_hub_url_entry_naming_a_save_to_disk_folder(own_data, tmp_path, tokenizer_dir,
                                                                        initial_pretrain_workdir):
  summary, _ = _run("dpo", tmp_path, "", initial_pretrain_workdir, **{
      "data.name": "my_pairs", "data.dataset_info": str(own_data / "dataset_info.json")})
  assert summary["train_pairs"] + summary["eval_pairs"] == 40 and np.isfinite(summary["eval_accuracy"])


def test_dpo_on_dpo_zh_demo_truncates_long_pairs_at_the_default_budget(shared_data, tmp_path, tokenizer_dir,
                                                                       initial_pretrain_workdir):
  summary, rows = _run("dpo", tmp_path, "", initial_pretrain_workdir, **{
      "data.name": "dpo_zh_demo", "data.dataset_info": str(shared_data / "dataset_info.json")})
  # A few pairs are dropped because their answers, cut to fit, become identical (no preference left).
  assert summary["train_pairs"] + summary["eval_pairs"] + summary["dropped_too_long"] == 300
  assert summary["dropped_too_long"] < 10 and summary["eval_pairs"] > 0
  assert summary["truncated_too_long"] > 100 and rows[-1]["data_truncated"] == summary["truncated_too_long"]
  assert np.isfinite(summary["eval_accuracy"])
