"""GRPO, RFT (rejection-sampling fine-tuning) and PPO from the same SFT model at equal sampled answers: held-out
greedy pass@1 of each, the completion tokens each sampled, and their wall time.

  python experiments/rl_compare.py --out=runs/rl_compare --init_from=runs/pipeline/sft
  python experiments/rl_compare.py --out=runs/rl_compare --init_from=runs/pipeline/sft --samples=7680  # configs' defaults

--samples N answers in all for each method (default 2560: 20 of configs/grpo.py's rollouts of 16 prompts x 8):
  grpo  configs/grpo.py, N / 128 steps (one rollout a step);
  ppo   configs/ppo.py, N / 128 rollouts of the same shape, 2 optimizer steps each (ppo_epochs = 2);
  rft   configs/rft.py, --rft_rounds rounds of N / (rounds x 8) problems x 8 samples, rft.steps_per_round steps each.
Answers are equal; `sampled_tokens` (completion tokens) differ by the methods' answer lengths and are reported.
Each method evaluates the 200 held-out problems once at the end; OUT/sft_eval is the SFT model's own pass@1
(grpo with steps = 0). Writes OUT/rl_compare.json; every run resumes (or re-reads its summary) when re-run.
--set METHOD.KEY=VALUE overrides one method's config key (e.g. --set rft.optim.lr=5e-5).

Measured: docs/rft_ppo.md.
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from jaxllm import stages  # noqa: E402
from jaxllm.metrics import read_metrics  # noqa: E402

GROUP, PROMPTS, RFT_SAMPLES = 8, 16, 8  # configs/grpo.py's rollout shape (also PPO's), configs/rft.py's k


def _config(method: str, workdir: str, init_from: str, overrides: dict):
  c = importlib.import_module(f"configs.{method}").get_config()
  c.workdir, c.init_from = workdir, init_from
  c.log.update(tensorboard=False, progress=False)
  c.sample.num = 0
  for key, value in overrides.items():
    node, *path = key.split(".")
    holder = c
    for part in [node, *path][:-1]:
      holder = holder[part]
    old = holder[[node, *path][-1]]
    holder[[node, *path][-1]] = type(old)(value) if not isinstance(old, bool) else str(value).lower() == "true"
  return c


def _run(config) -> dict:
  done = os.path.join(config.workdir, "summary.json")
  if os.path.exists(done):
    with open(done) as f:
      return json.load(f)
  start = time.perf_counter()
  summary = dict(stages.run(config))
  summary["wall_sec"] = time.perf_counter() - start
  with open(done, "w") as f:
    json.dump(summary, f, indent=1, default=str)
  return summary


def _grpo_sampled_tokens(workdir: str) -> float:
  """Completion tokens GRPO sampled: each train row describes its own rollout (one a step)."""
  rows = [r for r in read_metrics(workdir) if r["split"] == "train"]
  return sum(r["completion_len"] * PROMPTS * GROUP for r in rows)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", default="/tmp/jaxllm/rl_compare")
  parser.add_argument("--init_from", required=True, help="an SFT workdir (e.g. the pipeline's OUT/sft)")
  parser.add_argument("--samples", type=int, default=2560, help="sampled answers per method")
  parser.add_argument("--rft_rounds", type=int, default=2)
  parser.add_argument("--methods", default="grpo,rft,ppo")
  parser.add_argument("--set", action="append", default=[], metavar="METHOD.KEY=VALUE")
  args = parser.parse_args()
  rollouts = args.samples // (PROMPTS * GROUP)
  problems = args.samples // (args.rft_rounds * RFT_SAMPLES)
  plans = {
      "grpo": {"steps": rollouts},
      "ppo": {"steps": 2 * rollouts},
      "rft": {"rft.problems_per_round": problems, "steps": args.rft_rounds * 8, "rft.steps_per_round": 8},
  }
  for item in args.set:
    key, value = item.split("=", 1)
    method, key = key.split(".", 1)
    plans[method][key] = value
  results = {"init_from": args.init_from, "samples": args.samples}
  base = _run(_config("grpo", os.path.join(args.out, "sft_eval"), args.init_from, {"steps": 0}))
  results["sft"] = {"accuracy": base["eval_accuracy"], "answer_format": base["eval_answer_format"]}
  for method in [m.strip() for m in args.methods.split(",") if m.strip()]:
    plan = plans[method]
    plan.update({"eval.every": plan["steps"], "checkpoint.every": plan["steps"]})
    workdir = os.path.join(args.out, method)
    summary = _run(_config(method, workdir, args.init_from, plan))
    tokens = summary.get("sampled_tokens") or _grpo_sampled_tokens(workdir)
    results[method] = {"accuracy": summary["eval_accuracy"], "answer_format": summary["eval_answer_format"],
                       "steps": summary["step"], "sampled_tokens": tokens, "wall_sec": summary.get("wall_sec"),
                       "overrides": {k: v for k, v in plan.items()}}
    print(f"{method}: held-out pass@1 {results['sft']['accuracy']:.3f} -> {summary['eval_accuracy']:.3f} "
          f"({tokens:.0f} sampled tokens, {summary.get('wall_sec', 0) / 60:.1f} min)", flush=True)
  path = os.path.join(args.out, "rl_compare.json")
  if os.path.exists(path):  # methods run by separate invocations (--methods) share one file: keep theirs
    with open(path) as f:
      results = {**json.load(f), **results}
  with open(path, "w") as f:
    json.dump(results, f, indent=2)
  print(json.dumps(results, indent=2))


if __name__ == "__main__":
  main()
