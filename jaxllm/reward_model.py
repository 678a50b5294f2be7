"""A reward model: the shared transformer trunk plus a scalar head read at the last real token of a sequence.

The head is one more trainable entry of the train state, `params["score_head"] = {"w": [D], "b": []}`, so the
reward stage needs no second model class: `rewards(...)` runs the trunk with `return_hidden=True` and dots the
final hidden state at `last_index` with `w`. The index is explicit, so right padding (training batches) and
left padding (prompts packed to the right for sampling) read the same token. A head that also holds a scalar
`loglik_weight` adds that weight times the trunk's own LM log-likelihood of the sequence (`read_rewards`; the
reward stage's default on the built-in world, configs/reward.py says why).

Later stages score with a trained workdir:

  rm = RewardModel.load("/tmp/jaxllm/rm")
  rm.score([(messages_or_user_text, completion_text), ...])   # -> np.ndarray [N] f32
  rm.score([conversation_ending_with_an_assistant_turn, ...])
  rm.score_tokens([prompt_ids + completion_ids, ...])          # completions end with <|im_end|>, as sampled
  rm.score_arrays(tokens_BL, segment_ids_BL)                   # padded batches (left or right), segment 0 = pad
"""
from __future__ import annotations

import os
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxllm import chat_template, sharding
from jaxllm.checkpoint import load_pretrained
from jaxllm.losses.common import hidden_logprobs
from jaxllm.model import ModelConfig, Transformer
from jaxllm.tokenizer import Tokenizer

HEAD = "score_head"
LOGLIK = "loglik_weight"


def init_head(rng: jax.Array, d_model: int, std: float, loglik_weight: float = 0.0) -> dict:
  """{"w": [D], "b": []} f32: zeros (std = 0), else w ~ N(0, std^2); with loglik_weight > 0 also the trainable
  scalar `loglik_weight` (the reward then adds it times the sequence's log-likelihood, `loglik`)."""
  w = std * jax.random.normal(rng, (d_model,), jnp.float32) if std > 0 else jnp.zeros((d_model,), jnp.float32)
  head = {"w": w, "b": jnp.zeros((), jnp.float32)}
  if loglik_weight > 0:
    head[LOGLIK] = jnp.asarray(loglik_weight, jnp.float32)
  return head


def hidden_states(model: Transformer, weights: dict, lora: dict | None, tokens_BL: jax.Array,
                  positions_BL: jax.Array, segment_ids_BL: jax.Array, rng: jax.Array | None = None,
                  prefix_ids_BL: jax.Array | None = None) -> jax.Array:
  """The trunk's final hidden states [B, L, D] (what the score head reads)."""
  rngs = {"dropout": rng} if rng is not None else {}
  return model.apply({"params": weights}, tokens_BL, positions_BL, segment_ids_BL, lora=lora,
                     return_hidden=True, prefix_ids_BL=prefix_ids_BL, rngs=rngs)


def head_scores(head: dict, hidden_BLD: jax.Array) -> jax.Array:
  """f32 [B, L]: the score head on every position's hidden state (entry t scores tokens[:t + 1])."""
  return hidden_BLD.astype(jnp.float32) @ head["w"].astype(jnp.float32) + head["b"].astype(jnp.float32)


def next_token_logprobs(model: Transformer, weights: dict, hidden_BLD: jax.Array, tokens_BL: jax.Array,
                        chunk_size: int = 0, lora: dict | None = None) -> jax.Array:
  """f32 [B, L - 1]: entry t is the trunk's own LM log p(tokens[t + 1] | tokens[:t + 1]) (`lora`: for a QLoRA
  run's quantized head)."""
  logp_BL, _ = hidden_logprobs(model, weights, hidden_BLD[:, :-1], tokens_BL[:, 1:], chunk_size, lora)
  return logp_BL.astype(jnp.float32)


def loglik(next_logp_BL: jax.Array, segment_ids_BL: jax.Array) -> jax.Array:
  """f32 [B]: the log-likelihood of each row's real tokens after its first, from `next_token_logprobs`. Two
  answers to one prompt share the prompt's terms, so a pair's (or a GRPO group's) reward differences hold the
  answers' alone."""
  real_BL = (segment_ids_BL[..., 1:] != 0) & (segment_ids_BL[..., 1:] == segment_ids_BL[..., :-1])
  return jnp.where(real_BL, next_logp_BL, 0.0).sum(-1)


def read_rewards(model: Transformer, weights: dict, head: dict, hidden_BLD: jax.Array, tokens_BL: jax.Array,
                 segment_ids_BL: jax.Array, last_index_B: jax.Array, chunk_size: int = 0,
                 next_logp_BL: jax.Array | None = None, lora: dict | None = None) -> jax.Array:
  """f32 rewards [B] from the trunk's final hidden states: the score head at each row's `last_index`, plus
  head[LOGLIK] * `loglik` when the head has that weight (from `next_logp_BL` when the caller has computed
  `next_token_logprobs` already, so the LM head runs once)."""
  r_BL = head_scores(head, hidden_BLD)
  r_B = jnp.take_along_axis(r_BL, last_index_B[:, None].astype(jnp.int32), axis=1)[:, 0]
  if LOGLIK in head:
    if next_logp_BL is None:
      next_logp_BL = next_token_logprobs(model, weights, hidden_BLD, tokens_BL, chunk_size, lora)
    r_B = r_B + head[LOGLIK] * loglik(next_logp_BL, segment_ids_BL)
  return r_B


