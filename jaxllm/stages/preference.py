"""The stage that trains every objective on preference data: reward (a scalar head, Bradley-Terry), dpo,
and any other pairwise or single-answer objective. The objective's registry entry gives its batches (pairs
sharing a prompt, or tagged single answers), whether `state.frozen` holds the reference policy and what it
trains beside the model; this stage only wires them to the train loop.

  python run.py --config=configs/reward.py --config.init_from=SFT_WORKDIR --config.workdir=W
  python run.py --config=configs/dpo.py --config.init_from=SFT_WORKDIR --config.workdir=W

Held-out metrics are the loss's own (`accuracy` for pair objectives) over the held-out batches.
"""
from __future__ import annotations

import ml_collections

from jaxllm import losses, runtime, train


def run(config: ml_collections.ConfigDict) -> dict:
  env = runtime.prepare(config)
  c = env.config
  objective = losses.get(c.stage)
  if objective.needs_reference and not c.init_from:
    env.log(f"{c.stage}: no init_from, so the policy and its reference start from the same random init")
  batches, eval_batches, counts = objective.batches(c, env.tokenizer)
  env.log(f"{c.stage}: {counts}")
  data_counts = {"data_truncated": counts["truncated_too_long"], "data_dropped": counts["dropped_too_long"]}
  task = train.Task(loss=c.stage, batches=batches, host_metrics=lambda: data_counts,
                    evaluate=lambda state: train.evaluate_loss(env, c.stage, state, eval_batches),
                    data_skipped_rows=counts["skipped_bad"])
  return {**train.fit(env, task), **counts}
