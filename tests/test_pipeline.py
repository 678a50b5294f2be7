"""The quickstart pipeline at smoke size: every stage runs, the report appears, a re-run skips finished stages."""
import json
import os

from conftest import REPO  # noqa: F401  (puts the repo on sys.path for configs)
from configs import pipeline as pipeline_config
from jaxllm import stages


def test_tiny_pipeline_end_to_end_and_rerun_skips(tmp_path, capsys):
  config = pipeline_config.get_config("tiny")
  config.workdir = str(tmp_path)
  for name in ("pretrain", "sft", "reward", "grpo", "dpo"):
    config[name].log.tensorboard = False
  result = stages.run(config)  # run.py's own entry: validation, workdir lock, then the pipeline
  assert set(result) == {"tokenizer", "pretrain", "sft", "reward", "grpo", "dpo", "eval_sft", "eval_grpo"}
  for name in ("pretrain", "sft", "reward", "grpo", "dpo"):
    saved = json.load(open(tmp_path / name / "config.json"))
    assert saved["seed"] == config.seed
    if name != "pretrain":
      assert saved["init_from"] == str(tmp_path / ("sft" if name in ("reward", "grpo", "dpo") else "pretrain"))
  report = (tmp_path / "report.md").read_text()
  assert "| pretrain | 20 |" in report and "unigram baseline" in report and "pass@1 of the GRPO model" in report
  assert os.path.exists(tmp_path / "loss_pretrain.png") and os.path.exists(tmp_path / "grpo_reward.png")
  capsys.readouterr()
  again = stages.run(config)
  out = capsys.readouterr().out
  assert out.count("already finished") == 8
  assert again["pretrain"]["eval_ppl"] == result["pretrain"]["eval_ppl"]
