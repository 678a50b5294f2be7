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
  assert not os.path.exists(tmp_path / "heldout_eval_sft.png")  # an evaluation-only stage: one point, no curve
  assert "| eval_sft | – |" in report and "| pass@1 of the SFT model | – |" in report
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


def test_pipeline_seeds_table_from_finished_runs(tmp_path, monkeypatch, capsys):
  """experiments/pipeline_seeds.py over finished stages: the base lends its own seed's SFT and GRPO (same config),
  every seed's SFT value is its GRPO's step-0 evaluation, and the table holds mean ± sample std of the gain."""
  import importlib.util
  spec = importlib.util.spec_from_file_location("pipeline_seeds", os.path.join(REPO, "experiments", "pipeline_seeds.py"))
  seeds = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(seeds)

  def finish(workdir, name, summary, evals=()):
    os.makedirs(workdir / name, exist_ok=True)
    (workdir / name / "summary.json").write_text(json.dumps({**summary, "wall_seconds": 1.0}))
    (workdir / name / "metrics.jsonl").write_text(
        "".join(json.dumps({"step": s, "split": "eval", "accuracy": a}) + "\n" for s, a in evals))

  base = tmp_path / "base"
  config = pipeline_config.get_config()
  (tmp_path / "base").mkdir()
  (base / "config.json").write_text(json.dumps(config.to_dict()))  # seed 0: lends its sft and grpo
  finish(base, "tokenizer", {"n_vocab": 571})
  finish(base, "pretrain", {"step": 300, "eval_ppl": 1.9})
  for seed, sft, grpo in ((0, 0.70, 0.90), (1, 0.60, 0.85)):
    workdir = base if seed == 0 else tmp_path / "out" / f"seed_{seed}"
    finish(workdir, "sft", {"step": 400, "eval_accuracy": sft + 0.01, "eval_answer_format": 1.0})
    finish(workdir, "grpo", {"step": 60, "eval_accuracy": grpo}, evals=((0, sft), (60, grpo)))
  monkeypatch.setattr("sys.argv", ["pipeline_seeds.py", f"--out={tmp_path / 'out'}", f"--base={base}", "--seeds=0,1"])
  seeds.main()
  out = capsys.readouterr().out
  assert "running" not in out  # nothing trained: every stage was finished or lent
  assert os.path.realpath(tmp_path / "out" / "seed_0" / "grpo") == str(base / "grpo")
  rows = json.load(open(tmp_path / "out" / "pipeline_seeds.json"))["seeds"]
  assert [round(r["gain_points"], 6) for r in rows] == [20.0, 25.0]  # from GRPO's step 0, not SFT's last eval
  assert "| mean ± std | 100.0 ± 0.0% | 65.0 ± 7.1% | 87.5 ± 3.5% | +22.5 ± 3.5 |" in out
  assert "PASS: GRPO adds +22.5 ± 3.5 points" in out
