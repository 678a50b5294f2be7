"""The lm-evaluation-harness adapter on a tiny model: custom tasks defined here (YAML + local JSONL), scored
through lm_eval, must give jaxllm's own numbers (sequence_logps for choices, the engine for generations)."""
import json
import os

import numpy as np
import pytest

lm_eval = pytest.importorskip("lm_eval")

from conftest import set_dotted, tiny_config  # noqa: E402
from lm_eval.api.instance import Instance  # noqa: E402
from lm_eval.tasks import TaskManager  # noqa: E402

MC_DOCS = [{"question": "Mia has 3 apples and buys 4 more. How many apples?", "choices": ["7 apples", "12"],
            "label": 0},
           {"question": "Tom has 9 coins and loses 2.", "choices": ["seven", "11 coins left"], "label": 1},
           {"question": "What is 2 * 3?", "choices": [" 6", "5"], "label": 0}]
GEN_DOCS = [{"question": "Sam has 1 coin. He finds 14 more.", "answer": "15"},
            {"question": "Each box holds 3 eggs. How many eggs are in 4 boxes?", "answer": "12"},
            {"question": "Anna reads 5 books.", "answer": "5"}]
SYSTEM = "Solve the problem."
GEN_TOKENS = 8

MC_YAML = """task: tiny_mc
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
output_type: multiple_choice
test_split: test
doc_to_text: "Question: {{{{question}}}}\\nAnswer:"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: label
metric_list:
  - metric: acc
"""
GEN_YAML = """task: tiny_gen
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
output_type: generate_until
test_split: test
doc_to_text: "{{{{question}}}}"
doc_to_target: "{{{{answer}}}}"
generation_kwargs:
  until: ["<|im_end|>"]
  max_gen_toks: {tokens}
  do_sample: false
metric_list:
  - metric: exact_match
"""


@pytest.fixture(scope="module")
def task_dir(tmp_path_factory) -> str:
  folder = tmp_path_factory.mktemp("lm_eval_tasks")
  for name, docs, yaml in (("tiny_mc", MC_DOCS, MC_YAML), ("tiny_gen", GEN_DOCS, GEN_YAML)):
    data = folder / f"{name}.jsonl"
    data.write_text("".join(json.dumps(d) + "\n" for d in docs))
    (folder / f"{name}.yaml").write_text(yaml.format(data=json.dumps(str(data)), tokens=GEN_TOKENS))
  return str(folder)


@pytest.fixture(scope="module")
def lm(initial_pretrain_workdir, tmp_path_factory):
  from jaxllm.lm_eval_model import JaxLLM

  return JaxLLM(workdir=initial_pretrain_workdir, output=str(tmp_path_factory.mktemp("lm_eval_env")), batch_size=4)


def _samples(lm, task_dir, task, **kwargs) -> list[dict]:
  manager = TaskManager(include_path=task_dir, include_defaults=False)  # indexing lm_eval's own tasks takes >1 min
  out = lm_eval.simple_evaluate(model=lm, tasks=[task], task_manager=manager, log_samples=True, **kwargs)
  return sorted(out["samples"][task], key=lambda s: s["doc_id"])


def test_multiple_choice_loglikelihoods_equal_sequence_logps(lm, task_dir):
  from jaxllm.data import preference
  from jaxllm.losses.dpo import sequence_logps

  samples = _samples(lm, task_dir, "tiny_mc")
  tok = lm.env.tokenizer
  seq_len = lm.env.model_cfg.max_seq_len
  ids = np.full((len(samples), 2, seq_len), tok.pad_id, np.int32)
  lengths = np.zeros((len(samples), 2), np.int32)
  prompt_len = np.zeros(len(samples), np.int32)
  for n, sample in enumerate(samples):
    (context, _), _ = sample["arguments"]  # both requests share the context
    prompt = tok.encode(context)
    for s, (_, continuation) in enumerate(sample["arguments"]):
      seq = tok.encode(context + continuation)
      assert seq[:len(prompt)] == prompt, "the context's tokens must be a prefix of the whole row's"
      ids[n, s, :len(seq)], lengths[n, s] = seq, len(seq)
    prompt_len[n] = len(prompt)
  batch = preference.make_batch(preference.Pairs(ids, lengths, prompt_len, pad_id=tok.pad_id),
                                np.arange(len(samples)))
  with lm.env.mesh_context():
    expected, _ = sequence_logps(lm.env.model, lm.weights, None, batch, None, 0)
  got = np.array([[resp[0][0] for resp in s["resps"]] for s in samples])
  np.testing.assert_allclose(got, np.asarray(expected), rtol=1e-5, atol=1e-4)
  assert [s["acc"] for s in samples] == [float(np.argmax(g) == d["label"]) for g, d in zip(got, MC_DOCS)]


