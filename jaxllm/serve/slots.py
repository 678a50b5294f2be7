"""The continuous-batching engine's device side: a KV cache of B fixed slots and the two jitted programs that
advance it, `admit` (prefill one request into a free slot) and `decode` (one token for every slot, or several
in one call).

Shape legend as in model.py (B slots, S slot length = the serving context, P a prompt bucket, V vocab), plus
T = TOP_LOGPROBS alternatives reported per token.

Why this shape:
- Every slot has its own write position, so requests of any length and age share one decode step: a request
  joins by writing its prompt's keys/values into slots [0, P) of a free row (`admit`) and leaves when the host
  stops reading that row. The cache is a block cache (block_cache.py): `decode` takes the number of blocks the
  longest running row needs (a static argument: one compiled program per block count) and attends over those
  only, so a step's attention costs what the rows have written, not the whole context.
- Shapes never depend on the requests but through that block count: `decode` always runs all B rows (idle rows
  compute garbage that is never read), and `admit` runs one prompt at a bucketed length. Per-request sampling
  settings are [B] arrays in the state, not static arguments, so a new temperature or seed never recompiles.
  A row's numbers never depend on the other rows (blocks past its own add exact zeros, model.dot_attention),
  so a request's greedy output is bit-identical alone or in a full batch.
- Row r draws its token t with fold_in(key_r, t), as sampling.generate does: the sample depends only on the
  request's seed, its prompt and t, never on which slot it got or who else was running.
- A slot's segment ids are 1 over its prompt and generated tokens and 0 elsewhere, so keys left behind by the
  slot's previous request are never attended to.
"""
from __future__ import annotations

import functools

import flax.struct
import jax
import jax.numpy as jnp

from jaxllm.block_cache import block_starts, first_blocks, init_block_cache, with_first_blocks
from jaxllm.model import Transformer, init_cache

Array = jax.Array
TOP_LOGPROBS = 20  # OpenAI's maximum `top_logprobs`


@flax.struct.dataclass
class Slots:
  """Everything the decode step reads and writes; donated to each jitted call and updated in place."""
  layers: list  # per layer {"k": blocks [B, K, Dh, b], "v": blocks [B, K, b, Dh]} (block_cache.py)
  segment_ids: list  # blocks [B, b] of int32: 1 where a slot holds its current request's tokens
  last_B: Array  # int32: the token to feed next (the last one drawn)
  pos_B: Array  # int32: its position, which is also the cache slot it is written to
  t_B: Array  # int32: tokens drawn so far by the row's request (the fold_in counter)
  temperature_B: Array  # f32; 0 = greedy
  top_p_B: Array  # f32; 1 = off
  key_B: Array  # uint32 [B, 2] raw PRNG key data of each row's request
  want_top_B: Array  # bool: the request asked for top logprobs


@flax.struct.dataclass
class Drawn:
  """One token per row (host reads these after each step)."""
  token_B: Array  # int32
  logprob_B: Array  # f32 raw-model log p(token) (temperature 1, no top-p), as sampling.generate reports
  top_ids_BT: Array  # int32 the T most likely tokens (zeros unless some row asked for them)
  top_logprobs_BT: Array  # f32 their raw log-probs


def empty_slots(model: Transformer, batch: int, length: int, block: int) -> Slots:
  cache = init_block_cache(model.cfg, batch, length, block)
  zeros_B = lambda: jnp.zeros((batch,), jnp.int32)  # one buffer each: the state is donated leaf by leaf
  return Slots(layers=cache["layers"], segment_ids=cache["segment_ids"], last_B=zeros_B(), pos_B=zeros_B(),
               t_B=zeros_B(), temperature_B=jnp.zeros((batch,), jnp.float32),
               top_p_B=jnp.ones((batch,), jnp.float32), key_B=jnp.zeros((batch, 2), jnp.uint32),
               want_top_B=jnp.zeros((batch,), bool))


