"""Stage `sft`: supervised fine-tuning on chat data with an answer-only loss mask, full or LoRA.

  python run.py --config=configs/sft.py --config.workdir=W --config.init_from=PRETRAIN_WORKDIR
  python run.py --config=configs/sft_lora.py --config.workdir=W --config.init_from=PRETRAIN_WORKDIR
  python run.py --config=configs/sft_sentiment.py --config.workdir=W --config.tokenizer.path=TOKENIZER_WORKDIR

Data (`data.name`): '' = the built-in task world (its own held-out split); a dataset of `data.dataset_info`
(alpaca / sharegpt / gsm8k as chat; classification records become chat turns "sft.instruction\\ntext" ->
label); or a file, folder, glob, hub id or URL read as `sft.formatting` (auto = detected from its columns).
Named data is split `data.eval_fraction` held out, by seed (or `data.eval_split` is read as held-out).
Evaluation: held-out loss/ppl, plus greedy-generation metrics from `jaxllm.evals` on `sft.eval_examples`
held-out prompts (answer accuracy and format on the built-in world / gsm8k, label accuracy on classification).
"""
from __future__ import annotations

import ml_collections

from jaxllm import evals, runtime, train
from jaxllm.data import sft as sft_data
from jaxllm.data.chats import load_chats, references
from jaxllm.state import TrainState, policy_weights


def _print_samples(env: runtime.Env, state: TrainState, prompts, refs, tools) -> dict:
  s = env.config
  n = s.sample.num
  if n <= 0 or not prompts or not env.is_main:
    return {}
  if env.process_count > 1:  # weights span processes; sampling here would need every process to join
    env.log("samples are skipped in multi-process runs; sample from the workdir with configs/chat.py")
    return {}
  weights, lora = policy_weights(state.params, state.frozen)
  texts = evals.generate_answers(env, weights, lora, prompts[:n], max_new_tokens=s.sampling.max_new_tokens,
                                 batch_size=n, tools=tools[:n])
  for prompt, ref, got in zip(prompts, refs, texts):
    print(f"--- sample\n[{prompt[-1]['role']}] {prompt[-1]['content'][-300:]}\n[reference] {ref}\n[model] {got}",
          flush=True)
  return {}


def run(config: ml_collections.ConfigDict) -> dict:
  env = runtime.prepare(config)
  c, s = env.config, env.config.sft
  chats = load_chats(c)
  if chats.skipped:
    env.log(f"sft: skipped {chats.skipped} malformed rows of {chats.source} (data.on_bad_row=skip)")
  pad = env.tokenizer.pad_id
  common = dict(seq_len=c.data.seq_len, train_on=s.train_on, on_bad=c.data.on_bad_row, on_long=c.data.on_long,
                prompt_fraction=c.data.prompt_fraction)
  train_examples, train_stats = sft_data.encode(env.tokenizer, chats.train, source=f"{chats.source} (train)",
                                                 **common)
  eval_examples, eval_stats = sft_data.encode(env.tokenizer, chats.eval, source=f"{chats.source} (held out)",
                                              **common)
  batches = sft_data.train_batches(train_examples, train_stats, c.data.seq_len, c.data.batch_size, c.seed, pad,
                                   s.packing)
  eval_batches = (sft_data.eval_batches(eval_examples, eval_stats, c.data.seq_len, c.data.batch_size, pad,
                                        s.packing, c.eval.batches) if eval_examples else [])
  env.log(f"sft train ({chats.source}): {train_stats.describe()}")
  env.log(f"sft held out: {len(chats.eval)} conversations; loss on at most eval.batches={c.eval.batches} "
          f"batches: {eval_stats.describe()}")

  gen = chats.eval[:s.eval_examples] if chats.kind else []
  if gen and env.process_count > 1:  # the sampler runs on one process's arrays (as GRPO's rollouts do)
    env.log("sft: held-out generation metrics are skipped in multi-process runs (held-out loss is kept); "
            "evaluate the workdir with configs/eval.py on one process")
    gen = []
  prompts, refs, tools = references(gen, chats.kind)
  loss = c.stage

  def evaluate(state: TrainState) -> dict:
    out = train.evaluate_loss(env, loss, state, eval_batches) if eval_batches else {}
    if prompts:
      weights, lora = policy_weights(state.params, state.frozen)
      out.update(evals.generation_metrics(env, weights, lora, prompts, refs, chats.kind,
                                          max_new_tokens=c.sampling.max_new_tokens, batch_size=s.eval_batch_size,
                                          tools=tools))
    return out

  data_counts = {"data_truncated": train_stats.truncated, "data_dropped": train_stats.dropped}
  task = train.Task(loss=loss, batches=batches, evaluate=evaluate, host_metrics=lambda: data_counts,
                    on_end=lambda state: _print_samples(env, state, *references(chats.eval, chats.kind)),
                    data_skipped_rows=chats.skipped + train_stats.skipped + eval_stats.skipped)
  summary = train.fit(env, task)
  for prefix, stats in (("data_", train_stats), ("data_eval_", eval_stats)):  # skips: in data_skipped_rows
    summary.update({k: v for k, v in stats.as_dict(prefix).items() if k != f"{prefix}skipped"})
  return summary
