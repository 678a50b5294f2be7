"""The default pipeline's SFT -> GRPO over several seeds: what GRPO adds, measured against its run-to-run spread.

  python experiments/pipeline_seeds.py --out=runs/pipeline_seeds                        # pretrain once, seeds 0 1 2
  python experiments/pipeline_seeds.py --out=runs/pipeline_seeds --base=runs/pipeline   # reuse a pipeline run

configs/pipeline.py as it is (plus --set KEY=VALUE on its keys, e.g. --set sft.steps=300). The tokenizer and
pretrain stages run once, with the config's seed, into OUT/base (or come from --base, a pipeline workdir that
finished them); each seed s then runs the pipeline itself in OUT/seed_<s> with seed=s and stages tokenizer,
pretrain, sft, grpo, where tokenizer/ and pretrain/ link to the base's (finished, so skipped). The spread is that
of SFT -> GRPO from one pretrained model: SFT data order and flawed demonstrations, GRPO's prompts and samples,
and the 200 held-out problems themselves (drawn by seed; SFT and GRPO of one seed share them). A --base run whose
seed is s lends its own finished sft and grpo stages when their configs equal this one's (evaluation, logging,
checkpoint and sample keys aside: they do not change what is trained).

Per seed: SFT's answer format and pass@1, GRPO's pass@1 and the gain, GRPO minus SFT on the same held-out
problems (SFT's value is GRPO's step-0 evaluation when there is one, else the SFT stage's last); then mean and
sample std over seeds. Writes OUT/pipeline_seeds.md, .json and .png. PASS when the mean gain is > 3x its std.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from configs import pipeline as pipeline_config  # noqa: E402
from jaxllm import pipeline_report, report, stages  # noqa: E402

SHARED = ("tokenizer", "pretrain")  # run once, linked into every seed's workdir
PER_SEED = ("sft", "grpo")
NOT_TRAINING = ("eval", "log", "checkpoint", "sample")  # keys that leave the trained model as it is


def _config(overrides: list[str]):
  config = pipeline_config.get_config()
  for item in overrides:
    key, _, text = item.partition("=")
    *parents, leaf = key.split(".")
    try:
      node = config
      for part in parents:
        node = node[part]
      like = node[leaf]
      node[leaf] = text.lower() in ("1", "true", "yes") if isinstance(like, bool) else type(like)(text)
    except (KeyError, AttributeError, TypeError, ValueError) as e:
      sys.exit(f"pipeline_seeds: --set {item}: not a configs/pipeline.py key of that type ({e})")
  return config


def _finished(workdir: str, name: str) -> bool:
  return os.path.exists(os.path.join(workdir, name, "summary.json"))


def _link(src_workdir: str, dst_workdir: str, name: str) -> None:
  os.makedirs(dst_workdir, exist_ok=True)
  dst = os.path.join(dst_workdir, name)
  if not os.path.lexists(dst):
    os.symlink(os.path.abspath(os.path.join(src_workdir, name)), dst)


def _training_keys(stage_config: dict) -> dict:
  return {k: v for k, v in stage_config.items() if k not in NOT_TRAINING}


def _lendable(base: str, config, seed: int, name: str) -> bool:
  """Whether the base pipeline ran this seed's `name` stage with the same training config."""
  path = os.path.join(base, "config.json")
  if not (_finished(base, name) and os.path.exists(path)):
    return False
  with open(path) as f:
    saved = json.load(f)
  if saved.get("seed") != seed:
    return False
  if _training_keys(saved.get(name, {})) != _training_keys(config[name].to_dict()):
    print(f"pipeline_seeds: {base}/{name} was trained with another config; seed {seed} runs it afresh", flush=True)
    return False
  return True


def _run(config, workdir: str, seed: int, names: tuple[str, ...]) -> None:
  config.seed = seed
  config.workdir = workdir
  config.pipeline.stages = ",".join(names)
  stages.run(config)