def rewards(model: Transformer, weights: dict, lora: dict | None, head: dict, tokens_BL: jax.Array,
            positions_BL: jax.Array, segment_ids_BL: jax.Array, last_index_B: jax.Array,
            rng: jax.Array | None = None) -> jax.Array:
  """f32 rewards [B] of padded rows (`read_rewards` after the trunk)."""
  hidden_BLD = hidden_states(model, weights, lora, tokens_BL, positions_BL, segment_ids_BL, rng)
  return read_rewards(model, weights, head, hidden_BLD, tokens_BL, segment_ids_BL, last_index_B, lora=lora)


def layout_from_segments(segment_ids_BL: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(positions [B, L], last_index [B]) of padded rows whose real tokens (segment != 0) are contiguous."""
  real = np.asarray(segment_ids_BL) != 0
  positions = np.where(real, np.cumsum(real, axis=1) - 1, 0).astype(np.int32)
  last = (real.shape[1] - 1 - np.argmax(real[:, ::-1], axis=1)).astype(np.int32)
  return positions, last


def model_config(run_config) -> ModelConfig:
  """The architecture of a finished run (LoRA merged, so no adapter settings); keys an older run's config.json
  lacks keep ModelConfig's defaults."""
  return ModelConfig.from_section(run_config.model)


def _bucket(n: int, cap: int) -> int:
  """Padded length: the next power of two (at least 16, at most cap), so scoring compiles a few shapes only."""
  return min(cap, max(16, 1 << (max(n, 1) - 1).bit_length()))


class RewardModel:
  """A trained reward model for scoring outside the train loop (e.g. GRPO's reward-model reward)."""

  def __init__(self, model: Transformer, weights: dict, head: dict, tokenizer: Tokenizer, batch_size: int = 16):
    self.model, self.weights, self.head, self.tokenizer = model, weights, head, tokenizer
    self.batch_size = batch_size
    self.max_len = model.cfg.max_seq_len
    self._score = jax.jit(lambda w, h, t, p, s, i: rewards(model, w, None, h, t, p, s, i))
    # Scoring runs on the device that holds the weights, under a mesh of that device alone: inside a training
    # run (GRPO's reward) the run's own mesh spans other devices, and other processes' devices.
    device = next(iter(jax.tree.leaves(weights)[0].devices()))
    self._mesh = jax.sharding.Mesh(np.asarray([device]).reshape(1, 1, 1), sharding.MESH_AXES)

  @classmethod
  def load(cls, workdir: str, batch_size: int = 16) -> "RewardModel":
    """A reward-stage workdir (or one checkpoint folder in it): trunk weights (LoRA merged), head, tokenizer."""
    pretrained = load_pretrained(workdir)
    if HEAD not in pretrained.extras:
      raise ValueError(f"{workdir!r} holds no {HEAD!r}: not a reward-model run (stage {pretrained.config.stage!r})")
    model = Transformer(model_config(pretrained.config), deterministic=True)
    tokenizer = Tokenizer.load(os.path.join(pretrained.workdir, "tokenizer"))
    return cls(model, pretrained.weights, pretrained.extras[HEAD], tokenizer, batch_size)

  def encode(self, item) -> list[int]:
    """(prompt, completion) with prompt a user text or a message list, or a conversation ending with an
    assistant turn -> prompt_ids + completion + <|im_end|>, as the reward stage renders pairs."""
    if isinstance(item, (tuple, list)) and len(item) == 2 and isinstance(item[1], str) and not isinstance(
        item[0], dict):
      prompt, completion = item
      messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
    elif isinstance(item, list) and item and isinstance(item[-1], dict) and item[-1].get("role") == "assistant":
      messages, completion = item[:-1], item[-1]["content"]
    else:
      raise ValueError(f"score: expected (prompt, completion) or a conversation ending with an assistant turn, "
                       f"got {item!r:.100}")
    return chat_template.prompt_ids(self.tokenizer, messages) + chat_template.answer_ids(self.tokenizer, completion)

  def score(self, items: Sequence) -> np.ndarray:
    return self.score_tokens([self.encode(item) for item in items])

  def score_tokens(self, sequences: Sequence[Sequence[int]]) -> np.ndarray:
    """Rewards [N] of token sequences (longer than max_seq_len: the start is cut, the end is scored)."""
    if not sequences:
      return np.zeros((0,), np.float32)
    seqs = [list(s)[-self.max_len:] for s in sequences]
    if min(len(s) for s in seqs) == 0:
      raise ValueError("score_tokens: an empty sequence has no token to read a reward at")
    length = _bucket(max(len(s) for s in seqs), self.max_len)
    tokens = np.full((len(seqs), length), self.tokenizer.pad_id, np.int32)
    segment_ids = np.zeros((len(seqs), length), np.int32)
    for i, s in enumerate(seqs):
      tokens[i, :len(s)] = s
      segment_ids[i, :len(s)] = 1
    return self.score_arrays(tokens, segment_ids)

  def score_arrays(self, tokens_BL: np.ndarray, segment_ids_BL: np.ndarray) -> np.ndarray:
    """Rewards [B] of padded rows (left or right padding; segment id 0 marks padding)."""
    tokens_BL, segment_ids_BL = np.asarray(tokens_BL, np.int32), np.asarray(segment_ids_BL, np.int32)
    positions_BL, last_B = layout_from_segments(segment_ids_BL)
    out = []
    n, bs = len(tokens_BL), self.batch_size
    with jax.set_mesh(self._mesh), nn.logical_axis_rules(sharding.LOGICAL_RULES):
      for start in range(0, n, bs):  # fixed batch shape: the last chunk is padded with copies of row 0
        rows = np.arange(start, start + bs)
        rows = np.where(rows < n, rows, 0)
        r = self._score(self.weights, self.head, tokens_BL[rows], positions_BL[rows], segment_ids_BL[rows],
                        last_B[rows])
        out.append(np.asarray(jax.device_get(r))[:min(bs, n - start)])
    return np.concatenate(out).astype(np.float32)