def _nucleus(logits_BV: Array, top_p_B: Array) -> Array:
  """Tokens outside each row's top-p set get -inf (the most likely token is always kept)."""
  sorted_BV = jnp.sort(logits_BV, axis=-1)[:, ::-1]
  probs_BV = jax.nn.softmax(sorted_BV, axis=-1)
  keep_BV = jnp.cumsum(probs_BV, axis=-1) - probs_BV < top_p_B[:, None]
  threshold_B1 = jnp.take_along_axis(sorted_BV, jnp.sum(keep_BV, axis=-1, keepdims=True) - 1, axis=-1)
  return jnp.where(logits_BV < threshold_B1, -jnp.inf, logits_BV)


def draw(logits_BV: Array, temperature_B: Array, top_p_B: Array, key_B: Array, t_B: Array, want_top_B: Array,
         vocab_limit: int) -> Drawn:
  """Each row's token under its own settings. The sort (top-p) and the top-T log-probs are computed only
  when some row needs them (lax.cond), so an all-greedy batch pays for an argmax alone."""
  if 0 < vocab_limit < logits_BV.shape[-1]:  # ids past the tokenizer's are never drawn (see SamplingParams)
    logits_BV = jnp.where(jnp.arange(logits_BV.shape[-1]) < vocab_limit, logits_BV, -jnp.inf)
  greedy_B = jnp.argmax(logits_BV, axis=-1).astype(jnp.int32)
  sampled_B = temperature_B > 0

  def sample() -> Array:
    scaled_BV = logits_BV / jnp.where(sampled_B, temperature_B, 1.0)[:, None]
    filtered_BV = jax.lax.cond(jnp.any(sampled_B & (top_p_B < 1)), _nucleus, lambda x, _: x, scaled_BV, top_p_B)
    keys_B = jax.vmap(jax.random.fold_in)(jax.random.wrap_key_data(key_B), t_B)
    return jax.vmap(jax.random.categorical)(keys_B, filtered_BV).astype(jnp.int32)

  token_B = jnp.where(sampled_B, jax.lax.cond(jnp.any(sampled_B), sample, lambda: greedy_B), greedy_B)
  logp_BV = jax.nn.log_softmax(logits_BV, axis=-1)
  logprob_B = jnp.take_along_axis(logp_BV, token_B[:, None], axis=-1)[:, 0]
  b, v = logits_BV.shape
  top = min(TOP_LOGPROBS, v)
  no_top = (jnp.zeros((b, top), jnp.float32), jnp.zeros((b, top), jnp.int32))
  top_logprobs_BT, top_ids_BT = jax.lax.cond(jnp.any(want_top_B), lambda: tuple(jax.lax.top_k(logp_BV, top)),
                                             lambda: no_top)
  return Drawn(token_B=token_B, logprob_B=logprob_B, top_ids_BT=top_ids_BT.astype(jnp.int32),
               top_logprobs_BT=top_logprobs_BT)


@functools.partial(jax.jit, static_argnames=("model", "vocab_limit"), donate_argnames=("slots",))
def admit(model: Transformer, weights, slots: Slots, slot: Array, tokens_1P: Array, length: Array,
          temperature: Array, top_p: Array, key: Array, want_top: Array, vocab_limit: int) -> tuple[Slots, Drawn]:
  """Prefill one right-padded prompt (its first `length` tokens real) into row `slot` and draw its first token
  (the Drawn has a leading axis of one step, as `decode`'s).

  The prompt runs alone at [1, P], so its numbers are the same whoever else is being served: prefilling
  several prompts in one [n, P] call was tried and dropped, as XLA:CPU's matmul rows then depend on n
  (ulp-level differences in a prompt's logits with who it was admitted with; docs/serving.md)."""
  p = tokens_1P.shape[1]
  real_1P = (jnp.arange(p) < length)[None]
  variables = {"params": weights}
  positions_1P = jnp.arange(p, dtype=jnp.int32)[None]
  hidden_1PD, cache = model.apply(variables, jnp.where(real_1P, tokens_1P, 0), positions_1P,
                                  real_1P.astype(jnp.int32), cache=init_cache(model.cfg, 1, p),
                                  return_hidden=True)
  last_11D = jax.lax.dynamic_slice_in_dim(hidden_1PD, length - 1, 1, axis=1)
  logits_1V = model.apply(variables, last_11D, method=Transformer.head)[:, 0]
  as_1 = lambda x, dtype: jnp.asarray(x, dtype)[None]
  drawn = draw(logits_1V, as_1(temperature, jnp.float32), as_1(top_p, jnp.float32), key[None],
               jnp.zeros((1,), jnp.int32), as_1(want_top, bool), vocab_limit)
  layers = [{"k": _write_prompt(old["k"], new["k"], slot, axis=3), "v": _write_prompt(old["v"], new["v"], slot, axis=2)}
            for old, new in zip(slots.layers, cache["layers"])]
  segment_ids = [jax.lax.dynamic_update_slice(block, (start + jnp.arange(block.shape[1]) < length)
                                              .astype(jnp.int32)[None], (slot, 0))
                 for block, start in zip(slots.segment_ids, block_starts(slots.segment_ids, axis=1))]
  set_row = lambda x_B, value: x_B.at[slot].set(value)
  return slots.replace(
      layers=layers, segment_ids=segment_ids,
      last_B=set_row(slots.last_B, drawn.token_B[0]), pos_B=set_row(slots.pos_B, length),
      t_B=set_row(slots.t_B, 1), temperature_B=set_row(slots.temperature_B, temperature),
      top_p_B=set_row(slots.top_p_B, top_p), key_B=slots.key_B.at[slot].set(key),
      want_top_B=set_row(slots.want_top_B, want_top)), jax.tree.map(lambda x: x[None], drawn)


