"""Stage `pretrain`: next-token prediction on packed text (the built-in task world, or data.name).

  python run.py --config=configs/pretrain.py --config.workdir=W
  python run.py --config=configs/pretrain.py --config.workdir=W --config.data.name=CORPUS --config.data.streaming=True

With data.streaming the corpus is never held in memory: it is read through datasets streaming, tokenized on
the fly and sharded by process (data/stream.py); the first data.eval_examples documents are held out, and the
unigram baseline (which needs the whole corpus's counts) is not computed.
"""
from __future__ import annotations

import jax
import ml_collections
import numpy as np

from jaxllm import runtime, train
from jaxllm.data import pipelines, sources, stream, text


def token_stream(env: runtime.Env, docs: list[str]) -> np.ndarray:
  ids = env.tokenizer.encode_batch(docs)
  return pipelines.concat_documents(ids, env.tokenizer.eot_id)


def unigram_perplexity(train_flat: np.ndarray, eval_flat: np.ndarray, vocab_size: int) -> float:
  """Held-out perplexity of the training unigram distribution (add-one smoothed): the bar a model must beat."""
  counts = np.bincount(train_flat, minlength=vocab_size).astype(np.float64) + 1.0
  logp = np.log(counts / counts.sum())
  return float(np.exp(-logp[eval_flat[1:]].mean()))


def print_samples(env: runtime.Env, state: train.TrainState, prompts: list[str]) -> dict:
  """Greedy (or sampled, per config.sample) continuations of a few prompts, printed for a person to read."""
  from jaxllm import sampling
  from jaxllm.state import policy_weights

  s = env.config.sample
  if s.num <= 0:
    return {}
  if env.process_count > 1:  # weights span processes; sampling here would need every process to join
    env.log("samples are skipped in multi-process runs; sample from the workdir with configs/chat.py")
    return {}
  prompts = [s.prompt] if s.prompt else prompts[:s.num]
  ids = [[env.tokenizer.eot_id] + env.tokenizer.encode(p) for p in prompts]
  weights, lora = policy_weights(state.params, state.frozen)
  params = sampling.params_from(env.config.sampling, stop_ids=(env.tokenizer.eot_id,),
                                vocab_limit=env.tokenizer.n_vocab)
  out = sampling.generate(env.model, weights, ids, params, jax.random.PRNGKey(env.config.seed), lora=lora)
  for prompt, row, n in zip(prompts, out.tokens, out.lengths):
    print(f"--- sample\n{prompt}{env.tokenizer.decode(row[:n].tolist())}", flush=True)
  return {}


def streamed_batches(env: runtime.Env) -> tuple[stream.StreamedLMBatches, list[str], sources.Sink]:
  """(this process's training batches, held-out documents, the count of bad rows skipped) of a streamed corpus."""
  c = env.config
  open_stream, text_of, source, skipped = sources.text_stream(c.data)
  eval_docs = stream.eval_documents(open_stream, text_of, c.data.eval_examples, env.process_count)
  if not eval_docs:
    raise sources.DataError(f"{source}: no held-out documents (data.eval_examples={c.data.eval_examples})")
  batches = stream.StreamedLMBatches(open_stream, text_of, env.tokenizer.encoding.encode_ordinary,
                                     env.tokenizer.eot_id, c.data.seq_len, c.data.batch_size // env.process_count,
                                     jax.process_index(), env.process_count, c.data.eval_examples)
  env.log(f"pretrain: streaming {source}, {len(eval_docs)} documents held out; process {jax.process_index()} of "
          f"{env.process_count} reads its own share")
  return batches, eval_docs, skipped


def run(config: ml_collections.ConfigDict) -> dict:
  env = runtime.prepare(config)
  c = env.config
  eot = env.tokenizer.eot_id
  host_metrics = None
  if c.data.streaming:  # rows are read as training goes: the skip count grows with them
    batches, eval_docs, stream_skips = streamed_batches(env)
    train_flat, eval_flat, skipped = None, token_stream(env, eval_docs), 0

    def host_metrics() -> dict[str, float]:  # bad rows met so far (data.on_bad_row=skip), logged with the loss
      return {"data_skipped_rows": stream_skips.skipped}
  else:
    train_docs, eval_docs, skipped = text.read_documents(c)
    train_flat, eval_flat = token_stream(env, train_docs), token_stream(env, eval_docs)
    env.log(f"pretrain: {len(train_docs)} documents, {len(train_flat)} tokens; held out {len(eval_docs)} "
            f"documents, {len(eval_flat)} tokens")
    batches = pipelines.packed_lm_batches(train_flat, c.data.seq_len, c.data.batch_size, c.seed, eot)
  eval_batches = pipelines.packed_lm_eval_batches(eval_flat, c.data.seq_len, c.data.batch_size, eot,
                                                  c.eval.batches)
  loss = c.stage
  prompts = [d[:max(8, len(d) // 3)] for d in eval_docs]
  task = train.Task(
      loss=loss,
      batches=batches,
      evaluate=lambda state: train.evaluate_loss(env, loss, state, eval_batches),
      on_end=lambda state: print_samples(env, state, prompts), host_metrics=host_metrics,
      data_skipped_rows=skipped)
  summary = train.fit(env, task)
  if c.data.streaming:
    summary["data_skipped_rows"] = stream_skips.skipped
    if stream_skips.skipped:
      env.log(f"pretrain: skipped {stream_skips.skipped} bad rows (data.on_bad_row=skip), e.g. "
              f"{stream_skips.reasons[:3]}")
  if train_flat is not None:
    summary["unigram_ppl"] = unigram_perplexity(train_flat, eval_flat, env.model_cfg.vocab_size)
  return summary