def _seed_row(workdir: str, seed: int) -> dict:
  summaries = {}
  for name in PER_SEED:
    with open(os.path.join(workdir, name, "summary.json")) as f:
      summaries[name] = json.load(f)
  steps, accuracy = pipeline_report.held_out_series(workdir, "grpo", "eval_accuracy")
  sft = accuracy[0] if steps and steps[0] == 0 else summaries["sft"]["eval_accuracy"]
  return {"seed": seed, "sft_answer_format": summaries["sft"]["eval_answer_format"],
          "sft_pass1": sft, "grpo_pass1": summaries["grpo"]["eval_accuracy"],
          "gain_points": 100 * (summaries["grpo"]["eval_accuracy"] - sft),
          "sft_sec": summaries["sft"].get("wall_seconds"), "grpo_sec": summaries["grpo"].get("wall_seconds"),
          "grpo_curve": list(zip(steps, accuracy))}


def pct(share: float) -> str:
  return f"{100 * share:.1f}%"


def _mean_std(values: list[float]) -> tuple[float, float]:
  return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", default="runs/pipeline_seeds")
  parser.add_argument("--base", default="", help="a pipeline workdir with finished tokenizer and pretrain stages")
  parser.add_argument("--seeds", default="0,1,2")
  parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                      help="override a configs/pipeline.py key, e.g. --set grpo.steps=40 (repeatable)")
  args = parser.parse_args()
  seeds = [int(s) for s in args.seeds.split(",")]
  base = args.base or os.path.join(args.out, "base")
  if args.base and not all(_finished(base, name) for name in SHARED):
    sys.exit(f"pipeline_seeds: --base={base} has no finished {' and '.join(SHARED)} stage (summary.json)")
  if not args.base:
    _run(_config(args.set), base, pipeline_config.get_config().seed, SHARED)

  rows = []
  for seed in seeds:
    workdir = os.path.join(args.out, f"seed_{seed}")
    for name in SHARED:
      _link(base, workdir, name)
    for name in PER_SEED:
      if not _finished(workdir, name) and _lendable(base, _config(args.set), seed, name):
        _link(base, workdir, name)
    _run(_config(args.set), workdir, seed, SHARED + PER_SEED)
    rows.append(_seed_row(workdir, seed))

  columns = ("sft_answer_format", "sft_pass1", "grpo_pass1", "gain_points")
  stats = {c: _mean_std([r[c] for r in rows]) for c in columns}
  table = report.markdown_table(
      ["seed", "SFT answer format", "SFT pass@1", "GRPO pass@1", "GRPO - SFT (points)", "SFT / GRPO wall (s)"],
      [[r["seed"], pct(r["sft_answer_format"]), pct(r["sft_pass1"]), pct(r["grpo_pass1"]), f"{r['gain_points']:+.1f}",
        f"{r['sft_sec'] or 0:.0f} / {r['grpo_sec'] or 0:.0f}"] for r in rows] +
      [["mean ± std", *(f"{100 * m:.1f} ± {100 * s:.1f}%" for m, s in (stats[c] for c in columns[:3])),
        f"{stats['gain_points'][0]:+.1f} ± {stats['gain_points'][1]:.1f}", ""]])
  gain, spread = stats["gain_points"]
  ok = gain > 3 * spread
  verdict = (f"{'PASS' if ok else 'FAIL'}: GRPO adds {gain:+.1f} ± {spread:.1f} points of held-out pass@1 over "
             f"SFT over seeds {args.seeds} (mean > 3 x std: {'yes' if ok else 'no'})")
  with open(os.path.join(args.out, "pipeline_seeds.md"), "w") as f:
    f.write(f"# SFT -> GRPO over seeds {args.seeds} (base `{base}`)\n\n{table}\n\n{verdict}\n")
  with open(os.path.join(args.out, "pipeline_seeds.json"), "w") as f:
    json.dump({"seeds": rows, "mean_std": stats, "base": base, "overrides": args.set}, f, indent=2)
  report.plot_bars(os.path.join(args.out, "pipeline_seeds.png"), ["SFT pass@1", "GRPO pass@1"],
                   [stats["sft_pass1"][0], stats["grpo_pass1"][0]], [stats["sft_pass1"][1], stats["grpo_pass1"][1]],
                   title=f"held-out pass@1, mean ± std over seeds {args.seeds}", ylabel="share of 200 problems")
  print(table)
  print(verdict)


if __name__ == "__main__":
  main()
