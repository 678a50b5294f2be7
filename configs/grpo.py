"""GRPO on the built-in task world: sample groups of answers to unseen problems, reward the right ones.

  python run.py --config=configs/pretrain.py --config.workdir=/tmp/jaxllm/pt
  python run.py --config=configs/sft.py --config.workdir=/tmp/jaxllm/sft --config.init_from=/tmp/jaxllm/pt
  python run.py --config=configs/grpo.py --config.workdir=/tmp/jaxllm/grpo --config.init_from=/tmp/jaxllm/sft
  python run.py --config=configs/grpo.py:tiny --config.workdir=W --config.init_from=TINY_WORKDIR   # smoke test
  python experiments/grpo_builtin.py      # pretrain -> SFT -> GRPO, held-out pass@1 before/after, reward curve

The policy and its KL reference are init_from's model (an SFT workdir; under LoRA the reference is the
base). data.batch_size and data.seq_len follow the rl.* keys (rows per optimizer step = prompts_per_step *
group_size / minibatches; row length = rl.max_prompt_len + sampling.max_new_tokens). On the 2-core CPU the default
(16 prompts x 8 samples per step, ~3M-param model) takes a few seconds a step; see experiments/grpo_builtin.py
for the measured gain in held-out pass@1.
"""

import ml_collections

from configs import base


def rl_defaults() -> ml_collections.ConfigDict:
  r = ml_collections.ConfigDict()
  r.group_size = 8  # G: completions sampled per prompt; advantages are relative to the group
  r.prompts_per_step = 16  # P: prompts per rollout (a rollout has P * G rows)
  r.max_prompt_len = 64  # prompts longer than this (in tokens) are dropped and counted, never cut
  r.group_rows = True  # each prompt run once, its completions as rows behind it (jaxllm/rl.py); False = a row each
  r.ppo_epochs = 1  # passes over each rollout
  r.minibatches = 1  # optimizer steps per pass, each on P / minibatches whole groups; steps per rollout = ppo_epochs * minibatches
  r.clip_eps = 0.2  # importance ratio clipped to [1 - clip_eps, 1 + clip_eps_high]
  r.clip_eps_high = 0.0  # upper clip (DAPO's clip-higher, e.g. 0.28); 0 = clip_eps
  r.kl_beta = 0.02  # coefficient of the k3 KL to the reference policy; 0 = no KL term (still logged)
  r.loss_agg = "seq_mean"  # seq_mean (GRPO) | token_mean (DAPO) | constant (Dr. GRPO: / sampling.max_new_tokens)
  r.scale_std = True  # advantages (r - mean) / (std + adv_eps); False = r - mean (Dr. GRPO)
  r.adv_eps = 1e-4  # added to the group std before dividing
  r.drop_equal_groups = False  # mask out groups whose rewards are all equal (no signal) entirely
  r.truncation_penalty = 0.0  # subtracted from the reward of a completion that hit sampling.max_new_tokens
  r.rewards = "exact_answer:1.0,format:0.1"  # name:weight,... from jaxllm/rewards.py (exact_answer, gsm8k, format, reward_model)
  r.reward_model = ""  # reward-stage workdir scored by the `reward_model` reward
  r.eval_data = ""  # named data: held-out dataset name in data.dataset_info; '' = data.eval_fraction split
  r.eval_prompts = 200  # held-out prompts answered greedily for pass@1 `accuracy` at each evaluation
  r.eval_batch_size = 100  # prompts per held-out generation batch
  return r


def get_config(arg: str | None = None):
  c = base.get_config()
  c.stage = "grpo"
  c.rl = rl_defaults()
  # Rollouts: the policy itself is the model at temperature 1; a completion without a stop token by
  # max_new_tokens is "truncated"; sampling.system = the system turn before each named-data (gsm8k) question
  c.sampling.update(temperature=1.0, max_new_tokens=32)
  # Derived (ml_collections references): they follow --config.rl.* overrides unless set explicitly.
  c.data.batch_size = c.rl.get_ref("prompts_per_step") * c.rl.get_ref("group_size") // c.rl.get_ref("minibatches")
  c.data.seq_len = c.rl.get_ref("max_prompt_len") + c.sampling.get_ref("max_new_tokens")
  c.steps = 60
  # flat lr after warmup; 2e-5, not 1e-4: at 1e-4 the update noise cost the SFT model 3-7 points of pass@1 (docs/results.md)
  c.optim.update(lr=2e-5, warmup_steps=5, weight_decay=0.0, min_lr_ratio=1.0)
  c.eval.every = 20
  c.checkpoint.every = 20
  c.log.every = 1
  c.sample.num = 3
  if arg == "tiny":  # sizes match configs/pretrain.py:tiny, whose workdir is the usual init_from in tests
    c.steps = 4
    base.use_tiny_model(c)
    c.rl.update(group_size=4, prompts_per_step=4, eval_prompts=8, eval_batch_size=8)
    c.sampling.max_new_tokens = 16
    c.data.update(train_examples=200)
    c.eval.every = 2
    c.checkpoint.every = 2
    c.sample.num = 1
  c.lock()
  return c
