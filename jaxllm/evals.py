"""Generation-based evaluation: greedy answers to held-out conversations, scored against references.

  texts = generate_answers(env, weights, lora, conversations, max_new_tokens=64)
  metrics = score(texts, references, kind="answer")       # or generation_metrics(...) for both at once

Conversations are prompt turns (ending where the assistant should speak), rendered with the chat template's
generation prompt; generation stops at the template's stop ids. Every stage that scores generations (SFT,
GRPO, the eval stage) goes through here. Kinds of reference:

  answer          a final number: `accuracy` = pass@1 of the extracted answer (`answers.answers_match`),
                  `answer_format` = share of generations with "#### <number>"
  classification  a label: `accuracy` = generated text (stripped) equals the label, `valid_label` = share of
                  generations that are one of the labels seen among the references, `macro_f1` = mean over
                  those labels of their F1 (a generation that is no label is a miss of its reference's class)
  exact           any text: `accuracy` = stripped generated text equals the stripped reference

Every kind also reports `gen_tokens` (mean generated tokens) and `stopped` (share that ended with a stop id);
`answer` also `false_refusal_rate` (share of replies that say "I don't know"). With the config's `tools.names`
the model may call tools while it answers (jaxllm/tools/loop.py): the reply scored is its final turn, and
`tool_calls` is the mean number of calls per reply.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import jax
import numpy as np

from jaxllm import answers, chat_template, class_metrics, sampling, sharding, spmd_sampling, tools
from jaxllm.data import synthetic_tools
from jaxllm.tools import loop as tool_loop

if TYPE_CHECKING:
  from jaxllm.runtime import Env

KINDS = ("answer", "classification", "exact")


def cut_prompt(ids: list[int], budget: int) -> list[int]:
  """A prompt cut from the left to `budget` tokens, keeping its first token (normally <|im_start|>)."""
  return ids if len(ids) <= budget else ids[:1] + ids[len(ids) - budget + 1:]


def _sample_rows(env: Env, weights: Any, lora: Any, prompts: list[list[int]], params: sampling.SamplingParams,
                 batch_size: int, rng: jax.Array) -> list[tool_loop.Sampled]:
  """Every prompt completed (stop token kept), sorted by length into fixed-size batches (the last padded with
  repeats) so the engine compiles one program per prompt-length bucket.

  Across processes (a collective: every process calls it with the same prompts) each process brings its share
  of the prompts to generations over the global batch with the sharded weights (jaxllm/spmd_sampling.py) and
  every process gets every row; greedy rows do not depend on the split."""
  if env.process_count == 1:
    run = lambda batch, key: sampling.generate(env.model, weights, batch, params, key, lora=lora,
                                               pad_id=env.tokenizer.pad_id)
    return _sample_batches(prompts, batch_size, rng, run)
  # Every process generates as many rows, in batches of a multiple of its data-parallel devices: its share,
  # padded with repeats that are dropped again.
  lo, hi = spmd_sampling.share(len(prompts))
  local_devices = max(1, sharding.data_parallel_size(env.mesh) // env.process_count)
  per = -(-len(prompts) // env.process_count // local_devices) * local_devices
  mine = prompts[lo:hi] or prompts[:1]
  mine = mine + [mine[-1]] * (per - len(mine))
  batch_size = -(-min(batch_size, per) // local_devices) * local_devices
  run = lambda batch, key: spmd_sampling.generate(env, weights, lora, batch, params,
                                                  np.asarray(jax.random.split(key, len(batch))))
  rows = _sample_batches(mine, batch_size, rng, run)[:hi - lo]
  ids, logprobs, stopped = spmd_sampling.gather_shares([r.ids for r in rows], [r.logprobs for r in rows],
                                                       np.array([r.stopped for r in rows], bool), len(prompts))
  return [tool_loop.Sampled(i, p, bool(s)) for i, p, s in zip(ids, logprobs, stopped)]


def _sample_batches(prompts: list[list[int]], batch_size: int, rng: jax.Array, run) -> list[tool_loop.Sampled]:
  """`_sample_rows` with `run(batch prompts, key) -> sampling.Generation` doing the generating."""
  order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
  batch_size = max(1, min(batch_size, len(prompts)))
  out: list[tool_loop.Sampled | None] = [None] * len(prompts)
  for start in range(0, len(order), batch_size):
    idx = order[start:start + batch_size]
    batch = [prompts[i] for i in idx]
    batch += [batch[-1]] * (batch_size - len(batch))
    gen = run(batch, jax.random.fold_in(rng, start))
    for row, i in enumerate(idx):
      n = int(gen.lengths[row])
      out[i] = tool_loop.Sampled(gen.tokens[row, :n].tolist(), gen.logprobs[row, :n].tolist(),
                                 bool(gen.stopped[row]))
  return out


def _params(env: Env, max_new_tokens: int, temperature: float, top_k: int, top_p: float,
            stops: tuple[int, ...]) -> sampling.SamplingParams:
  return sampling.SamplingParams(max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k,
                                 top_p=top_p, stop_ids=stops, vocab_limit=env.tokenizer.n_vocab)


def _prompt_budget(env: Env, max_new_tokens: int) -> int:
  budget = env.model_cfg.max_seq_len - max_new_tokens
  if budget < 1:
    raise ValueError(f"max_new_tokens={max_new_tokens} leaves no room for a prompt in max_seq_len="
                     f"{env.model_cfg.max_seq_len}")
  return budget


def generate_ids(env: Env, weights: Any, lora: Any, prompts: list[list[int]], *, max_new_tokens: int,
                 batch_size: int = 32, temperature: float = 0.0, top_k: int = 0, top_p: float = 1.0,
                 stops: tuple[int, ...] | None = None,
                 rng: jax.Array | None = None) -> tuple[list[list[int]], np.ndarray]:
  """(generated ids per prompt, stop id excluded; whether each stopped) for token-id prompts, each cut from the
  left to fit max_seq_len. Greedy unless temperature > 0 (then top_k / top_p apply); `stops` defaults to the
  chat template's stop ids.
  """
  if not prompts:
    return [], np.zeros(0, bool)
  budget = _prompt_budget(env, max_new_tokens)
  prompts = [cut_prompt(p, budget) for p in prompts]
  stops = chat_template.stop_ids(env.tokenizer) if stops is None else tuple(stops)
  params = _params(env, max_new_tokens, temperature, top_k, top_p, stops)
  rng = jax.random.PRNGKey(env.config.seed) if rng is None else rng
  rows = _sample_rows(env, weights, lora, prompts, params, batch_size, rng)
  ids = [r.ids[:-1] if r.stopped and r.ids and r.ids[-1] in stops else r.ids for r in rows]
  return ids, np.array([r.stopped for r in rows], bool)


def generate_with_tools(env: Env, weights: Any, lora: Any, prompts: list[list[int]], *, max_new_tokens: int,
                        batch_size: int = 32, temperature: float = 0.0,
                        rng: jax.Array | None = None) -> list[tool_loop.ToolRollout]:
  """Replies that may call the config's tools (`tools.names`, at most `tools.max_calls` per reply), each turn up
  to max_new_tokens (jaxllm/tools/loop.py); round r of calls samples with fold_in(rng, r)."""
  c = env.config
  budget = _prompt_budget(env, max_new_tokens)
  prompts = [cut_prompt(p, budget) for p in prompts]
  stops = chat_template.stop_ids(env.tokenizer) + chat_template.call_stop_ids(env.tokenizer)
  params = _params(env, max_new_tokens, temperature, 0, 1.0, stops)
  rng = jax.random.PRNGKey(c.seed) if rng is None else rng

  def generate_fn(_, inputs: list[list[int]], round_: int) -> list[tool_loop.Sampled]:
    return _sample_rows(env, weights, lora, inputs, params, batch_size, jax.random.fold_in(rng, round_))

  return tool_loop.run(generate_fn, env.tokenizer, tools.registry(c.tools.names, c.tools.table), prompts,
                       max_calls=c.tools.max_calls, max_len=env.model_cfg.max_seq_len, max_new_tokens=max_new_tokens)


def _uses_tools(env: Env) -> bool:
  return "tools" in env.config and bool(env.config.tools.names)


def generate_raw(env: Env, weights: Any, lora: Any, conversations: list[list[dict]], *, max_new_tokens: int,
                 batch_size: int = 32, tools: list[str] | None = None, temperature: float = 0.0,
                 rng: jax.Array | None = None) -> tuple[list[list[int]], np.ndarray]:
  """`generate_ids` on conversations rendered with the chat template's generation prompt; with the config's
  `tools.names`, `generate_with_tools` and each reply's final turn."""
  ids, stopped, _ = _replies(env, weights, lora, conversations, max_new_tokens=max_new_tokens,
                             batch_size=batch_size, tools=tools, temperature=temperature, rng=rng)
  return ids, stopped


