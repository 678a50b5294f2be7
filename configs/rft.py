"""Rejection-sampling fine-tuning (expert iteration) on the built-in task world: sample k answers per problem,
keep the verified-correct ones (shortest first), SFT on them, repeat; every round inside one resumable run.

  python run.py --config=configs/rft.py --config.init_from=SFT_WORKDIR --config.workdir=W
  python run.py --config=configs/rft.py:tiny --config.init_from=TINY_WORKDIR --config.workdir=W   # smoke test
  python experiments/rl_compare.py --out=OUT --init_from=SFT_WORKDIR   # RFT vs GRPO vs PPO at equal sampled tokens

The default samples as many answers as configs/grpo.py's 60 steps (5 rounds x 192 problems x 8 samples = 7680
= 60 x 16 x 8), so at equal completion lengths the two spend the same sampled tokens (`sampled_tokens` in
metrics.jsonl). Result (held-out pass@1 against GRPO's): docs/rft_ppo.md.
"""

import ml_collections

from configs import base


def rft_defaults() -> ml_collections.ConfigDict:
  f = ml_collections.ConfigDict()
  f.samples = 8  # k: answers sampled per problem each round
  f.problems_per_round = 192  # training problems sampled each round (walking a seeded permutation)
  f.steps_per_round = 8  # SFT steps on a round's kept answers (data.batch_size rows each) before sampling again
  f.keep = "shortest"  # of a problem's distinct correct answers: shortest | first (sample order) | all
  f.max_keep_per_problem = 2  # kept answers per problem at most; 0 = no cap
  f.verifier = "exact_answer"  # the reward (a name in rl.rewards) that verifies an answer ...
  f.threshold = 1.0  # ... when it scores at least this
  return f


def rl_keys() -> ml_collections.ConfigDict:
  """The rl.* keys RFT shares with GRPO (prompts, rewards, held-out pass@1); configs/grpo.py documents them."""
  r = ml_collections.ConfigDict()
  r.max_prompt_len = 64
  r.rewards = "exact_answer:1.0"
  r.reward_model = ""
  r.eval_data = ""
  r.eval_prompts = 200
  r.eval_batch_size = 100
  return r


def get_config(arg: str | None = None):
  c = base.get_config()
  c.stage = "rft"
  c.rft = rft_defaults()
  c.rl = rl_keys()
  c.sampling.update(temperature=1.0, max_new_tokens=32)  # as GRPO's rollouts
  c.data.batch_size = 32
  c.data.seq_len = c.rl.get_ref("max_prompt_len") + c.sampling.get_ref("max_new_tokens")
  c.steps = 40
  # flat after warmup, GRPO's rate: at 1e-4 RFT cost 6.5 points of held-out pass@1, at 2e-5 it gained 0.5
  # (1280 answers from the pipeline's SFT model, docs/rft_ppo.md)
  c.optim.update(lr=2e-5, warmup_steps=4, weight_decay=0.0, min_lr_ratio=1.0)
  c.eval.every = 8
  c.checkpoint.every = 8
  c.log.every = 1
  if arg == "tiny":  # sizes match configs/pretrain.py:tiny, whose workdir is the usual init_from in tests
    base.use_tiny_model(c)
    c.steps = 4
    c.rft.update(samples=4, problems_per_round=4, steps_per_round=2, max_keep_per_problem=2)
    c.rl.update(eval_prompts=8, eval_batch_size=8)
    c.sampling.max_new_tokens = 16
    c.data.update(batch_size=4, train_examples=200)
    c.eval.every = 2
    c.checkpoint.every = 1
  c.lock()
  return c
