"""Stage `ppo`: PPO with a value head (InstructGPT's RLHF recipe) on reward-model and/or verifiable rewards.

  python run.py --config=configs/ppo.py --config.init_from=SFT_WORKDIR --config.workdir=W
  python run.py --config=configs/ppo.py --config.init_from=SFT_WORKDIR --config.workdir=W \\
      --config.rl.rewards=reward_model:1.0 --config.rl.reward_model=REWARD_WORKDIR

Rollouts are GRPO's (jaxllm/rl.py: rl.prompts_per_step prompts x rl.group_size samples, rewards from
rl.rewards, the reference = init_from); jaxllm/ppo.py adds values, the KL-shaped per-token rewards and GAE;
each rollout feeds rl.ppo_epochs x rl.minibatches optimizer steps of the clipped policy and value losses
(jaxllm/losses/ppo.py). Checkpoints fall on rollout boundaries, so a resumed run draws the rollout it would have.

Every step logs GRPO's rollout metrics (`reward_mean`, `reward_*`, `completion_len`, `truncated`, ...) and
PPO's: `score_mean`, `kl_penalty` (kl_coef x the summed per-token KL of a sample), `value_loss`,
`value_clip_frac`, `explained_var`, `return_mean`, `sampled_tokens`; every eval.every steps held-out greedy
pass@1 `accuracy` and `answer_format`.
"""
from __future__ import annotations

import ml_collections

from jaxllm import ppo, rewards, rl, runtime, sharding, train
from jaxllm.config import ConfigError
from jaxllm.data.prompts import load_prompts
from jaxllm.stages import held_out


def run(config: ml_collections.ConfigDict) -> dict:
  env = runtime.prepare(config)
  c, r = env.config, env.config.rl
  if env.process_count > 1:
    raise ConfigError(f"config.dist.num_processes: ppo runs on one process for now (its rollouts sample on one "
                      f"process's prompts); got {env.process_count} processes (GRPO runs on several)")
  groups = r.prompts_per_step // r.minibatches
  if groups % sharding.data_parallel_size(env.mesh):
    raise ConfigError(f"config.rl.prompts_per_step / rl.minibatches = {groups} groups a step (one row each) do not "
                      f"split over the {sharding.data_parallel_size(env.mesh)} data-parallel devices")
  if not c.init_from:
    env.log("ppo: no init_from, so the policy starts from a random init (rewards will stay near zero)")
  train_records, eval_records, source, skipped = load_prompts(c)
  prompts, dropped = rl.encode_prompts(env.tokenizer, train_records, r.max_prompt_len)
  env.log(f"ppo ({source}): {len(prompts)} training prompts ({dropped} longer than rl.max_prompt_len="
          f"{r.max_prompt_len} dropped), {len(eval_records)} held out; {r.prompts_per_step} prompts x "
          f"{r.group_size} samples per rollout, {r.ppo_epochs * r.minibatches} optimizer steps each; critic "
          f"{c.ppo.critic}")
  source_batches = ppo.PPOSource(env, prompts, rewards.build(r))
  evaluate = held_out.answer_evaluator(env, eval_records, r.eval_batch_size)

  task = train.Task(loss=c.stage, batches=source_batches, evaluate=evaluate, host_metrics=source_batches.host_metrics,
                    data_skipped_rows=skipped)
  summary = train.fit(env, task)
  summary.update({"train_prompts": len(prompts), "eval_prompts": len(eval_records),
                  "rollouts": source_batches.rollouts, "sampled_tokens": source_batches.sampled_tokens})
  return summary