def _replies(env: Env, weights: Any, lora: Any, conversations: list[list[dict]], *, max_new_tokens: int,
             batch_size: int, tools: list[str] | None, temperature: float = 0.0,
             rng: jax.Array | None = None) -> tuple[list[list[int]], np.ndarray, np.ndarray]:
  """(reply ids, stopped, tool calls per reply)."""
  tools = tools or [""] * len(conversations)
  prompts = [chat_template.prompt_ids(env.tokenizer, c, tools=t) for c, t in zip(conversations, tools)]
  if not _uses_tools(env) or not prompts:
    ids, stopped = generate_ids(env, weights, lora, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size,
                                temperature=temperature, rng=rng)
    return ids, stopped, np.zeros(len(ids))
  rolls = generate_with_tools(env, weights, lora, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size,
                              temperature=temperature, rng=rng)
  return ([r.reply_ids for r in rolls], np.array([r.stopped for r in rolls], bool),
          np.array([r.calls for r in rolls], np.float64))


def generate_answers(env: Env, weights: Any, lora: Any, conversations: list[list[dict]], *, max_new_tokens: int,
                     batch_size: int = 32, tools: list[str] | None = None) -> list[str]:
  """Greedy assistant replies, as text."""
  ids, _ = generate_raw(env, weights, lora, conversations, max_new_tokens=max_new_tokens,
                        batch_size=batch_size, tools=tools)
  return [env.tokenizer.decode(x) for x in ids]