def test_chat_generations_equal_the_engines(lm, task_dir):
  from jaxllm import evals

  samples = _samples(lm, task_dir, "tiny_gen", apply_chat_template=True, system_instruction=SYSTEM)
  conversations = [[{"role": "system", "content": SYSTEM}, {"role": "user", "content": d["question"]}]
                   for d in GEN_DOCS]
  with lm.env.mesh_context():
    expected = evals.generate_answers(lm.env, lm.weights, None, conversations, max_new_tokens=GEN_TOKENS)
  assert [s["resps"][0][0] for s in samples] == expected
  assert all(e for e in expected)  # a random model still writes something: the comparison is not of empties


def test_rolling_loglikelihood_is_the_documents_log_probability(lm):
  from jaxllm.losses.common import target_logprobs

  text = "Mia has 3 apples. She buys 4 more apples. Now she has 7 apples."
  ids = [lm.env.tokenizer.eot_id] + lm.env.tokenizer.encode(text)
  (got,) = lm.loglikelihood_rolling([Instance("loglikelihood_rolling", {}, (text,), 0)])
  batch = {"tokens": np.array([ids[:-1]], np.int32), "targets": np.array([ids[1:]], np.int32)}
  with lm.env.mesh_context():
    expected = float(target_logprobs(lm.env.model, lm.weights, None, batch, None)[0].sum())
  assert got == pytest.approx(expected, rel=1e-5)
  # a document several windows long scores every token once: as many targets as tokens
  long_ids = lm.env.tokenizer.encode(" ".join([text] * 30))
  assert len(long_ids) > 2 * lm.max_length
  (long,) = lm.loglikelihood_rolling([Instance("loglikelihood_rolling", {}, (" ".join([text] * 30),), 0)])
  assert np.isfinite(long) and long < got


def test_eval_stage_lm_eval_task_writes_results_metrics_and_json(initial_pretrain_workdir, task_dir, tmp_path,
                                                                 tokenizer_dir):
  from jaxllm import stages
  from jaxllm.metrics import read_metrics

  config = tiny_config("eval", tmp_path / "eval", tokenizer_dir,
                       **{"init_from": initial_pretrain_workdir, "eval.task": "lm_eval:tiny_mc",
                          "eval.lm_eval_include": task_dir, "eval.batch_size": 4})
  result = stages.run(config)
  assert result["task"] == "lm_eval:tiny_mc" and 0.0 <= result["tiny_mc/acc"] <= 1.0
  with open(tmp_path / "eval" / "lm_eval" / "results.json") as f:
    assert json.load(f)["results"]["tiny_mc"]["acc,none"] == result["tiny_mc/acc"]
  assert os.path.exists(tmp_path / "eval" / "lm_eval" / "samples_tiny_mc.jsonl")
  (row,) = read_metrics(str(tmp_path / "eval"))
  assert row["split"] == "eval" and row["tiny_mc/acc"] == result["tiny_mc/acc"]


def test_bad_lm_eval_settings_name_the_key(initial_pretrain_workdir, tmp_path, tokenizer_dir):
  from jaxllm import stages
  from jaxllm.lm_eval_model import JaxLLM

  config = tiny_config("eval", tmp_path / "eval", tokenizer_dir,
                       **{"init_from": initial_pretrain_workdir, "eval.task": "lm_eval: ,"})
  with pytest.raises(ValueError, match="config.eval.task: 'lm_eval: ,' names no lm_eval task"):
    stages.run(config)
  with pytest.raises(ValueError, match="config.eval.lm_eval_include"):
    stages.run(set_dotted(config, {"eval.task": "lm_eval:tiny_mc", "eval.lm_eval_include": str(tmp_path / "nope")}))
  with pytest.raises(ValueError, match="batch_size must be a positive integer, got 'auto'"):
    JaxLLM(workdir=initial_pretrain_workdir, batch_size="auto")
