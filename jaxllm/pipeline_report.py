"""workdir/report.md for a pipeline run: one results table, the machine, seeds and config hashes, and plots."""
from __future__ import annotations

import hashlib
import json
import math
import os
import platform

import jax
import ml_collections

from jaxllm import report
from jaxllm.metrics import read_metrics

# stage -> (label of its held-out metric, key in the stage's summary); a training stage's eval rows in
# metrics.jsonl hold the same metric without the "eval_" prefix, which gives its curve
HELD_OUT = {
    "tokenizer": ("vocabulary size", "n_vocab"),
    "pretrain": ("held-out perplexity", "eval_ppl"),
    "sft": ("answer-format compliance", "eval_answer_format"),
    "reward": ("held-out pair accuracy", "eval_accuracy"),
    "grpo": ("held-out pass@1", "eval_accuracy"),
    "dpo": ("held-out pair accuracy", "eval_accuracy"),
    "rft": ("held-out pass@1", "eval_accuracy"),
    "ppo": ("held-out pass@1", "eval_accuracy"),
    "eval_sft": ("pass@1 of the SFT model", "accuracy"),
    "eval_grpo": ("pass@1 of the GRPO model", "accuracy"),
    "classify": ("held-out accuracy (correct / wrong answer)", "eval_accuracy"),
}
# more held-out metrics a stage's table rows and plot show, after its HELD_OUT one
MORE_HELD_OUT = {"sft": (("held-out pass@1", "eval_accuracy"),), "classify": (("held-out macro-F1", "eval_macro_f1"),)}
# an evaluation-only stage's starting point: the stage it is compared with
COMPARED_WITH = {"eval_grpo": "eval_sft"}
# held-out shares in [0, 1]: shown as percentages, changes in points, plotted on a 0..1 axis
SHARES = ("eval_accuracy", "eval_answer_format", "accuracy", "eval_macro_f1")
CHANCE = {"reward": 0.5, "dpo": 0.5, "classify": 0.5}  # pair accuracy of a coin flip; balanced 2-class accuracy


def held_out_series(workdir: str, stage: str, summary_key: str) -> tuple[list[int], list[float]]:
  """The stage's held-out metric at each evaluation (step 0 = the model it started from, under eval.at_start)."""
  key = summary_key.removeprefix("eval_")
  rows = [r for r in read_metrics(os.path.join(workdir, stage)) if r["split"] == "eval" and r.get(key) is not None]
  return [r["step"] for r in rows], [r[key] for r in rows]


def _show(key: str, value) -> str:
  if isinstance(value, (int, float)) and key in SHARES:
    return f"{100 * value:.1f}%"
  return report.fmt(value)


def _change(key: str, start, value) -> str:
  if not isinstance(start, (int, float)) or not isinstance(value, (int, float)):
    return "–"
  return f"{100 * (value - start):+.1f} points" if key in SHARES else f"{value - start:+.4g}"


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


def _start(workdir: str, name: str, key: str, summaries: dict):
  """The held-out value of the model a stage started from: its step-0 evaluation, or the compared stage's value."""
  if name in COMPARED_WITH:
    return summaries.get(COMPARED_WITH[name], {}).get(key)
  if "step" not in summaries[name]:  # an evaluation-only stage logs its one evaluation at step 0 too
    return None
  steps, values = held_out_series(workdir, name, key)
  return values[0] if steps and steps[0] == 0 else None


def _rows(workdir: str, summaries: dict) -> list[list]:
  rows = []
  for name, summary in summaries.items():
    cfg = _run_config(os.path.join(workdir, name))
    metrics = (HELD_OUT.get(name, ("", "")), *MORE_HELD_OUT.get(name, ()))
    steps = summary.get("step")
    for i, (label, key) in enumerate(metrics):
      value, start = summary.get(key), _start(workdir, name, key, summaries)
      if name == "pretrain" and "unigram_ppl" in summary:
        label += f" (unigram baseline {report.fmt(summary['unigram_ppl'])})"
      run = [name, steps, f"{summary.get('wall_seconds', 0):.0f}", _tokens_seen(cfg, steps), summary.get("train_loss")]
      rows.append((run if i == 0 else [name, "", "", "", ""]) +
                  [label, _show(key, start), _show(key, value), _change(key, start, value),
                   cfg.get("seed"), _config_hash(cfg) if cfg else None])
  return rows


