"""Stage `sft`: supervised fine-tuning on chat data with an answer-only loss mask, full or LoRA.

  python run.py --config=configs/sft.py --config.workdir=W --config.init_from=PRETRAIN_WORKDIR
  python run.py --config=configs/sft_lora.py --config.workdir=W --config.init_from=PRETRAIN_WORKDIR
  python run.py --config=configs/sft_sentiment.py --config.workdir=W --config.tokenizer.path=TOKENIZER_WORKDIR

Data (`data.name`): '' = the built-in task world (its own held-out split); a dataset of `data.dataset_info`
(alpaca / sharegpt / gsm8k as chat; classification records become chat turns "sft.instruction\\ntext" ->
label); or a file, folder, glob, hub id or URL read as `sft.formatting` (auto = detected from its columns). Named data is split `data.eval_fraction` held out, by seed.
Evaluation: held-out loss/ppl, plus greedy-generation metrics from `jaxllm.evals` on `sft.eval_examples`
held-out prompts (answer accuracy and format on the built-in world / gsm8k, label accuracy on classification).
"""
from __future__ import annotations

import dataclasses

import ml_collections

from jaxllm import answers, evals, runtime, train
from jaxllm.data import sft as sft_data
from jaxllm.data import sources, synthetic, text
from jaxllm.state import TrainState, policy_weights


@dataclasses.dataclass
class ChatData:
  train: list[dict]  # {"messages": [...], "tools": str}, the last message the assistant's answer
  eval: list[dict]
  kind: str  # evals kind for generation metrics: answer | classification | exact | '' (loss only)
  source: str
  skipped: int = 0  # malformed rows skipped by the reader


def classification_chat(record: dict, instruction: str) -> dict:
  """{"text", "label"} -> a user turn (the instruction, a newline, the text) answered by the label."""
  user = f"{instruction}\n{record['text']}" if instruction else record["text"]
  return {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": record["label"]}],
          "tools": ""}


def _record_kind(formatting: str) -> str:
  return "classification" if formatting == "classification" else "chat"


def load_chats(config: ml_collections.ConfigDict) -> ChatData:
  """Training and held-out conversations for the configured data."""
  data, s = config.data, config.sft
  if not data.name:
    def chats(split: str, n: int) -> list[dict]:
      flawed = s.first_step_only if split == "train" else 0.0  # held-out references stay right
      return [{"messages": m, "tools": ""}
              for m in synthetic.sft_examples(config.seed, split, n, first_step_only=flawed)]
    kind = "answer" if s.eval_kind == "auto" else s.eval_kind
    return ChatData(chats("train", data.train_examples), chats("eval", data.eval_examples), kind, "built-in world")
  result = sources.load_config(data, _record_kind, s.formatting, limit=data.max_examples or None)
  formatting = result.formatting
  records = result.records
  if data.eval_split:  # a split of its own (hub ids, save_to_disk DatasetDicts), read the same way
    held = sources.load_config(data, _record_kind, s.formatting, split=data.eval_split).records
    train_records, eval_records = records, held
  else:
    train_records, eval_records = text.split_documents(records, data.eval_fraction, config.seed)
  if _record_kind(formatting) == "classification":
    train_records = [classification_chat(r, s.instruction) for r in train_records]
    eval_records = [classification_chat(r, s.instruction) for r in eval_records]
  kind = s.eval_kind
  if kind == "auto":
    kind = {"classification": "classification", "gsm8k": "answer"}.get(formatting, "")
  return ChatData(train_records, eval_records, kind, result.source, result.skipped)


def references(chats: list[dict], kind: str) -> tuple[list[list[dict]], list[str], list[str]]:
  """(prompt turns, reference answers, tools) of held-out conversations."""
  prompts = [c["messages"][:-1] for c in chats]
  refs = [c["messages"][-1]["content"] for c in chats]
  if kind == "answer":
    refs = [answers.extract_final_answer(r) or r for r in refs]
  return prompts, refs, [c.get("tools", "") for c in chats]


def _print_samples(env: runtime.Env, state: TrainState, prompts, refs, tools) -> dict:
  s = env.config
  n = s.sample.num
  if n <= 0 or not prompts or not env.is_main:
    return {}
  weights, lora = policy_weights(state.params, state.frozen)
  texts = evals.generate_answers(env, weights, lora, prompts[:n], max_new_tokens=s.sft.max_new_tokens,
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
  prompts, refs, tools = references(gen, chats.kind)
  loss = c.stage

  def evaluate(state: TrainState) -> dict:
    out = train.evaluate_loss(env, loss, state, eval_batches) if eval_batches else {}
    if prompts:
      weights, lora = policy_weights(state.params, state.frozen)
      out.update(evals.generation_metrics(env, weights, lora, prompts, refs, chats.kind,
                                          max_new_tokens=s.max_new_tokens, batch_size=s.eval_batch_size,
                                          tools=tools))
    return out

  data_counts = {"data_truncated": train_stats.truncated, "data_dropped": train_stats.dropped}
  task = train.Task(loss=loss, batches=batches, evaluate=evaluate, host_metrics=lambda: data_counts,
                    on_end=lambda state: _print_samples(env, state, *references(chats.eval, chats.kind)))
  summary = train.fit(env, task)
  summary.update(train_stats.as_dict("data_"))
  summary.update(eval_stats.as_dict("data_eval_"))
  return summary
