"""Stage `grpo`: reinforcement learning with verifiable (or reward-model) rewards, GRPO-style.

  python run.py --config=configs/grpo.py --config.init_from=SFT_WORKDIR --config.workdir=W
  python run.py --config=configs/grpo_gsm8k.py --config.init_from=SFT_WORKDIR --config.workdir=W

What it keeps of GRPO (Shao et al. 2024) and why:
- Groups of G samples per prompt, advantages relative to the group: no value network to train, and on
  verifiable rewards the group mean is a good baseline.
- The clipped importance ratio, so one rollout can feed several optimizer steps (rl.ppo_epochs,
  rl.minibatches) without the policy running away from the samples; with one step per rollout (default)
  the ratio is 1 and this is plain on-policy REINFORCE with a group baseline, as nanochat's chat_rl keeps.
- The k3 KL to the reference (init_from), coefficient rl.kl_beta: a small tiny model forgets its format
  quickly without it. kl_beta = 0 drops it (as DAPO / Dr. GRPO / nanochat do); `kl` is logged either way.
What is an option rather than fixed: std scaling (rl.scale_std=False is Dr. GRPO's unbiased r - mean),
dropping all-equal groups (rl.drop_equal_groups, DAPO's dynamic sampling without re-sampling to refill),
clip-higher (rl.clip_eps_high), and the aggregation over tokens (rl.loss_agg: GRPO seq_mean, DAPO
token_mean, Dr. GRPO constant).
What it drops: re-sampling to refill dropped groups (batches keep a fixed shape instead: dropped rows are
masked), value functions / GAE, and reward normalisation across batches.

Every step logs the rollout's `reward_mean`, `reward_std`, `reward_<name>` per reward, `completion_len`,
`truncated`, `zero_signal_groups`, `row_len` (tokens in each row the step trains on), `rollout_sec` /
`update_sec`, `tokens_per_sec` (the tokens a step trained on, padding left out: each prompt once and each
completion, per second of the whole step, rollout included), and the loss's `kl`, `clip_frac`,
`entropy`, `ratio_*`; every eval.every steps held-out greedy pass@1 `accuracy` and `answer_format`.
"""
from __future__ import annotations

import time

import ml_collections

from jaxllm import evals, rewards, rl, runtime, sharding, train
from jaxllm.config import ConfigError
from jaxllm.data.prompts import load_prompts
from jaxllm.stages import held_out
from jaxllm.state import TrainState, policy_weights


def run(config: ml_collections.ConfigDict) -> dict:
  env = runtime.prepare(config)
  c, r = env.config, env.config.rl
  groups, dp = r.prompts_per_step // r.minibatches, sharding.data_parallel_size(env.mesh)
  if groups % dp:
    raise ConfigError(f"config.rl.prompts_per_step / rl.minibatches = {groups} groups a step (one row each) do not "
                      f"split over the {dp} data-parallel devices")
  if env.process_count > 1 and c.tools.names:
    raise ConfigError(f"config.tools.names: tool-calling rollouts run on one process (the tool loop's rounds are "
                      f"host-side and differ per process); got {env.process_count} processes")
  if dp % env.process_count:  # each process samples, scores and feeds its own groups (rl.rollout)
    raise ConfigError(f"config.mesh: the {dp} data-parallel devices (mesh.data x mesh.fsdp) do not split over "
                      f"{env.process_count} processes; put mesh.tensor within a process")
  if not c.init_from:
    env.log("grpo: no init_from, so the policy starts from a random init (rewards will stay near zero)")
  train_records, eval_records, source, skipped = load_prompts(c)
  prompts, dropped = rl.encode_prompts(env.tokenizer, train_records, r.max_prompt_len)
  env.log(f"grpo ({source}): {len(prompts)} training prompts ({dropped} longer than rl.max_prompt_len="
          f"{r.max_prompt_len} dropped), {len(eval_records)} held out; {r.prompts_per_step} prompts x "
          f"{r.group_size} samples per rollout, {r.ppo_epochs * r.minibatches} optimizer steps each")
  source_batches = rl.RolloutSource(env, prompts, rewards.build(r), shared_prompt=True)
  eval_prompts = [e["messages"] for e in eval_records]
  eval_refs = [e["answer"] for e in eval_records]
  evaluate_policy = held_out.answer_evaluator(env, eval_records, r.eval_batch_size)

  def evaluate(state: TrainState) -> dict:
    t0 = time.perf_counter()
    out = evaluate_policy(state)
    source_batches.eval_sec += time.perf_counter() - t0
    return out

  def print_samples(state: TrainState) -> dict:
    n = min(c.sample.num, len(eval_prompts))
    if n <= 0:
      return {}
    weights, lora = policy_weights(state.params, state.frozen)
    texts = evals.generate_answers(env, weights, lora, eval_prompts[:n], max_new_tokens=c.sampling.max_new_tokens,
                                   batch_size=n)  # every process takes part (a collective across processes)
    if not env.is_main:
      return {}
    for prompt, ref, got in zip(eval_prompts, eval_refs, texts):
      print(f"--- sample\n[user] {prompt[-1]['content']}\n[reference] {ref}\n[model] {got}", flush=True)
    return {}

  task = train.Task(loss=c.stage, batches=source_batches, evaluate=evaluate, on_end=print_samples,
                    host_metrics=source_batches.host_metrics, count_tokens=rl.trained_tokens,
                    data_skipped_rows=skipped)
  summary = train.fit(env, task)
  summary.update({"train_prompts": len(prompts), "eval_prompts": len(eval_prompts), "rollouts": source_batches.rollouts})
  return summary
