"""GRPO rollouts that may call tools: G samples per prompt through the engine loop (jaxllm/tools/loop.py), laid
out as one `sampling.Generation` (completions = sampled and tool-turn tokens in order) plus each row's
ToolRollout, whose `sampled` flags let jaxllm/rl.py mask the tool results out of the loss and the policy
gradient (`loop.sampled_mask`).

Round 0 prefills each prompt once for its G samples (samples_per_prompt); later rounds continue the rows that
called a tool, padded to all R rows with repeats so a round compiles one program per prompt bucket. Row r
samples round k with fold_in(split(rng, R)[r], k): its samples depend only on its key and its own inputs.
"""
from __future__ import annotations

from typing import Any

import jax
import numpy as np

from jaxllm import chat_template, sampling, tools as tool_registry
from jaxllm.tools import loop


def sample(env, weights: Any, lora: Any, prompts: list[list[int]], params: sampling.SamplingParams, rng: jax.Array,
           group_size: int) -> tuple[sampling.Generation, list[loop.ToolRollout]]:
  """(the R = len(prompts) * group_size completions, prompt-major, as a Generation; each row's ToolRollout)."""
  c, tok = env.config, env.tokenizer
  rows = [list(p) for p in prompts for _ in range(group_size)]
  keys_R = jax.random.split(rng, len(rows))
  fold = jax.vmap(jax.random.fold_in, (0, None))
  params = sampling.SamplingParams(**{**params.__dict__,
                                      "stop_ids": params.stop_ids + chat_template.call_stop_ids(tok)})

  def generate_fn(active: list[int], inputs: list[list[int]], round_: int) -> list[loop.Sampled]:
    if round_ == 0:
      gen = sampling.generate(env.model, weights, [list(p) for p in prompts], params, fold(keys_R, 0), lora=lora,
                              pad_id=tok.pad_id, samples_per_prompt=group_size)
    else:
      fill = len(rows) - len(active)
      idx = np.asarray(active + [active[-1]] * fill)
      gen = sampling.generate(env.model, weights, inputs + [inputs[-1]] * fill, params, fold(keys_R[idx], round_),
                              lora=lora, pad_id=tok.pad_id)
    return [loop.Sampled(gen.tokens[i, :gen.lengths[i]].tolist(), gen.logprobs[i, :gen.lengths[i]].tolist(),
                         bool(gen.stopped[i])) for i in range(len(inputs))]

  max_len = min(c.data.seq_len + 1, env.model_cfg.max_seq_len)
  rolls = loop.run(generate_fn, tok, tool_registry.registry(c.tools.names, c.tools.table), rows,
                   max_calls=c.tools.max_calls, max_len=max_len, max_new_tokens=params.max_new_tokens)
  width = max(len(r.ids) for r in rolls)
  tokens = np.full((len(rows), width), tok.pad_id, np.int32)
  logprobs = np.zeros((len(rows), width), np.float32)
  for i, r in enumerate(rolls):
    tokens[i, :len(r.ids)], logprobs[i, :len(r.ids)] = r.ids, r.logprobs
  gen = sampling.Generation(tokens, logprobs, np.array([len(r.ids) for r in rolls], np.int32),
                            np.array([r.stopped for r in rolls], bool))
  return gen, rolls
