"""Ablation: SFT learning rate x 3 seeds, from the pipeline's pretrained model.

  python run.py --config=configs/pipeline.py --config.workdir=runs/pipeline --config.pipeline.stages=tokenizer,pretrain
  python experiments/sweep.py experiments/sweeps/sft_lr.py --parallel 2

Each run fine-tunes runs/pipeline/pretrain on the built-in world and reports held-out loss, answer-format
compliance and pass@1; the table is runs/sweeps/sft_lr/sweep.md.
"""
BASE = "configs/sft.py"
SEEDS = [0, 1, 2]
METRICS = ["eval_loss", "eval_answer_format", "eval_accuracy"]
OVERRIDES = {"init_from": "runs/pipeline/pretrain", "steps": 100, "log.tensorboard": False, "sample.num": 0}


def settings() -> list[dict]:
  return [{"optim.lr": lr} for lr in (3e-4, 1e-3, 3e-3)]