def score(texts: list[str], references: list[str], kind: str) -> dict[str, float]:
  """Scores of generated texts against references (see the module docstring for each kind)."""
  if kind not in KINDS:
    raise ValueError(f"evaluation kind {kind!r} is not one of {KINDS}")
  if len(texts) != len(references):
    raise ValueError(f"{len(texts)} generations for {len(references)} references")
  n = max(len(texts), 1)
  if kind == "answer":
    correct = sum(answers.answers_match(answers.extract_final_answer(t), r) for t, r in zip(texts, references))
    formatted = sum(answers.has_answer_format(t) for t in texts)
    return {"accuracy": correct / n, "answer_format": formatted / n}
  if kind == "classification":
    labels = {r.strip() for r in references}
    correct = sum(t.strip() == r.strip() for t, r in zip(texts, references))
    valid = sum(t.strip() in labels for t in texts)
    return {"accuracy": correct / n, "valid_label": valid / n,
            "macro_f1": class_metrics.label_summary(references, texts)["macro_f1"]}
  return {"accuracy": sum(t.strip() == r.strip() for t, r in zip(texts, references)) / n}


def generation_metrics(env: Env, weights: Any, lora: Any, conversations: list[list[dict]], references: list[str],
                       kind: str, *, max_new_tokens: int, batch_size: int = 32,
                       tools: list[str] | None = None) -> dict[str, float]:
  """Greedy generation on every conversation, scored against its reference; a flat dict of floats."""
  if kind not in KINDS:
    raise ValueError(f"evaluation kind {kind!r} is not one of {KINDS}")
  ids, stopped, calls = _replies(env, weights, lora, conversations, max_new_tokens=max_new_tokens,
                                 batch_size=batch_size, tools=tools)
  texts = [env.tokenizer.decode(x) for x in ids]
  metrics = score(texts, references, kind)
  metrics["gen_tokens"] = float(np.mean([len(x) for x in ids])) if ids else 0.0
  metrics["stopped"] = float(stopped.mean()) if len(stopped) else 0.0
  if _uses_tools(env):
    metrics["tool_calls"] = float(calls.mean()) if len(calls) else 0.0
  if kind == "answer":  # a refusal of an answerable question ("I don't know", jaxllm/data/synthetic_tools.py)
    metrics["false_refusal_rate"] = sum(map(synthetic_tools.is_refusal, texts)) / max(len(texts), 1)
  return metrics


def refusal_rate(env: Env, weights: Any, lora: Any, conversations: list[list[dict]], *, max_new_tokens: int,
                 batch_size: int = 32) -> float:
  """Share of replies to (unanswerable) conversations that say "I don't know"."""
  ids, _, _ = _replies(env, weights, lora, conversations, max_new_tokens=max_new_tokens, batch_size=batch_size,
                       tools=None)
  return sum(synthetic_tools.is_refusal(env.tokenizer.decode(x)) for x in ids) / max(len(ids), 1)
