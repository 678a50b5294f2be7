"""Greedy decoding that checks several drafted tokens per model call (n-gram speculation): the same tokens as
one-token-a-step greedy decoding, in fewer, wider steps.

  out = sampling.generate(model, weights, prompts, SamplingParams(max_new_tokens=256, lookahead=4), key)

Each step drafts `lookahead` = k tokens per row from the row's own history (prompt + output so far) and feeds
[last token, draft_0 .. draft_{k-1}] through the model at once. Row b keeps the greedy token after each input
until the first place where the draft disagrees with it: a_b >= 0 drafts accepted means a_b + 1 tokens emitted
(the accepted drafts, then the model's own token where it disagreed), all of them what one-token steps would
have produced, since each is the argmax given the accepted tokens before it. (Up to float rounding: XLA:CPU's
matmul rows can differ in the last bit with the row count, so only a near-exact tie could break differently;
tests/test_speculative.py and benchmarks/decode.py check the tokens are identical.)

Drafts (`ngram_draft`): the last g tokens of the history (g = 3, else 2, else 1) are looked up at their latest
earlier occurrence, and the tokens that followed it are proposed, extended periodically when the history ends
first (a loop "a b c a b c" drafts "a b c ..."). Lookup is how prompt-lookup decoding drafts, without a draft
model; it pays where outputs repeat or copy their input (extraction, code edits, quoting, small models' loops)
and costs a wider step where they do not (see docs/performance.md for both).

Why the cache needs a write slot per row: rows accept different numbers of drafts, so after a step they stand at
different slots. Row b writes its 1 + k inputs at slots [P + t_b - 1, P + t_b + k), where t_b counts its
emitted tokens; the slots past its accepted inputs hold rejected drafts, and its next step overwrites them
before any query can see them (attention is causal by slot). model.write_slots turns the per-row writes into a
scatter. A finished row keeps writing at its last slot (fixed shapes) and its output is never read again.
"""
from __future__ import annotations

from typing import Any, Callable

import flax.struct
import jax
import jax.numpy as jnp

Array = jax.Array
MAX_NGRAM = 3  # the longest history suffix looked up; shorter ones are tried when it has no earlier occurrence


def ngram_draft(hist_BH: Array, end_B: Array, k: int) -> Array:
  """[B, k] drafts: for each row, the tokens that followed the latest earlier occurrence of the last g tokens of
  hist_BH[b, :end_B[b]] (g = MAX_NGRAM down to 1), repeated with that period where the history runs out.
  Entries < 0 in hist_BH are padding and never match. A row with no occurrence drafts its last token k times."""
  b, h = hist_BH.shape
  rows_B = jnp.arange(b)
  at = lambda i_B: hist_BH[rows_B, jnp.clip(i_B, 0, h - 1)]
  padded_BH = jnp.pad(hist_BH, [(0, 0), (0, MAX_NGRAM)], constant_values=-2)
  starts_H = jnp.arange(h)
  period_B = jnp.zeros((b,), jnp.int32)
  for g in range(MAX_NGRAM, 0, -1):
    tail_Bg = jnp.stack([at(end_B - g + i) for i in range(g)], axis=1)
    same_BH = (starts_H[None] + g < end_B[:, None]) & jnp.all(tail_Bg >= 0, axis=1, keepdims=True)
    for i in range(g):
      same_BH &= padded_BH[:, i:i + h] == tail_Bg[:, i:i + 1]
    start_B = jnp.max(jnp.where(same_BH, starts_H[None], -1), axis=1)
    found_period_B = jnp.where(start_B >= 0, end_B - g - start_B, 0)
    period_B = jnp.where(period_B > 0, period_B, found_period_B)  # the longest n-gram with a match wins
  period_B = jnp.maximum(period_B, 1)  # no match: repeat the last token
  offsets_Bk = jnp.arange(k)[None] % period_B[:, None]
  return jnp.stack([at(end_B - period_B + offsets_Bk[:, i]) for i in range(k)], axis=1).astype(jnp.int32)


def accepted(greedy_BL: Array, draft_Bk: Array) -> Array:
  """[B] how many leading drafts equal the greedy token chosen after the input before them."""
  agree_Bk = greedy_BL[:, :-1] == draft_Bk
  return jnp.sum(jnp.cumprod(agree_Bk.astype(jnp.int32), axis=1), axis=1)


@flax.struct.dataclass
class _Speculate:
  t_B: Array  # tokens emitted so far per row (row b's next input goes to cache slot P + t_b - 1)
  last_B: Array  # the last emitted token: the next step's first input
  done_B: Array  # stopped or out of budget
  stopped_B: Array
  cache: dict
  tokens_BN: Array
  logprobs_BN: Array


