"""GRPO on GSM8K (hf:openai/gsm8k, subset main: the train split, held out the test split): the GSM8K reward
(final number after "####", else the last number; commas, "$" and trailing zeros normalised) plus a small format
reward, held-out pass@1 on the test split.

  python run.py --config=configs/grpo_gsm8k.py --config.init_from=SFT_WORKDIR --config.workdir=W
  python run.py --config=configs/grpo_gsm8k.py:tiny --config.init_from=W --config.workdir=D    # smoke test

The data is a Hugging Face hub id, so the run needs the network (or the datasets cache with
HF_DATASETS_OFFLINE=1); a local copy works too: --config.data.name=train.jsonl --config.data.eval_split=''
(data.eval_fraction is then held out), or a dataset_info.json name with --config.rl.eval_data. init_from
should be a chat model that already writes "... #### <number>" answers (e.g. configs/sft.py with
--config.data.name=hf:openai/gsm8k --config.data.subset=main); the system prompt below asks for that format.
GSM8K questions run to ~200 tokens and solutions to ~300, so the model needs max_seq_len >= rl.max_prompt_len +
sampling.max_new_tokens; a CPU-sized model will not solve many of them: this config is for real hardware and real
checkpoints.
"""

from configs import grpo

SYSTEM_PROMPT = ("Solve the math problem step by step. End your reply with the final answer as a number on its "
                 "own line, in the form '#### <number>'.")


def get_config(arg: str | None = None):
  c = grpo.get_config(arg)
  c.unlock()
  c.data.update(name="hf:openai/gsm8k", subset="main", split="train", eval_split="test")
  c.rl.rewards = "gsm8k:1.0,format:0.1"
  c.sampling.system = SYSTEM_PROMPT
  c.rl.eval_data = "gsm8k_test"
  c.rl.max_prompt_len = 256
  c.sampling.max_new_tokens = 256
  # rl.group_rows (the default): each prompt once, then its 8 completions as rows of 256 attending to it: ~1.8x
  # fewer token slots and ~2x fewer attention scores than 8 rows of 512 (jaxllm/rl.py)
  c.rl.prompts_per_step = 8
  c.rl.eval_prompts = 200
  c.rl.eval_batch_size = 50
  c.model.max_seq_len = 512  # used only without init_from (an init_from run keeps its architecture)
  if arg == "tiny":
    c.data.max_examples = 64  # read only the first rows
    c.rl.update(max_prompt_len=112, eval_prompts=4, eval_batch_size=4)
    c.sampling.max_new_tokens = 16
    c.model.max_seq_len = 128
  c.lock()
  return c
