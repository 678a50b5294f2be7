"""Supervised fine-tuning on the built-in task world (chat turns, answer "steps\\n#### N"), full fine-tuning.

  python run.py --config=configs/pretrain.py --config.workdir=/tmp/jaxllm/pt
  python run.py --config=configs/sft.py --config.workdir=/tmp/jaxllm/sft --config.init_from=/tmp/jaxllm/pt
  python run.py --config=configs/sft.py:tiny --config.workdir=W --config.init_from=TINY_PRETRAIN_WORKDIR

The model architecture and tokenizer come from init_from (without it: a random init of model.*). Default
(200 steps of 16 packed rows x 256 tokens from configs/pretrain.py's model): ~8 min of CPU time on 2 cores;
held-out answer format 100% and answer accuracy 76% (experiments/sft_builtin.py has the numbers).
Other data (format told from the columns; docs/data.md): --config.data.name=hf:tatsu-lab/alpaca (network), a
local file / folder / glob, or a file's URL (network), e.g.
--config.data.name=https://raw.githubusercontent.com/hiyouga/LLaMA-Factory/main/data/alpaca_en_demo.json
"""

import ml_collections

from configs import base


def sft_defaults() -> ml_collections.ConfigDict:
  s = ml_collections.ConfigDict()
  s.packing = True  # pack several examples per sequence (segment ids); False = one example per row, padded
  s.train_on = "last"  # last = loss on the final assistant turn only; all = every assistant turn (history)
  s.instruction = ""  # classification data: the user turn is "instruction\ntext", the answer the label
  # how data.name is read without a dataset_info: auto (told from its columns) | alpaca | sharegpt | messages |
  # prompt_completion | preference | gsm8k | classification | text
  s.formatting = "auto"
  s.eval_kind = "auto"  # generation metrics: auto | answer | classification | exact | '' (held-out loss only)
  s.eval_examples = 200  # held-out prompts answered greedily at each evaluation (0 = none)
  s.eval_batch_size = 64  # prompts per generation batch
  # built-in world: share of multi-step training demonstrations that stop after the first step and answer
  # its result, a systematic demonstrator error for RL to correct (experiments/grpo_builtin.py); 0 = none
  s.first_step_only = 0.0
  return s


def get_config(arg: str | None = None):
  c = base.get_config()
  c.stage = "sft"
  c.sft = sft_defaults()
  c.steps = 200
  c.data.seq_len = 256
  c.optim.update(lr=1e-3, warmup_steps=20)
  c.eval.every = 100
  c.checkpoint.every = 100
  if arg == "tiny":  # sizes match configs/pretrain.py:tiny, whose workdir is the usual init_from
    c.steps = 10
    base.use_tiny_model(c)
    c.data.update(batch_size=8, seq_len=128, train_examples=400, eval_examples=24)
    c.sft.update(eval_examples=8, eval_batch_size=8)
    c.sampling.max_new_tokens = 32
    c.eval.update(every=10, batches=2)
    c.checkpoint.every = 10
    c.log.every = 5
    c.sample.num = 1
  c.lock()
  return c
