"""Generation-based evaluation: greedy answers to held-out conversations, scored against references.

  texts = generate_answers(env, weights, lora, conversations, max_new_tokens=64)
  metrics = score(texts, references, kind="answer")       # or generation_metrics(...) for both at once

Conversations are prompt turns (ending where the assistant should speak), rendered with the chat template's
generation prompt; generation stops at the template's stop ids. Every stage that scores generations (SFT,
GRPO, the eval stage) goes through here. Kinds of reference:

  answer          a final number: `accuracy` = pass@1 of the extracted answer (`answers.answers_match`),
                  `answer_format` = share of generations with "#### <number>"
  classification  a label: `accuracy` = generated text (stripped) equals the label, `valid_label` = share of
                  generations that are one of the labels seen among the references
  exact           any text: `accuracy` = stripped generated text equals the stripped reference

Every kind also reports `gen_tokens` (mean generated tokens) and `stopped` (share that ended with a stop id).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import jax
import numpy as np

from jaxllm import answers, chat_template, sampling

if TYPE_CHECKING:
  from jaxllm.runtime import Env

KINDS = ("answer", "classification", "exact")


def cut_prompt(ids: list[int], budget: int) -> list[int]:
  """A prompt cut from the left to `budget` tokens, keeping its first token (normally <|im_start|>)."""
  return ids if len(ids) <= budget else ids[:1] + ids[len(ids) - budget + 1:]


def generate_ids(env: Env, weights: Any, lora: Any, prompts: list[list[int]], *, max_new_tokens: int,
                 batch_size: int = 32, temperature: float = 0.0, top_k: int = 0, top_p: float = 1.0,
                 stops: tuple[int, ...] | None = None,
                 rng: jax.Array | None = None) -> tuple[list[list[int]], np.ndarray]:
  """(generated ids per prompt, stop id excluded; whether each stopped) for token-id prompts, each cut from the
  left to fit max_seq_len. Greedy unless temperature > 0 (then top_k / top_p apply); `stops` defaults to the
  chat template's stop ids.

  Prompts are sorted by length and batched in fixed-size batches (the last one padded with repeats) so the
  engine compiles one program per prompt-length bucket.
  """
  if not prompts:
    return [], np.zeros(0, bool)
  tokenizer = env.tokenizer
  budget = env.model_cfg.max_seq_len - max_new_tokens
  if budget < 1:
    raise ValueError(f"max_new_tokens={max_new_tokens} leaves no room for a prompt in max_seq_len="
                     f"{env.model_cfg.max_seq_len}")
  prompts = [cut_prompt(p, budget) for p in prompts]
  order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
  batch_size = max(1, min(batch_size, len(prompts)))
  stops = chat_template.stop_ids(tokenizer) if stops is None else tuple(stops)
  params = sampling.SamplingParams(max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k,
                                   top_p=top_p, stop_ids=stops, vocab_limit=tokenizer.n_vocab)
  rng = jax.random.PRNGKey(env.config.seed) if rng is None else rng
  out: list[list[int]] = [[] for _ in prompts]
  stopped = np.zeros(len(prompts), bool)
  for start in range(0, len(order), batch_size):
    idx = order[start:start + batch_size]
    batch = [prompts[i] for i in idx]
    batch += [batch[-1]] * (batch_size - len(batch))
    gen = sampling.generate(env.model, weights, batch, params, jax.random.fold_in(rng, start), lora=lora,
                            pad_id=tokenizer.pad_id)
    for row, i in enumerate(idx):
      n = int(gen.lengths[row])
      ids = gen.tokens[row, :n].tolist()
      if gen.stopped[row] and ids and ids[-1] in stops:
        ids = ids[:-1]
      out[i] = ids
      stopped[i] = bool(gen.stopped[row])
  return out, stopped


def generate_raw(env: Env, weights: Any, lora: Any, conversations: list[list[dict]], *, max_new_tokens: int,
                 batch_size: int = 32, tools: list[str] | None = None, temperature: float = 0.0,
                 rng: jax.Array | None = None) -> tuple[list[list[int]], np.ndarray]:
  """`generate_ids` on conversations rendered with the chat template's generation prompt."""
  tools = tools or [""] * len(conversations)
  prompts = [chat_template.prompt_ids(env.tokenizer, c, tools=t) for c, t in zip(conversations, tools)]
  return generate_ids(env, weights, lora, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size,
                      temperature=temperature, rng=rng)


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
    return {"accuracy": correct / n, "valid_label": valid / n}
  return {"accuracy": sum(t.strip() == r.strip() for t, r in zip(texts, references)) / n}


def generation_metrics(env: Env, weights: Any, lora: Any, conversations: list[list[dict]], references: list[str],
                       kind: str, *, max_new_tokens: int, batch_size: int = 32,
                       tools: list[str] | None = None) -> dict[str, float]:
  """Greedy generation on every conversation, scored against its reference; a flat dict of floats."""
  if kind not in KINDS:
    raise ValueError(f"evaluation kind {kind!r} is not one of {KINDS}")
  ids, stopped = generate_raw(env, weights, lora, conversations, max_new_tokens=max_new_tokens,
                              batch_size=batch_size, tools=tools)
  metrics = score([env.tokenizer.decode(x) for x in ids], references, kind)
  metrics["gen_tokens"] = float(np.mean([len(x) for x in ids])) if ids else 0.0
  metrics["stopped"] = float(stopped.mean()) if len(stopped) else 0.0
  return metrics
