"""The quickstart pipeline at smoke size: every stage runs, the report appears, a re-run skips finished stages."""
import json
import os

from conftest import REPO  # noqa: F401  (puts the repo on sys.path for configs)
from configs import pipeline as pipeline_config
from jaxllm import pipeline_report, stages


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
  # every curve starts at the model its stage started from: GRPO's held-out pass@1 at step 0 is the SFT model's
  steps, accuracy = pipeline_report.held_out_series(str(tmp_path), "grpo", "eval_accuracy")
  assert steps[0] == 0 and steps[-1] == config.grpo.steps and len(steps) > 2
  assert accuracy[0] == result["sft"]["eval_accuracy"] and accuracy[-1] == result["grpo"]["eval_accuracy"]
  for name in ("pretrain", "sft", "reward", "grpo", "dpo"):
    assert os.path.exists(tmp_path / f"heldout_{name}.png")
  sft_row = next(line for line in report.splitlines() if line.startswith("| sft |") and "pass@1" in line)
  grpo_row = next(line for line in report.splitlines() if line.startswith("| grpo |"))
  start, value, change = grpo_row.split(" | ")[6:9]  # the GRPO row: SFT's pass@1, GRPO's, the difference
  assert start == f"{100 * result['sft']['eval_accuracy']:.1f}%" and start in sft_row
  assert change == f"{100 * (result['grpo']['eval_accuracy'] - result['sft']['eval_accuracy']):+.1f} points"
  capsys.readouterr()
  again = stages.run(config)
  out = capsys.readouterr().out
  assert out.count("already finished") == 8
  assert again["pretrain"]["eval_ppl"] == result["pretrain"]["eval_ppl"]
