"""Data through Hugging Face `datasets` (Parquet folders, save_to_disk, globs, hf_hub_url registry entries, hub
ids offline) and formats told from the columns (messages with tool calls, prompt/completion, TRL preference)."""
import json
import time

import pytest

from jaxllm.data import hub, sources
from jaxllm.data.sources import DataError, load, load_file

ALPACA = [{"instruction": f"Add {i} and 1.", "input": "", "output": str(i + 1)} for i in range(6)]
CALL = {"type": "function", "function": {"name": "add", "arguments": '{"a": 2, "b": 3}'}}
MESSAGES = {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+3?"},
                         {"role": "assistant", "content": None, "tool_calls": [CALL]},
                         {"role": "tool", "content": "5"}, {"role": "assistant", "content": "5"}],
            "tools": [{"type": "function", "function": {"name": "add", "parameters": {"type": "object"}}}]}


def _jsonl(path, rows):
  path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
  return str(path)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
  """An alpaca set as a Parquet folder, a save_to_disk folder, and a registry whose hf_hub_url names it."""
  import datasets

  root = tmp_path_factory.mktemp("hub")
  ds = datasets.Dataset.from_list(ALPACA)
  (root / "parquet").mkdir()
  ds.select(range(3)).to_parquet(str(root / "parquet" / "part-0.parquet"))
  ds.select(range(3, 6)).to_parquet(str(root / "parquet" / "part-1.parquet"))
  datasets.DatasetDict({"train": ds, "test": ds.select(range(2))}).save_to_disk(str(root / "arrow"))
  (root / "dataset_info.json").write_text(json.dumps({
      "local_hub": {"hf_hub_url": "parquet", "num_samples": 4},
      "saved_test": {"hf_hub_url": "arrow", "split": "test"},
      "remote": {"hf_hub_url": "nobody/nothing-here", "subset": "main"},
  }))
  return root


def test_parquet_folder_save_to_disk_glob_and_hf_hub_url_entries(saved):
  for name in (saved / "parquet", saved / "arrow", saved / "parquet" / "*.parquet"):
    assert hub.wants_datasets(str(name))
    result = load_file(name, None, "chat")
    assert result.formatting == "alpaca" and len(result.records) == 6 and "(0-based)" not in result.source
    assert result.records[1]["messages"] == [{"role": "user", "content": "Add 1 and 1."},
                                             {"role": "assistant", "content": "2"}]
  assert len(load_file(str(saved / "arrow"), None, "chat", split="test").records) == 2
  info = str(saved / "dataset_info.json")
  assert [r["messages"][1]["content"] for r in load("local_hub", info, "chat").records] == ["1", "2", "3", "4"]
  assert len(load("saved_test", info, "chat").records) == 2
  streamed = load_file(saved / "parquet", None, "chat", streaming=True)
  assert streamed.records == load_file(saved / "parquet", None, "chat").records


def test_hub_ids_fail_at_once_offline(saved, monkeypatch):
  monkeypatch.setenv("HF_HUB_OFFLINE", "1")
  start = time.perf_counter()
  with pytest.raises(DataError, match=r"hf:nobody/nothing-here: not in the local datasets cache .* needs the network"):
    load_file("hf:nobody/nothing-here", None, "chat")
  with pytest.raises(DataError, match=r"dataset 'remote': not in the local datasets cache"):
    load("remote", str(saved / "dataset_info.json"), "chat")
  monkeypatch.delenv("HF_HUB_OFFLINE")
  monkeypatch.setenv("HF_ENDPOINT", "https://hub.invalid")  # an unreachable hub: the probe fails in seconds
  with pytest.raises(DataError, match=r"hf:nobody/nothing-here: needs the network \(cannot reach hub.invalid"):
    load_file("hf:nobody/nothing-here", None, "chat")
  assert time.perf_counter() - start < 10
  with pytest.raises(DataError, match="expected hf:<org>/<name>"):
    load_file("hf:a/b/c", None, "chat")


