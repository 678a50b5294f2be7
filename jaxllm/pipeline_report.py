"""workdir/report.md for a pipeline run: one results table, the machine, seeds and config hashes, and plots."""
from __future__ import annotations

import hashlib
import json
import os
import platform

import jax
import ml_collections

from jaxllm import report
from jaxllm.metrics import read_metrics

# stage -> (label of its held-out metric, key in the stage's summary, direction a reader should expect)
HELD_OUT = {
    "tokenizer": ("vocabulary size", "n_vocab"),
    "pretrain": ("held-out perplexity", "eval_ppl"),
    "sft": ("answer-format compliance", "eval_answer_format"),
    "reward": ("held-out pair accuracy", "eval_accuracy"),
    "grpo": ("held-out pass@1", "eval_accuracy"),
    "dpo": ("held-out pair accuracy", "eval_accuracy"),
    "eval_sft": ("pass@1 of the SFT model", "accuracy"),
    "eval_grpo": ("pass@1 of the GRPO model", "accuracy"),
}


def _run_config(workdir: str) -> dict:
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    return {}
  with open(path) as f:
    return json.load(f)


def _config_hash(cfg: dict) -> str:
  return hashlib.sha1(json.dumps(cfg, sort_keys=True).encode()).hexdigest()[:10]


def _tokens_seen(cfg: dict, steps) -> int | None:
  try:
    return int(steps) * cfg["data"]["batch_size"] * cfg["data"]["seq_len"]
  except (KeyError, TypeError, ValueError):
    return None


def _rows(workdir: str, summaries: dict) -> list[list]:
  rows = []
  for name, summary in summaries.items():
    cfg = _run_config(os.path.join(workdir, name))
    label, key = HELD_OUT.get(name, ("", ""))
    value = summary.get(key)
    if name == "pretrain" and "unigram_ppl" in summary:
      label += f" (unigram baseline {report.fmt(summary['unigram_ppl'])})"
    steps = summary.get("step")
    rows.append([name, steps, f"{summary.get('wall_seconds', 0):.0f}", _tokens_seen(cfg, steps),
                 summary.get("train_loss"), label, value, cfg.get("seed"), _config_hash(cfg) if cfg else None])
  return rows


def _plots(workdir: str, summaries: dict) -> list[str]:
  files = []
  losses = {}
  for name in summaries:
    rows = [r for r in read_metrics(os.path.join(workdir, name)) if r["split"] == "train" and r.get("loss")]
    if rows:
      losses[name] = ([r["step"] for r in rows], [r["loss"] for r in rows])
  for name, curve in losses.items():
    files.append(report.plot_curves(os.path.join(workdir, f"loss_{name}.png"), {name: curve},
                                    title=f"{name}: training loss", xlabel="optimizer step",
                                    ylabel="loss (nats per target token)" if name in ("pretrain", "sft")
                                    else "loss"))
  grpo = read_metrics(os.path.join(workdir, "grpo"))
  reward = [(r["step"], r["reward_mean"]) for r in grpo if r["split"] == "train" and r.get("reward_mean") is not None]
  acc = [(r["step"], r["accuracy"]) for r in grpo if r["split"] == "eval" and r.get("accuracy") is not None]
  if reward:
    files.append(report.plot_curves(os.path.join(workdir, "grpo_reward.png"),
                                    {"mean reward of sampled answers": tuple(map(list, zip(*reward)))},
                                    title="GRPO: reward during training", xlabel="optimizer step",
                                    ylabel="mean reward (0 = wrong, 1 = right)"))
  if acc:
    files.append(report.plot_curves(os.path.join(workdir, "grpo_accuracy.png"),
                                    {"held-out pass@1 (greedy)": tuple(map(list, zip(*acc)))},
                                    title="GRPO: held-out accuracy", xlabel="optimizer step",
                                    ylabel="pass@1 (share of problems solved)"))
  return files


def write(workdir: str, config: ml_collections.ConfigDict, summaries: dict) -> str:
  devices = jax.devices()
  header = ["stage", "steps", "wall time (s)", "tokens seen", "final train loss", "held-out metric", "value",
            "seed", "config hash"]
  total = sum(s.get("wall_seconds", 0) for s in summaries.values())
  plots = _plots(workdir, summaries)
  configs = "\n".join(f"- `{name}`: [{name}/config.json]({name}/config.json)" for name in summaries)
  text = f"""# jaxllm pipeline report

Workdir `{os.path.abspath(workdir)}`, seed {config.seed}, total wall time {total:.0f} s
(stages skipped on a re-run keep the time of the run that finished them).

{report.markdown_table(header, _rows(workdir, summaries))}

Tokens seen = steps x batch size x sequence length (padding included; for GRPO, whose batch is samples, each
sample's own row: the model runs over one shorter row per group, its prompt once). Held-out metrics are
measured on problems, documents or pairs that no stage trained on.

## Machine
- jax {jax.__version__}, backend `{jax.default_backend()}`, {len(devices)} device(s): {devices[0].device_kind}
- {platform.platform()}, Python {platform.python_version()}, {os.cpu_count()} CPU(s) visible

## Plots
{chr(10).join(f"![{p}]({p})" for p in plots)}

## Resolved configs
{configs}
"""
  path = os.path.join(workdir, "report.md")
  with open(path, "w") as f:
    f.write(text)
  return path
