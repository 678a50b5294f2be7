"""Dataset readers: every file type, every format, LLaMA-Factory registry semantics, errors that name the
file and row, and every entry of the real ../shared/data registry."""
import csv
import gzip
import json
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jaxllm.data import sources
from jaxllm.data.sources import DataError, load, load_file, load_registry, read_rows, resolve

SHARED_DATA = Path(os.environ.get("JAXLLM_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))

ROWS = [{"instruction": "Add 2 and 3.", "input": "", "output": "5"},
        {"instruction": "Translate", "input": "bonjour", "output": "hello"}]


def _write(path: Path, rows: list[dict]) -> Path:
  """Writes `rows` in the format its suffix names (.json, .jsonl, .csv, .parquet, .txt; optionally .gz)."""
  name = path.name[:-3] if path.name.endswith(".gz") else path.name
  ext = os.path.splitext(name)[1]
  if ext == ".parquet":
    sink = pa.BufferOutputStream()
    pq.write_table(pa.Table.from_pylist(rows), sink)
    data = sink.getvalue().to_pybytes()
  elif ext == ".json":
    data = json.dumps(rows, ensure_ascii=False).encode()
  elif ext == ".jsonl":
    data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode()
  elif ext == ".txt":
    data = "".join(r["text"] + "\n" for r in rows).encode()
  elif ext == ".csv":
    with open(path.with_suffix(".tmp"), "w", newline="", encoding="utf-8") as f:
      writer = csv.DictWriter(f, fieldnames=list(rows[0]))
      writer.writeheader()
      writer.writerows(rows)
    data = path.with_suffix(".tmp").read_bytes()
  else:
    raise AssertionError(ext)
  path.write_bytes(gzip.compress(data) if path.name.endswith(".gz") else data)
  return path


# ------------------------------------------------------------------------------------------------ file types

@pytest.mark.parametrize("name", ["d.json", "d.jsonl", "d.csv", "d.parquet", "d.jsonl.gz", "d.json.gz", "d.csv.gz",
                                  "d.parquet.gz"])
def test_read_rows_every_file_type(tmp_path, name):
  path = _write(tmp_path / name, ROWS)
  result = read_rows(str(path))
  assert result.records == ROWS and result.skipped == 0 and result.source == str(path)


def test_read_rows_txt_and_json_data_key(tmp_path):
  (tmp_path / "a.txt").write_text("first line\n\n  \nsecond line\n", encoding="utf-8")
  assert read_rows(tmp_path / "a.txt").records == [{"text": "first line"}, {"text": "second line"}]
  (tmp_path / "b.json").write_text(json.dumps({"version": 1, "data": ROWS}))
  assert read_rows(tmp_path / "b.json").records == ROWS


def test_read_rows_folder_reads_files_in_order(tmp_path):
  _write(tmp_path / "b.jsonl", ROWS[1:])
  _write(tmp_path / "a.json", ROWS[:1])
  (tmp_path / "notes.md").write_text("ignored")
  assert read_rows(tmp_path).records == ROWS


# ----------------------------------------------------------------------------------------------- bad files

def test_malformed_jsonl_line_names_file_and_line(tmp_path):
  path = tmp_path / "broken.jsonl"
  path.write_text(json.dumps(ROWS[0]) + "\n\n" + '{"instruction": "x", "output": \n' + json.dumps(ROWS[1]) + "\n")
  with pytest.raises(DataError, match=r"broken\.jsonl: line 3: invalid JSON"):
    read_rows(path)
  result = read_rows(path, on_bad="skip")
  assert result.records == ROWS and result.skipped == 1
  assert "broken.jsonl: line 3" in result.skip_reasons[0]
  result = load_file(path, "alpaca", "chat", on_bad="skip")
  assert len(result.records) == 2 and result.skipped == 1


def test_json_array_errors_give_the_0_based_index(tmp_path):
  path = tmp_path / "d.json"
  path.write_text(json.dumps([ROWS[0], "not an object", {"instruction": "q", "input": "", "output": 7}]))
  with pytest.raises(DataError, match=r"d\.json: index 1 \(0-based\): expected a JSON object"):
    read_rows(path)
  result = load_file(path, "alpaca", "chat", on_bad="skip")
  assert len(result.records) == 1 and result.skipped == 2
  assert "d.json: index 2 (0-based): column 'output' must be a string, got int: 7" in result.skip_reasons[1]


def test_invalid_json_document_names_line(tmp_path):
  path = tmp_path / "d.json"
  path.write_text('[\n  {"a": 1},\n  {"a": }\n]')
  with pytest.raises(DataError, match=r"d\.json: line 3 column 9: invalid JSON"):
    read_rows(path)


def test_csv_errors_give_the_line_of_the_record(tmp_path):
  path = tmp_path / "d.csv"
  path.write_text('label,review\n1,"two\nlines"\n0,ok,extra\n1,fine\n', encoding="utf-8")
  with pytest.raises(DataError, match=r"d\.csv: line 4: expected 2 fields"):
    read_rows(path)
  result = load_file(path, "classification", "classification", columns={"prompt": "review", "response": "label"},
                     on_bad="skip")
  assert result.records == [{"text": "two\nlines", "label": "1"}, {"text": "fine", "label": "1"}]
  assert result.skipped == 1


def test_missing_and_empty_files(tmp_path):
  with pytest.raises(FileNotFoundError, match="nope.jsonl"):
    read_rows(tmp_path / "nope.jsonl")
  for name, content in (("e.jsonl", "\n\n"), ("e.txt", ""), ("e.json", "[]"), ("e.csv", "a,b\n")):
    (tmp_path / name).write_text(content)
    with pytest.raises(DataError, match=rf"{name}: empty"):
      read_rows(tmp_path / name)
  (tmp_path / "bad.jsonl").write_text("{\n")
  with pytest.raises(DataError, match="empty"):  # every row skipped is as empty as no rows
    read_rows(tmp_path / "bad.jsonl", on_bad="skip")
  (tmp_path / "d.xml").write_text("<a/>")
  with pytest.raises(DataError, match="unsupported file type"):
    read_rows(tmp_path / "d.xml")


def test_bad_arguments_are_value_errors(tmp_path):
  path = _write(tmp_path / "d.json", ROWS)
  with pytest.raises(ValueError, match="on_bad"):
    read_rows(path, on_bad="ignore")
  with pytest.raises(ValueError, match="on_bad"):
    load_file(path, "alpaca", "chat", on_bad="warn")
  with pytest.raises(ValueError, match="kind 'sft'"):
    load_file(path, "alpaca", "sft")
  with pytest.raises(ValueError, match="formatting 'openai'"):
    load_file(path, "openai", "chat")
  with pytest.raises(ValueError, match="needs ranking data"):
    load_file(path, "alpaca", "preference", ranking=False)
  with pytest.raises(ValueError, match="cannot be read as kind='chat'"):
    load_file(path, "classification", "chat")


# -------------------------------------------------------------------------------------------------- alpaca

def test_alpaca_chat_with_history_system_and_tools(tmp_path):
  rows = [{"instruction": "And 3 + 4?", "input": "Be brief.", "output": "7", "system": "You add.",
           "history": [["1 + 1?", "2"], ["2 + 2?", "4"]], "tools": ""}]
  path = _write(tmp_path / "d.json", rows)
  columns = {"prompt": "instruction", "query": "input", "response": "output", "system": "system",
             "history": "history", "tools": "tools"}
  [rec] = load_file(path, "alpaca", "chat", columns=columns).records
  assert rec == {"messages": [{"role": "system", "content": "You add."},
                              {"role": "user", "content": "1 + 1?"}, {"role": "assistant", "content": "2"},
                              {"role": "user", "content": "2 + 2?"}, {"role": "assistant", "content": "4"},
                              {"role": "user", "content": "And 3 + 4?\nBe brief."},
                              {"role": "assistant", "content": "7"}], "tools": ""}
  # Without a columns dict only instruction/input/output are read (LLaMA-Factory defaults).
  [rec] = load_file(path, "alpaca", "chat").records
  assert [m["role"] for m in rec["messages"]] == ["user", "assistant"]
  [rec] = load_file(path, "alpaca", "text", columns=columns).records
  assert rec["text"] == "You add.\n\n1 + 1?\n\n2\n\n2 + 2?\n\n4\n\nAnd 3 + 4?\nBe brief.\n\n7"


@pytest.mark.parametrize("row,error", [
    ({"input": "x", "output": "y"}, "missing required column 'instruction'"),
    ({"instruction": "  ", "input": "", "output": "y"}, "empty user prompt"),
    ({"instruction": "q", "input": "", "output": ""}, "empty answer"),
    ({"instruction": "q", "input": ""}, "missing required column 'output'"),
    ({"instruction": ["q"], "output": "y"}, "column 'instruction' must be a string, got list"),
])
def test_alpaca_row_errors(tmp_path, row, error):
  path = _write(tmp_path / "d.jsonl", [ROWS[0], row])
  with pytest.raises(DataError, match=rf"d\.jsonl: line 2: .*{error}"):
    load_file(path, "alpaca", "chat")
  assert load_file(path, "alpaca", "chat", on_bad="skip").skipped == 1


def test_alpaca_ranking_pairs(tmp_path):
  rows = [{"instruction": "2+2?", "input": "", "chosen": "4", "rejected": "5"},
          {"instruction": "3+3?", "input": "", "chosen": "6", "rejected": "6"},
          {"instruction": "4+4?", "input": "", "chosen": "8"}]
  path = _write(tmp_path / "d.jsonl", rows)
  with pytest.raises(DataError, match=r"line 2: chosen and rejected are identical"):
    load_file(path, "alpaca", "preference")
  result = load_file(path, "alpaca", "preference", on_bad="skip")
  assert result.records == [{"messages": [{"role": "user", "content": "2+2?"}], "chosen": "4", "rejected": "5"}]
  assert result.skipped == 2
  assert "line 3: missing required column 'rejected'" in result.skip_reasons[1]


# ------------------------------------------------------------------------------------------------ sharegpt

def _msg(who, text):
  return {"from": who, "value": text}


def test_sharegpt_roles_tools_and_system(tmp_path):
  conv = [_msg("system", "Be helpful."), _msg("human", "Weather?"), _msg("function_call", '{"name": "w"}'),
          _msg("observation", '{"t": 20}'), _msg("gpt", "20 degrees.")]
  path = _write(tmp_path / "d.json", [{"conversations": conv, "tools": '[{"name": "w"}]'}])
  [rec] = load_file(path, "sharegpt", "chat", columns={"messages": "conversations", "tools": "tools"}).records
  assert rec == {"messages": [{"role": "system", "content": "Be helpful."}, {"role": "user", "content": "Weather?"},
                              {"role": "function_call", "content": '{"name": "w"}'},
                              {"role": "tool", "content": '{"t": 20}'}, {"role": "assistant", "content": "20 degrees."}],
                 "tools": '[{"name": "w"}]'}


@pytest.mark.parametrize("conv,error", [
    ([_msg("gpt", "hi"), _msg("human", "hello")], r"conversations\[0\]: role 'gpt' at turn 1"),
    ([_msg("human", "a"), _msg("human", "b")], r"conversations\[1\]: role 'human' at turn 2"),
    ([_msg("human", "a"), _msg("observation", "b")], r"role 'observation' at turn 2"),
    ([_msg("human", "a"), _msg("gpt", "b"), _msg("human", "c")], "3 turns; a conversation must end with an assist"),
    ([_msg("system", "s"), _msg("system", "t"), _msg("gpt", "b")], r"conversations\[1\]: role 'system' at turn 1"),
    ([_msg("human", "a"), {"from": "gpt", "value": 3}], r"conversations\[1\]\['value'\] must be a string"),
    ([_msg("human", "a"), {"from": "gpt"}], r"conversations\[1\] has no 'value' key"),
    ([_msg("human", ""), _msg("gpt", "b")], "empty user prompt"),
    ([_msg("human", "a"), _msg("gpt", " ")], "empty answer"),
    ([], "has no turns"),
])
def test_sharegpt_llamafactory_turn_rules(tmp_path, conv, error):
  path = _write(tmp_path / "d.jsonl", [{"conversations": [_msg("human", "q"), _msg("gpt", "a")]},
                                       {"conversations": conv}])
  with pytest.raises(DataError, match=rf"d\.jsonl: line 2: .*{error}"):
    load_file(path, "sharegpt", "chat")
  assert load_file(path, "sharegpt", "chat", on_bad="skip").skipped == 1


def test_sharegpt_tags_remap_role_content_messages(tmp_path):
  info = tmp_path / "dataset_info.json"
  rows = [{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"},
                        {"role": "user", "content": "bye"}, {"role": "assistant", "content": "ciao"}]}]
  (tmp_path / "sub").mkdir()
  _write(tmp_path / "sub" / "oai.jsonl", rows)
  tags = {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant"}
  registry = {"oai": {"file_name": "sub/oai.jsonl", "formatting": "sharegpt", "columns": {"messages": "messages"},
                      "tags": tags},
              "oai_sys": {"file_name": "sub/oai_sys.jsonl", "formatting": "sharegpt",
                          "columns": {"messages": "messages"}, "tags": {**tags, "system_tag": "system"}}}
  info.write_text(json.dumps(registry))
  [rec] = load("oai", str(info), "chat").records
  assert rec["messages"] == rows[0]["messages"] and rec["tools"] == ""
  # A "tags" dict that does not name system_tag leaves it unset (LLaMA-Factory), so a system turn is invalid.
  with_system = [{"messages": [{"role": "system", "content": "Be nice."}] + rows[0]["messages"]}]
  _write(tmp_path / "sub" / "oai.jsonl", with_system)
  with pytest.raises(DataError, match=r"oai\.jsonl: line 1: messages\[0\]: role 'system'"):
    load("oai", str(info), "chat")
  _write(tmp_path / "sub" / "oai_sys.jsonl", with_system)
  [rec] = load("oai_sys", str(info), "chat").records
  assert rec["messages"] == with_system[0]["messages"]


def test_sharegpt_ranking(tmp_path):
  prompt = [_msg("human", "q1"), _msg("gpt", "a1"), _msg("human", "q2")]
  rows = [{"conversations": prompt, "chosen": _msg("gpt", "good"), "rejected": _msg("gpt", "bad")},
          {"conversations": prompt, "chosen": _msg("gpt", "same"), "rejected": _msg("gpt", "same")},
          {"conversations": prompt, "chosen": _msg("gpt", "good")},
          {"conversations": prompt[:2], "chosen": _msg("gpt", "good"), "rejected": _msg("gpt", "bad")},
          {"conversations": prompt, "chosen": _msg("human", "good"), "rejected": _msg("gpt", "bad")}]
  path = _write(tmp_path / "d.json", rows)
  result = load_file(path, "sharegpt", "preference", on_bad="skip")
  assert result.records == [{"messages": [{"role": "user", "content": "q1"}, {"role": "assistant", "content": "a1"},
                                          {"role": "user", "content": "q2"}], "chosen": "good", "rejected": "bad"}]
  assert result.skipped == 4
  reasons = "\n".join(result.skip_reasons)
  for i, error in ((1, "chosen and rejected are identical"), (2, "missing required column 'rejected'"),
                   (3, "column 'conversations' has 2 turns; a ranking prompt must end with a user turn"), (4, "chosen: role 'human'")):
    assert f"d.json: index {i} (0-based): {error}" in reasons
  with pytest.raises(DataError, match=r"index 1 \(0-based\): chosen and rejected are identical"):
    load_file(path, "sharegpt", "preference")
  [rec] = load_file(path, "sharegpt", "chat", ranking=True, on_bad="skip").records  # SFT on the chosen answer
  assert rec["messages"][-1] == {"role": "assistant", "content": "good"}


# ------------------------------------------------------------------------------------- hh-rlhf, gsm8k, others

HH_PROMPT = "\n\nHuman: How do I boil an egg?\n\nAssistant: Put it in boiling water.\n\nHuman: For how long?"


def test_hh_rlhf_transcript_split():
  turns = sources.split_hh_transcript(HH_PROMPT + "\n\nAssistant: About nine minutes.")
  assert turns == [{"role": "user", "content": "How do I boil an egg?"},
                   {"role": "assistant", "content": "Put it in boiling water."},
                   {"role": "user", "content": "For how long?"},
                   {"role": "assistant", "content": "About nine minutes."}]
  with pytest.raises(ValueError, match="must end with an 'Assistant:' turn"):
    sources.split_hh_transcript(HH_PROMPT)
  with pytest.raises(ValueError, match="turn 2 is 'Human', expected 'Assistant'"):
    sources.split_hh_transcript("\n\nHuman: a\n\nHuman: b\n\nAssistant: c")
  with pytest.raises(ValueError, match="must start with 'Human:'"):
    sources.split_hh_transcript("Hello\n\nAssistant: c")


def test_hh_rlhf_prompt_and_answer_split(tmp_path):
  rows = [{"chosen": HH_PROMPT + "\n\nAssistant: About nine minutes.",
           "rejected": HH_PROMPT + "\n\nAssistant: Forever."},
          {"chosen": HH_PROMPT + "\n\nAssistant: Same.", "rejected": HH_PROMPT + "\n\nAssistant: Same."},
          {"chosen": HH_PROMPT + "\n\nAssistant: A.", "rejected": "\n\nHuman: Other?\n\nAssistant: B."},
          {"chosen": HH_PROMPT + "\n\nAssistant: ", "rejected": HH_PROMPT + "\n\nAssistant: B."},
          {"chosen": HH_PROMPT + "\n\nAssistant: A."}]
  path = _write(tmp_path / "hh.jsonl.gz", rows)
  result = load_file(path, "hh_rlhf", "preference", on_bad="skip")
  assert result.records == [{"messages": [{"role": "user", "content": "How do I boil an egg?"},
                                          {"role": "assistant", "content": "Put it in boiling water."},
                                          {"role": "user", "content": "For how long?"}],
                             "chosen": "About nine minutes.", "rejected": "Forever."}]
  assert result.skipped == 4
  reasons = "\n".join(result.skip_reasons)
  for line, error in ((2, "chosen and rejected are identical"), (3, "chosen and rejected differ before their final Assistant turn (first at turn 1"),
                      (4, "empty chosen answer"), (5, "missing required column 'rejected'")):
    assert f"hh.jsonl.gz: line {line}: {error}" in reasons
  [rec] = load_file(path, "hh_rlhf", "chat", on_bad="skip").records
  assert rec["messages"][-1] == {"role": "assistant", "content": "About nine minutes."}


def test_gsm8k_answers(tmp_path):
  rows = [{"question": "How many?", "answer": "1000 + 234 = <<1000+234=1234>>1234\n#### 1,234"},
          {"question": "What?", "answer": "no marker"},
          {"question": "Empty?", "answer": "work\n#### "}]
  path = _write(tmp_path / "g.jsonl", rows)
  result = load_file(path, "gsm8k", "gsm8k", on_bad="skip")
  assert result.records == [{"question": "How many?", "solution": rows[0]["answer"], "answer": "1234"}]
  assert "line 2: column 'answer' has no '####'" in result.skip_reasons[0]
  assert "line 3: empty answer after '####'" in result.skip_reasons[1]
  [rec] = load_file(path, "gsm8k", "chat", limit=1).records
  assert rec["messages"] == [{"role": "user", "content": "How many?"},
                             {"role": "assistant", "content": rows[0]["answer"]}]


def test_classification_and_text_formats(tmp_path):
  path = _write(tmp_path / "c.parquet", [{"review": "good", "label": 1}, {"review": "bad", "label": 0}])
  columns = {"prompt": "review", "response": "label"}
  assert load_file(path, "classification", "classification", columns=columns).records == [
      {"text": "good", "label": "1"}, {"text": "bad", "label": "0"}]
  assert load_file(path, "classification", "text", columns=columns).records == [{"text": "good"}, {"text": "bad"}]
  path = _write(tmp_path / "t.csv", [{"body": "doc one"}, {"body": " "}])
  with pytest.raises(DataError, match=r"t\.csv: line 3: empty text"):
    load_file(path, "text", "text", columns={"prompt": "body"})


# ------------------------------------------------------------------------------------------------ registry

def test_registry_columns_remap_num_samples_and_limit(tmp_path):
  (tmp_path / "data").mkdir()
  _write(tmp_path / "data" / "qa.csv", [{"q": f"question {i}", "ctx": "", "a": f"answer {i}"} for i in range(5)])
  _write(tmp_path / "data" / "corpus.jsonl", [{"text": "doc a"}, {"text": "doc b"}])
  registry = {"qa": {"file_name": "data/qa.csv", "columns": {"prompt": "q", "query": "ctx", "response": "a"},
                     "num_samples": 3},
              "corpus": {"file_name": "data/corpus.jsonl", "columns": {"prompt": "text"}},
              "plain": {"file_name": "data/corpus.jsonl"}}
  info = tmp_path / "dataset_info.json"
  info.write_text(json.dumps(registry))
  assert load_registry(str(info)) == registry
  entry = resolve("qa", str(info))
  assert entry["file_name"] == str(tmp_path / "data" / "qa.csv") and entry["num_samples"] == 3
  result = load("qa", str(info), "chat")
  assert [r["messages"][0]["content"] for r in result.records] == ["question 0", "question 1", "question 2"]
  assert result.records[0]["messages"][1] == {"role": "assistant", "content": "answer 0"}
  assert len(load("qa", str(info), "chat", limit=2).records) == 2
  assert load("corpus", str(info), "text").records == [{"text": "doc a"}, {"text": "doc b"}]
  assert load("plain", str(tmp_path), "text").records == [{"text": "doc a"}, {"text": "doc b"}]  # registry folder
  with pytest.raises(DataError, match=r"no answer .* chat needs one"):  # {"prompt": "text"} has no response column
    load("corpus", str(info), "chat")


def test_registry_errors(tmp_path):
  info = tmp_path / "dataset_info.json"
  info.write_text(json.dumps({"b": {"file_name": "b.json"}, "a": {"file_name": "a.json", "colums": {}},
                              "h": {"ms_hub_url": "x/y"}, "r": {"file_name": "r.json", "num_samples": 0}}))
  with pytest.raises(DataError, match=r"dataset_info\.json: unknown dataset 'c'; known datasets: a, b, h, r"):
    resolve("c", str(info))
  with pytest.raises(DataError, match=r"dataset 'a': unknown keys \['colums'\]"):
    load("a", str(info), "chat")
  with pytest.raises(DataError, match=r"needs one of file_name, hf_hub_url, script_url \(ms_hub_url sources are not supported\)"):
    load("h", str(info), "chat")
  with pytest.raises(DataError, match="num_samples"):
    load("r", str(info), "chat")
  with pytest.raises(FileNotFoundError, match="b.json"):
    load("b", str(info), "chat")
  with pytest.raises(FileNotFoundError, match="missing.json"):
    load_registry(str(tmp_path / "missing.json"))
  info.write_text("{\n  'single quotes': 1}")
  with pytest.raises(DataError, match=r"dataset_info\.json: line 2 column 3: invalid JSON"):
    load_registry(str(info))


# ----------------------------------------------------------------------------------------------- real data

# name -> (kind, records, skipped) for every entry of ../shared/data/dataset_info.json.
REAL = {
    "tinyshakespeare": ("text", 32777, 0),  # non-empty lines of 40,000
    "c4_demo": ("text", 300, 0),
    "wiki_demo": ("text", 30, 0),  # one document a line
    "alpaca_en_demo": ("chat", 999, 0),
    "alpaca_zh_demo": ("chat", 1000, 0),
    "identity": ("chat", 91, 0),
    "glaive_toolcall_en_demo": ("chat", 300, 0),
    "dpo_en_demo": ("preference", 300, 0),
    "dpo_zh_demo": ("preference", 300, 0),
    # 4 rows with an empty chosen answer, 9 with two Assistant turns in a row (in chosen or rejected).
    "hh_rlhf_harmless_test": ("preference", 2312 - 13, 13),
    "gsm8k_train": ("gsm8k", 7473, 0),
    "gsm8k_test": ("gsm8k", 1319, 0),
    "waimai_10k": ("classification", 11987, 0),
}


@pytest.fixture(scope="module")
def registry_path() -> str:
  if not (SHARED_DATA / "dataset_info.json").exists():
    pytest.skip("../shared/data is not present")
  return str(SHARED_DATA / "dataset_info.json")


def test_real_registry_is_fully_covered(registry_path):
  assert sorted(load_registry(registry_path)) == sorted(REAL)


@pytest.mark.parametrize("name", sorted(REAL))
def test_real_dataset_loads(registry_path, name):
  kind, count, skipped = REAL[name]
  result = load(name, registry_path, kind, on_bad="skip" if skipped else "fail")
  assert (len(result.records), result.skipped) == (count, skipped)
  rec = result.records[0]
  keys = {"text": {"text"}, "chat": {"messages", "tools"}, "preference": {"messages", "chosen", "rejected"},
          "gsm8k": {"question", "solution", "answer"}, "classification": {"text", "label"}}[kind]
  assert set(rec) == keys and all(isinstance(v, (str, list)) for v in rec.values())
  if kind in ("chat", "preference"):
    assert rec["messages"][-1 if kind == "preference" else -2]["role"] == "user"
  if kind != "text":  # every SFT / preference / task set also reads as plain text (pretraining on it)
    assert len(load(name, registry_path, "text", on_bad="skip", limit=5).records) == 5


def test_real_data_specifics(registry_path):
  with pytest.raises(DataError, match=r"hh_rlhf_harmless_base_test\.jsonl\.gz: line 87: empty chosen answer"):
    load("hh_rlhf_harmless_test", registry_path, "preference")
  glaive = load("glaive_toolcall_en_demo", registry_path, "chat").records
  roles = {m["role"] for r in glaive for m in r["messages"]}
  assert roles == {"user", "assistant", "function_call", "tool"} and all(r["tools"] for r in glaive)
  gsm = load("gsm8k_test", registry_path, "gsm8k", limit=1).records[0]
  assert gsm["answer"] == "18" and gsm["solution"].endswith("#### 18")
  labels = {r["label"] for r in load("waimai_10k", registry_path, "classification").records}
  assert labels == {"0", "1"}
