"""Log-probs of G completions of each prompt with the prompt run once: the prompt through the model into a KV
cache, the cache copied to its G completions, then the completions as rows of their own attending to it.

Batch (jaxllm/rl.py `prompt_layout`; P prompts, G = R / P completions each, prompt-major):
  prompt_tokens, prompt_positions,   [P, Q] int32   each prompt but its last token, left-padded (segment 0) so
  prompt_segments                                   it ends at slot Q-1, at its own RoPE positions 0..len-2
  tokens, targets, positions,        [R, C] int32   the prompt's last token then the completion, at positions
  segment_ids                                       len-1.., in cache slots Q..; a target the next token

The same numbers as one row of prompt + completion (the cache path masks by slot and segment exactly as the
row's causal mask does), and the gradient reaches the prompt's keys and values through all G copies. What it
saves over a row per sample is the prompt's G-1 repeats; over one branch row per group (data/branches.py) the
[G * C, G * C] attention across completions that never see each other: at the GRPO benchmark's shape (prompts
~56 tokens, G = 8, 64 new tokens) a forward and backward pass took about half as long (docs/performance.md).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxllm.losses.common import hidden_logprobs
from jaxllm.model import init_cache

PROMPT_KEYS = ("prompt_tokens", "prompt_positions", "prompt_segments")


def shared_prompt_logprobs(model, weights, lora, batch: dict, rng, chunk_size: int = 0) -> jax.Array:
  """log pi of every completion's targets, [R, C] f32."""
  prompt_PQ = batch["prompt_tokens"]
  (p, q), (r, c) = prompt_PQ.shape, batch["tokens"].shape
  rng_prompt, rng_completion = jax.random.split(rng) if rng is not None else (None, None)
  variables = {"params": weights}
  _, cache = model.apply(variables, prompt_PQ, batch["prompt_positions"], batch["prompt_segments"],
                         cache=init_cache(model.cfg, p, q + c), lora=lora, return_hidden=True,
                         rngs={"dropout": rng_prompt} if rng is not None else {})
  copies = lambda x: jnp.repeat(x, r // p, axis=0)
  cache = {**cache, "layers": jax.tree.map(copies, cache["layers"]), "segment_ids": copies(cache["segment_ids"])}
  hidden_RCD, _ = model.apply(variables, batch["tokens"], batch["positions"], batch["segment_ids"], cache=cache,
                              lora=lora, return_hidden=True,
                              rngs={"dropout": rng_completion} if rng is not None else {})
  return hidden_logprobs(model, weights, hidden_RCD, batch["targets"], chunk_size, lora)[0]
