"""PPO with a value head (InstructGPT's recipe) on the built-in task world: GRPO's rollouts, a value head on the
policy's trunk (or a separate critic), the KL to the reference folded into per-token rewards, GAE advantages,
clipped policy and value losses, 2 passes over each rollout.

  python run.py --config=configs/ppo.py --config.init_from=SFT_WORKDIR --config.workdir=W
  python run.py --config=configs/ppo.py --config.init_from=SFT_WORKDIR --config.workdir=W \\
      --config.rl.rewards=reward_model:1.0 --config.rl.reward_model=REWARD_WORKDIR      # RLHF on a reward model
  python run.py --config=configs/ppo.py:tiny --config.init_from=TINY_WORKDIR --config.workdir=W   # smoke test
  python experiments/rl_compare.py --out=OUT --init_from=SFT_WORKDIR   # vs GRPO and RFT at equal sampled tokens

The default draws configs/grpo.py's rollouts (16 prompts x 8 samples) as often (60 rollouts: 120 steps of 2 per
rollout), so the two sample the same tokens (`sampled_tokens`). Of the rl.* keys, PPO reads the rollout ones
(group_size, prompts_per_step, max_prompt_len, group_rows, ppo_epochs, minibatches, clip_eps, rewards,
reward_model, truncation_penalty, eval_*); GRPO's advantage and KL-loss keys (kl_beta, loss_agg, scale_std,
adv_eps, clip_eps_high) play no part. Result (held-out pass@1 against GRPO's): docs/rft_ppo.md.
"""

import ml_collections

from configs import base
from configs.grpo import rl_defaults


def ppo_defaults() -> ml_collections.ConfigDict:
  p = ml_collections.ConfigDict()
  p.critic = "shared"  # shared: the value head on the policy's trunk | separate: a critic trunk of its own
  p.gamma = 1.0  # discount over completion tokens (the score comes at the end)
  p.lam = 0.95  # GAE lambda: 1 = Monte-Carlo returns minus values, 0 = one-step TD
  p.kl_coef = 0.02  # per-token penalty kl_coef * (log pi_old - log pi_ref) in the reward
  p.vf_coef = 0.1  # weight of the value loss beside the policy loss
  # values = this x the head's output: under Adam the head's weights move ~lr a step whatever the gradient, so this
  # multiplies how fast the values can follow the returns (a zero-initialised head at lr 2e-5 barely moves)
  p.value_head_scale = 1.0
  p.value_clip = 0.2  # new values kept within old +- value_clip in the clipped value loss; 0 = unclipped
  p.whiten_advantages = True  # advantages normalised to mean 0, std 1 over each rollout's tokens
  return p


def get_config(arg: str | None = None):
  c = base.get_config()
  c.stage = "ppo"
  c.ppo = ppo_defaults()
  c.rl = rl_defaults()
  c.rl.update(ppo_epochs=2, kl_beta=0.0)  # the KL is in the reward (ppo.kl_coef), not a loss term
  c.sampling.update(temperature=1.0, max_new_tokens=32)
  c.data.batch_size = c.rl.get_ref("prompts_per_step") * c.rl.get_ref("group_size") // c.rl.get_ref("minibatches")
  c.data.seq_len = c.rl.get_ref("max_prompt_len") + c.sampling.get_ref("max_new_tokens")
  c.steps = 120
  c.optim.update(lr=2e-5, warmup_steps=10, weight_decay=0.0, min_lr_ratio=1.0)  # GRPO's (configs/grpo.py)
  c.eval.every = 40
  c.checkpoint.every = 40
  c.log.every = 1
  if arg == "tiny":  # sizes match configs/pretrain.py:tiny, whose workdir is the usual init_from in tests
    base.use_tiny_model(c)
    c.steps = 4
    c.rl.update(group_size=4, prompts_per_step=4, eval_prompts=8, eval_batch_size=8)
    c.sampling.max_new_tokens = 16
    c.data.update(train_examples=200)
    c.eval.every = 2
    c.checkpoint.every = 2
  c.lock()
  return c