def _plots(workdir: str, summaries: dict) -> list[str]:
  files = []
  for name, summary in summaries.items():
    rows = [r for r in read_metrics(os.path.join(workdir, name)) if r["split"] == "train" and r.get("loss")]
    if not rows:
      continue
    baselines = {}
    if name == "pretrain" and "unigram_ppl" in summary:  # the loss is nats per token: ln(perplexity)
      baselines["unigram model (ln of its perplexity)"] = math.log(summary["unigram_ppl"])
    files.append(report.plot_curves(os.path.join(workdir, f"loss_{name}.png"),
                                    {name: ([r["step"] for r in rows], [r["loss"] for r in rows])},
                                    title=f"{name}: training loss", xlabel="optimizer step",
                                    ylabel="loss (nats per target token)" if name in ("pretrain", "sft") else "loss",
                                    y_from=None if name == "grpo" else 0.0,  # GRPO's surrogate loss is signed
                                    baselines=baselines))
  for name, summary in summaries.items():
    metrics = [m for m in (HELD_OUT.get(name), *MORE_HELD_OUT.get(name, ())) if m is not None]
    curves = {label: held_out_series(workdir, name, key) for label, key in metrics}
    curves = {label: curve for label, curve in curves.items() if len(curve[0]) > 1}
    if "step" not in summary or not curves:  # evaluation-only stages have one point, shown in the table
      continue
    share = metrics[0][1] in SHARES
    baselines = {"chance": CHANCE[name]} if name in CHANCE else {}
    if name == "pretrain" and "unigram_ppl" in summary:
      baselines["unigram model"] = summary["unigram_ppl"]
    files.append(report.plot_curves(os.path.join(workdir, f"heldout_{name}.png"), curves,
                                    title=f"{name}: held-out evaluation (step 0 = the model it started from)",
                                    xlabel="optimizer step", ylabel="share of held-out items" if share else
                                    metrics[0][0], log_y=not share, y_from=0.0 if share else None,
                                    y_to=1.05 if share else None, baselines=baselines))
  grpo = read_metrics(os.path.join(workdir, "grpo"))
  reward = [(r["step"], r["reward_mean"]) for r in grpo if r["split"] == "train" and r.get("reward_mean") is not None]
  if reward:
    files.append(report.plot_curves(os.path.join(workdir, "grpo_reward.png"),
                                    {"mean reward of sampled answers": tuple(map(list, zip(*reward)))},
                                    title="GRPO: reward during training", xlabel="optimizer step",
                                    ylabel="mean reward (0 = wrong, 1 = right)", y_from=0.0))
  return files


def write(workdir: str, config: ml_collections.ConfigDict, summaries: dict) -> str:
  devices = jax.devices()
  header = ["stage", "steps", "wall time (s)", "tokens seen", "final train loss", "held-out metric", "start",
            "value", "change", "seed", "config hash"]
  total = sum(s.get("wall_seconds", 0) for s in summaries.values())
  plots = _plots(workdir, summaries)
  configs = "\n".join(f"- `{name}`: [{name}/config.json]({name}/config.json)" for name in summaries)
  text = f"""# jaxllm pipeline report

Workdir `{os.path.abspath(workdir)}`, seed {config.seed}, total wall time {total:.0f} s
(stages skipped on a re-run keep the time of the run that finished them).

{report.markdown_table(header, _rows(workdir, summaries))}

Tokens seen = steps x batch size x sequence length (padding included; for GRPO, whose batch is samples, each
sample's own row: the model runs over one shorter row per group, its prompt once). Held-out metrics are
measured on problems, documents or pairs that no stage trained on. "start" is the model a stage began from,
evaluated on the stage's own held-out set before its first update (step 0, `eval.at_start`; for GRPO and DPO
that is the SFT model), and "change" is what the stage added over it; eval_grpo is compared with eval_sft.

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
