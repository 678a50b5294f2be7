"""Ablation: GRPO group size (completions sampled per prompt) 2 / 4 / 8 x 3 seeds, from the pipeline's SFT model.

  python run.py --config=configs/pipeline.py --config.workdir=runs/pipeline --config.pipeline.stages=tokenizer,pretrain,sft
  python experiments/sweep.py experiments/sweeps/grpo_group_size.py --parallel 2

Prompts per step are held fixed, so larger groups also mean more samples per step; the table reports held-out
pass@1 and the final training reward (runs/sweeps/grpo_group_size/sweep.md).
"""
BASE = "configs/grpo.py"
SEEDS = [0, 1, 2]
METRICS = ["eval_accuracy", "train_reward_mean"]
OVERRIDES = {"init_from": "runs/pipeline/sft", "log.tensorboard": False, "sample.num": 0}


def settings() -> list[dict]:
  return [{"rl.group_size": g} for g in (2, 4, 8)]
