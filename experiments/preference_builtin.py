"""Reward modelling and DPO on the built-in task world, from one SFT checkpoint.

  python experiments/preference_builtin.py --workdir=/tmp/jaxllm/pref                    # pretrain, SFT, RM, DPO
  python experiments/preference_builtin.py --workdir=/tmp/jaxllm/pref --init_from=SFT_WORKDIR

Without --init_from it first runs configs/pretrain.py and configs/sft.py (defaults) into WORKDIR/pt and
WORKDIR/sft. Then, from that checkpoint and with default configs/reward.py and configs/dpo.py:
  * WORKDIR/rm        a reward model; its held-out pair accuracy (208 pairs never seen in training);
  * WORKDIR/dpo_init  DPO with steps=0: the held-out metrics of the starting policy (= its reference);
  * WORKDIR/dpo       DPO; the same held-out metrics after training.
Every stage resumes (or just re-evaluates) when its workdir already holds a finished run.
Pass: reward accuracy >= 0.95; DPO raises held-out pair accuracy (implicit reward and the policy's own
log-prob ranking) and the chosen answer's log-probability.

Measured: the reward model's >= 95% was not met with the plain scalar head (77-82% after the default 300 steps,
plateaus at 87-90% in longer runs; docs/results.md). With the log-likelihood term (configs/reward.py's default since
2026-11-30), `--init_from=runs/pipeline_fresh/sft` (a fresh pipeline's SFT model, 73.0% pass@1), 2026-11-30:
reward accuracy 95.3%; DPO implicit-reward pair accuracy 50% -> 93.0%, chosen log-prob -1.216 -> -1.030, the
policy's own pair accuracy 95.7% -> 95.3% (one of 256 pairs lower), so the script printed FAILED on that check
alone (on 2026-11-23's SFT model it rose, 95.7% -> 96.5%).
"""
from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from configs import dpo as dpo_config  # noqa: E402
from configs import pretrain as pretrain_config  # noqa: E402
from configs import reward as reward_config  # noqa: E402
from configs import sft as sft_config  # noqa: E402
from jaxllm import stages  # noqa: E402

DPO_KEYS = ("accuracy", "policy_accuracy", "chosen_logp", "rejected_logp", "margin", "loss")


def _config(module, workdir: str, init_from: str = "", **overrides):
  c = module.get_config()
  c.workdir = workdir
  c.init_from = init_from
  c.log.tensorboard = False
  c.log.progress = False
  c.update_from_flattened_dict(overrides)
  return c


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--workdir", required=True)
  parser.add_argument("--init_from", default="", help="an SFT (or pretrain) workdir; '' = train one first")
  parser.add_argument("--reward_steps", type=int, default=0, help="0 = configs/reward.py's steps")
  parser.add_argument("--dpo_steps", type=int, default=0, help="0 = configs/dpo.py's steps")
  args = parser.parse_args()
  w = os.path.abspath(args.workdir)
  init = args.init_from
  if not init:
    stages.run(_config(pretrain_config, f"{w}/pt", **{"sample.num": 0}))
    stages.run(_config(sft_config, f"{w}/sft", f"{w}/pt", **{"sample.num": 0}))
    init = f"{w}/sft"

  rm_steps = {}
  if args.reward_steps:  # enough built-in pairs that no training pair is seen twice
    batch = reward_config.get_config().data.batch_size
    rm_steps = {"steps": args.reward_steps, "data.train_examples": max(8000, args.reward_steps * batch)}
  dpo_steps = {"steps": args.dpo_steps} if args.dpo_steps else {}
  rm = stages.run(_config(reward_config, f"{w}/rm", init, **rm_steps))
  before = stages.run(_config(dpo_config, f"{w}/dpo_init", init, steps=0))
  after = stages.run(_config(dpo_config, f"{w}/dpo", init, **dpo_steps))

  result = {"init_from": init, "reward_accuracy": rm["eval_accuracy"], "reward_eval_pairs": rm["eval_pairs"],
            "dpo_before": {k: before[f"eval_{k}"] for k in DPO_KEYS},
            "dpo_after": {k: after[f"eval_{k}"] for k in DPO_KEYS}}
  checks = {
      "reward accuracy >= 0.95": rm["eval_accuracy"] >= 0.95,
      "dpo raises pair accuracy": after["eval_accuracy"] > before["eval_accuracy"],
      "dpo raises policy pair accuracy": after["eval_policy_accuracy"] > before["eval_policy_accuracy"],
      "dpo raises chosen log-prob": after["eval_chosen_logp"] > before["eval_chosen_logp"],
  }
  result["checks"] = checks
  print(json.dumps(result, indent=2))
  if not all(checks.values()):
    sys.exit(f"FAILED: {[k for k, ok in checks.items() if not ok]}")


if __name__ == "__main__":
  main()