def _write_prompt(blocks: list[Array], prompt: Array, slot: Array, axis: int) -> list[Array]:
  """A prompt's keys or values ([1, ..., P] along `axis`, from slot 0) written into row `slot` of the blocks
  they reach; the blocks past it are left as they are (attention masks their stale slots by segment)."""
  p = prompt.shape[axis]
  written = []
  for block, start in zip(blocks, block_starts(blocks, axis)):
    if start < p:
      part = jax.lax.slice_in_dim(prompt, start, min(p, start + block.shape[axis]), axis=axis)
      block = jax.lax.dynamic_update_slice(block, part.astype(block.dtype), (slot,) + (0,) * (block.ndim - 1))
    written.append(block)
  return written


def _step(model: Transformer, weights, vocab_limit: int, blocks: int, slots: Slots) -> tuple[Slots, Drawn]:
  """Feed every row its last token and draw the next one: one step of the whole running batch, attending over
  the first `blocks` cache blocks (the host picks enough for its longest row; writes past them are dropped)."""
  live = first_blocks(slots.layers, slots.segment_ids, blocks, slots.pos_B)
  b = slots.pos_B.shape[0]
  logits_B1V, live = model.apply({"params": weights}, slots.last_B[:, None], slots.pos_B[:, None],
                                 jnp.ones((b, 1), jnp.int32), cache=live)
  drawn = draw(logits_B1V[:, 0], slots.temperature_B, slots.top_p_B, slots.key_B, slots.t_B, slots.want_top_B,
               vocab_limit)
  layers, segment_ids = with_first_blocks(slots.layers, slots.segment_ids, live)
  # an idle row keeps stepping (fixed shapes); clamping keeps its writes inside the buffer
  last_slot = sum(block.shape[1] for block in slots.segment_ids) - 1
  return slots.replace(layers=layers, segment_ids=segment_ids, last_B=drawn.token_B,
                       pos_B=jnp.minimum(slots.pos_B + 1, last_slot), t_B=slots.t_B + 1), drawn


@functools.partial(jax.jit, static_argnames=("model", "vocab_limit", "steps", "blocks"), donate_argnames=("slots",))
def decode(model: Transformer, weights, slots: Slots, vocab_limit: int, steps: int,
           blocks: int) -> tuple[Slots, Drawn]:
  """`steps` decode steps of the whole running batch in one call (lax.scan: the cache stays in place),
  attending over the first `blocks` cache blocks; the returned Drawn's arrays gain a leading [steps] axis. A
  row's numbers are those of `steps` single steps."""
  return jax.lax.scan(lambda state, _: _step(model, weights, vocab_limit, blocks, state), slots, length=steps)


def blocks_needed(slots: Slots, last_slot: int) -> int:
  """How many cache blocks hold slots [0, last_slot]."""
  return sum(start <= last_slot for start in block_starts(slots.segment_ids, axis=1))