def decode(model: Any, weights: Any, cache: dict, first_logits_BV: Array, prompt_hist_BP: Array,
           lengths_B: Array, n: int, k: int, stop_ids: tuple[int, ...], pad_id: int,
           pick: Callable[[Array], Array], window_ends: list[int], grow: Callable[[dict, int], dict],
           lora: Any = None, on_token: Callable | None = None) -> tuple[Array, Array, Array, Array]:
  """The greedy decode loop after prefill: (tokens [B, N], logprobs [B, N], lengths [B], stopped [B]).

  `cache` holds the prompts in slots [0, P) (prompt_hist_BP: the same left-aligned tokens, -1 on padding) and
  has window_ends[0] slots; `grow(cache, s)` pads it to s slots before each later window end (the last one
  must be >= P + n + k). `pick` is the greedy draw on [rows, V] logits. `on_token(t_B, tokens_B, active_B)` is
  called on the host for each emitted column, as sampling.generate's is, but with t per row ([B])."""
  p = prompt_hist_BP.shape[1]
  b = lengths_B.shape[0]
  rows_B = jnp.arange(b)
  stops = jnp.asarray(stop_ids, jnp.int32)
  logp = lambda logits, token: jnp.take_along_axis(jax.nn.log_softmax(logits, axis=-1), token[..., None],
                                                   axis=-1)[..., 0]

  first_B = pick(first_logits_BV)
  first_stop_B = jnp.isin(first_B, stops)
  state = _Speculate(
      t_B=jnp.ones((b,), jnp.int32), last_B=first_B, done_B=first_stop_B | (n <= 1), stopped_B=first_stop_B,
      cache=cache, tokens_BN=jnp.full((b, n), pad_id, jnp.int32).at[:, 0].set(first_B),
      logprobs_BN=jnp.zeros((b, n), jnp.float32).at[:, 0].set(logp(first_logits_BV, first_B)))
  if on_token is not None:
    jax.debug.callback(on_token, jnp.zeros((b,), jnp.int32), first_B, jnp.ones((b,), bool), ordered=True)

  def step(s: _Speculate) -> _Speculate:
    hist_BH = jnp.concatenate([prompt_hist_BP, jnp.where(jnp.arange(n)[None] < s.t_B[:, None], s.tokens_BN, -1)],
                              axis=1)
    draft_Bk = ngram_draft(hist_BH, p + s.t_B, k)
    inputs_BL = jnp.concatenate([s.last_B[:, None], draft_Bk], axis=1)
    positions_BL = (lengths_B + s.t_B - 1)[:, None] + jnp.arange(k + 1, dtype=jnp.int32)
    cache = {**s.cache, "index": p + s.t_B - 1}
    logits_BLV, cache = model.apply({"params": weights}, inputs_BL, positions_BL, jnp.ones_like(inputs_BL),
                                    cache=cache, lora=lora)
    greedy_BL = pick(logits_BLV.reshape(b * (k + 1), -1)).reshape(b, k + 1)
    logprobs_BL = logp(logits_BLV, greedy_BL)
    # emitted: the accepted drafts and the token after them, cut after a stop token and at the budget
    stop_BL = jnp.isin(greedy_BL, stops)
    first_stop_B = jnp.argmax(stop_BL, axis=1) + jnp.where(jnp.any(stop_BL, axis=1), 1, k + 2)
    count_B = jnp.minimum(jnp.minimum(accepted(greedy_BL, draft_Bk) + 1, first_stop_B), n - s.t_B)
    count_B = jnp.where(s.done_B, 0, count_B)
    tokens_BN, logprobs_BN = s.tokens_BN, s.logprobs_BN
    for i in range(k + 1):
      col_B = jnp.where(i < count_B, s.t_B + i, n)  # column n is out of range: dropped
      tokens_BN = tokens_BN.at[rows_B, col_B].set(greedy_BL[:, i], mode="drop")
      logprobs_BN = logprobs_BN.at[rows_B, col_B].set(logprobs_BL[:, i], mode="drop")
    if on_token is not None:
      for i in range(k + 1):
        jax.debug.callback(on_token, s.t_B + i, greedy_BL[:, i], i < count_B, ordered=True)
    t_B = s.t_B + count_B
    stopped_B = s.stopped_B | (count_B > 0) & (count_B == first_stop_B)
    last_B = jnp.where(count_B > 0, greedy_BL[rows_B, jnp.maximum(count_B - 1, 0)], s.last_B)
    return s.replace(t_B=t_B, last_B=last_B, done_B=stopped_B | (t_B >= n), stopped_B=stopped_B,
                     cache={**cache, "index": s.cache["index"]}, tokens_BN=tokens_BN, logprobs_BN=logprobs_BN)

  for i, end in enumerate(window_ends):
    if i:
      state = state.replace(cache=grow(state.cache, end))
    # a step writes slots up to P + t_b + k - 1 for every row, finished ones included
    fits = lambda s, end=end: jnp.max(p + s.t_B + k) <= end
    state = jax.lax.while_loop(lambda s, fits=fits: ~jnp.all(s.done_B) & fits(s), step, state)
  return state.tokens_BN, state.logprobs_BN, state.t_B, state.stopped_B
