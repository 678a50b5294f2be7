"""Stage `pipeline`: tokenizer -> pretrain -> SFT -> reward model -> GRPO, DPO as a side branch, then held-out
evaluation, each stage in workdir/<stage> with init_from the stage before; then workdir/report.md.

  python run.py --config=configs/pipeline.py --config.workdir=runs/pipeline
  python run.py --config=configs/pipeline.py:tiny --config.workdir=/tmp/p      # smoke size

A stage that finished (workdir/<stage>/summary.json) is skipped on a re-run; an interrupted one resumes from
its last checkpoint. Every stage's config is a sub-config (`--config.sft.steps=300`).
"""
from __future__ import annotations

import glob
import json
import os
import time

import ml_collections

from jaxllm import stages
from jaxllm import pipeline_report, wandb_sink

# (name = its sub-config and workdir, the stage whose workdir is its init_from, the stage whose workdir holds its
# tokenizer when it has no init_from). Order matters: each stage reads the ones before it.
CHAIN = (
    ("tokenizer", None, None),
    ("pretrain", None, "tokenizer"),
    ("sft", "pretrain", None),
    ("reward", "sft", None),
    ("grpo", "sft", None),
    ("dpo", "sft", None),
    ("rft", "sft", None),  # optional (not in configs/pipeline.py's default pipeline.stages)
    ("ppo", "sft", None),  # optional
    ("eval_sft", "sft", None),
    ("eval_grpo", "grpo", None),
    # optional (not in pipeline.stages by default): SFT with calculator calls, evaluated with the calculator
    ("sft_tools", "pretrain", None),
    ("eval_sft_tools", "sft_tools", None),
    ("classify", "sft", None),  # optional
)


def stage_config(config: ml_collections.ConfigDict, name: str, parent: str | None, tokenizer_from: str | None):
  sub = ml_collections.ConfigDict(config[name].to_dict())
  sub.seed = config.seed
  sub.workdir = os.path.join(config.workdir, name)
  if tokenizer_from is not None:
    sub.tokenizer.path = os.path.join(config.workdir, tokenizer_from)  # a tokenizer-stage workdir
  if parent is not None:
    sub.init_from = os.path.join(config.workdir, parent)
  if config.log.wandb:  # one W&B group per pipeline, one run per stage
    sub.log.update(config.log.to_dict())
    sub.log.wandb_group = config.log.wandb_group or os.path.basename(os.path.abspath(config.workdir))
    sub.log.wandb_run_name = name
  return sub


def run(config: ml_collections.ConfigDict) -> dict:
  workdir = config.workdir or os.path.join("runs", "pipeline")
  config = ml_collections.ConfigDict(config.to_dict())
  config.workdir = workdir
  wanted = [s.strip() for s in config.pipeline.stages.split(",") if s.strip()]  # names checked by validate
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, "config.json"), "w") as f:
    json.dump(config.to_dict(), f, indent=2, sort_keys=True)
  summaries = {}
  for name, parent, tokenizer_from in CHAIN:
    if name not in wanted:
      continue
    sub = stage_config(config, name, parent, tokenizer_from)
    done = os.path.join(sub.workdir, "summary.json")
    if os.path.exists(done):
      with open(done) as f:
        summaries[name] = json.load(f)
      print(f"pipeline: {name} already finished ({done}); skipped", flush=True)
      continue
    print(f"pipeline: running {name} in {sub.workdir}", flush=True)
    start = time.perf_counter()
    summary = dict(stages.run(sub))
    summary["wall_seconds"] = time.perf_counter() - start
    os.makedirs(sub.workdir, exist_ok=True)
    with open(done + ".tmp", "w") as f:
      json.dump(summary, f, indent=1, default=str)
    os.replace(done + ".tmp", done)  # a stage counts as finished only once its summary is whole
    summaries[name] = summary
  path = pipeline_report.write(workdir, config, summaries)
  print(f"pipeline: report written to {path}", flush=True)
  if config.log.wandb:
    config.log.wandb_group = config.log.wandb_group or os.path.basename(os.path.abspath(workdir))
    wandb_sink.log_report(config, path, sorted(glob.glob(os.path.join(workdir, "*.png"))))
  return {name: {k: v for k, v in s.items() if isinstance(v, (int, float))} for name, s in summaries.items()}
