"""Stage `rft`: rejection-sampling fine-tuning (expert iteration) on verifiable rewards, rounds inside one run.

  python run.py --config=configs/rft.py --config.init_from=SFT_WORKDIR --config.workdir=W

Each round: rft.samples answers to each of rft.problems_per_round training problems from the current policy
(temperature sampling.temperature), the verified-correct ones kept (rft.keep, rft.max_keep_per_problem;
jaxllm/rft.py), then rft.steps_per_round SFT steps on them; ceil(config.steps / rft.steps_per_round) rounds in all.
A killed run resumes at the same round and step (the round's kept rows are in the checkpoint). A round that
keeps nothing (a policy that answers nothing right) says so and its steps train on nothing (`kept_rows` 0).

Every step logs `round`, `kept_rows`, `correct_frac` (share of samples verified correct), `solved_frac`
(share of problems with at least one kept answer), `kept_len` / `completion_len`, `sampled_tokens` (completion
tokens sampled by the run so far: the budget compared with GRPO's), `reward_*`; every eval.every steps
held-out greedy pass@1 `accuracy` and `answer_format` on rl.eval_prompts problems.
"""
from __future__ import annotations

import ml_collections

from jaxllm import rewards, rft, rl, runtime, train
from jaxllm.config import ConfigError
from jaxllm.data.prompts import load_prompts
from jaxllm.stages import held_out


def run(config: ml_collections.ConfigDict) -> dict:
  env = runtime.prepare(config)
  c, r, f = env.config, env.config.rl, env.config.rft
  if env.process_count > 1:
    raise ConfigError(f"config.dist.num_processes: rft runs on one process for now (its rounds sample on one "
                      f"process's prompts); got {env.process_count} processes (GRPO runs on several)")
  if not c.init_from:
    env.log("rft: no init_from, so the policy starts from a random init (few answers will be kept)")
  train_records, eval_records, source, skipped = load_prompts(c)
  prompts, dropped = rl.encode_prompts(env.tokenizer, train_records, r.max_prompt_len)
  env.log(f"rft ({source}): {len(prompts)} training prompts ({dropped} longer than rl.max_prompt_len="
          f"{r.max_prompt_len} dropped), {len(eval_records)} held out; {-(-c.steps // f.steps_per_round)} rounds of "
          f"{f.problems_per_round} problems x {f.samples} samples, keep {f.keep} (at most "
          f"{f.max_keep_per_problem or 'all'} a problem), {f.steps_per_round} steps of {c.data.batch_size} rows")
  source_rows = rft.RoundSource(env, prompts, rewards.build(r))
  evaluate = held_out.answer_evaluator(env, eval_records, r.eval_batch_size)

  task = train.Task(loss=c.stage, batches=source_rows, evaluate=evaluate, host_metrics=source_rows.host_metrics,
                    data_skipped_rows=skipped)
  summary = train.fit(env, task)
  summary.update({"train_prompts": len(prompts), "eval_prompts": len(eval_records), "rounds": source_rows.round,
                  "sampled_tokens": source_rows.sampled_tokens})
  return summary