def test_formats_are_detected_from_columns(tmp_path):
  chat = load_file(_jsonl(tmp_path / "m.jsonl", [MESSAGES]), None, "chat")
  assert chat.formatting == "messages"
  rec = chat.records[0]
  assert [m["role"] for m in rec["messages"]] == ["system", "user", "function_call", "tool", "assistant"]
  assert json.loads(rec["messages"][2]["content"]) == {"name": "add", "arguments": {"a": 2, "b": 3}}
  assert json.loads(rec["tools"])[0]["function"]["name"] == "add"
  pc = load_file(_jsonl(tmp_path / "pc.jsonl", [{"prompt": "Hi", "completion": "Hello"}]), None, "chat").records
  assert pc[0]["messages"] == [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]
  explicit = [{"prompt": "2+2?", "chosen": "4", "rejected": "5"},
              {"prompt": [{"role": "user", "content": "2+2?"}], "chosen": [{"role": "assistant", "content": "4"}],
               "rejected": [{"role": "assistant", "content": "5"}]}]
  implicit = [{"chosen": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}],
               "rejected": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "5"}]}]
  want = {"messages": [{"role": "user", "content": "2+2?"}], "chosen": "4", "rejected": "5"}
  for rows in (explicit, implicit):
    result = load_file(_jsonl(tmp_path / "p.jsonl", rows), None, "preference")
    assert result.formatting == "preference" and all(r == want for r in result.records)
  hh = {"chosen": "\n\nHuman: hi\n\nAssistant: hello", "rejected": "\n\nHuman: hi\n\nAssistant: go away"}
  assert load_file(_jsonl(tmp_path / "hh.jsonl", [hh]), None, "preference").formatting == "hh_rlhf"
  share = {"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"}]}
  assert load_file(_jsonl(tmp_path / "s.jsonl", [share]), None, "chat").formatting == "sharegpt"
  cls = load_file(_jsonl(tmp_path / "c.jsonl", [{"label": 1, "review": "good"}]), None, "classification")
  assert cls.records == [{"text": "good", "label": "1"}]
  # an explicit formatting wins over detection
  assert load_file(tmp_path / "pc.jsonl", "text", "text", columns={"prompt": "prompt"}).records == [{"text": "Hi"}]
  with pytest.raises(DataError, match=r"cannot tell the data format from the columns \['body', 'id'\]"):
    load_file(_jsonl(tmp_path / "x.jsonl", [{"id": 1, "body": "?"}]), None, "chat")


def test_detected_formats_name_the_bad_row(tmp_path):
  bad = dict(MESSAGES, messages=MESSAGES["messages"][:2] + [{"role": "robot", "content": "x"}])
  path = _jsonl(tmp_path / "m.jsonl", [MESSAGES, bad])
  with pytest.raises(DataError, match=r"m\.jsonl: line 2: messages\[2\]: role 'robot' must be one of system, user"):
    load_file(path, None, "chat")
  assert load_file(path, None, "chat", on_bad="skip").skipped == 1
  pairs = _jsonl(tmp_path / "p.jsonl", [{"chosen": "4", "rejected": "5"}])
  with pytest.raises(DataError, match=r"p\.jsonl: line 1: chosen / rejected strings need a 'prompt' column"):
    load_file(pairs, None, "preference")


def test_load_config_refuses_unknown_names_in_one_line():
  import ml_collections
  data = ml_collections.ConfigDict({"name": "no/such/file.json", "dataset_info": "", "on_bad_row": "fail",
                                    "split": "train", "subset": "", "streaming": False})
  with pytest.raises(sources.DataNotFoundError, match="is not a file, folder, glob, hf:<org>/<name> hub id or URL"):
    sources.load_config(data, "chat")


def test_eval_split_is_read_as_the_held_out_set(saved, tmp_path):
  import datasets
  from configs import dpo as dpo_config
  from configs import sft as sft_config
  from jaxllm.data import preference
  from jaxllm.stages import sft as sft_stage

  config = sft_config.get_config("tiny")
  config.data.update(name=str(saved / "arrow"), eval_split="test")
  chats = sft_stage.load_chats(config)
  assert (len(chats.train), len(chats.eval)) == (6, 2)  # the whole train split, the test split held out
  pairs = [{"prompt": f"{i}+1?", "chosen": str(i + 1), "rejected": str(i)} for i in range(5)]
  datasets.DatasetDict({"train": datasets.Dataset.from_list(pairs[:3]),
                        "test": datasets.Dataset.from_list(pairs[3:])}).save_to_disk(str(tmp_path / "pairs"))
  config = dpo_config.get_config("tiny")
  config.data.update(name=str(tmp_path / "pairs"), eval_split="test")
  train, held, skipped = preference.records(config)
  assert [r["chosen"] for r in train] == ["1", "2", "3"] and [r["chosen"] for r in held] == ["4", "5"]
