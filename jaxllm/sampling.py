"""The sampling engine: a whole batched generation (prefill + KV-cached decode loop) as one jitted call.

  out = generate(model, weights, [[1, 5, 9], [1, 7]], SamplingParams(max_new_tokens=64, stop_ids=(eot,)), key)
  out.tokens[b, :out.lengths[b]]   # row b's completion, its stop token included when out.stopped[b]

How it works (shape legend in model.py; P padded prompt length, N max_new_tokens):
- Prompts are left-aligned so every row's last prompt token sits in column P-1: padding is segment 0 (never
  attended to by real tokens), real tokens are segment 1 at their own RoPE positions 0..len-1. All rows then
  write the cache at the same slot each step, and a row's numbers do not depend on how much padding it got,
  so a prompt's output does not depend on the other prompts in the batch.
- The cache (per layer keys [B, K, Dh, S] and values [B, K, S, Dh], only kv heads; model.dot_attention says
  why keys are transposed) is allocated inside the compiled call (so there is no buffer to donate) and updated
  in place by `lax.while_loop`; the loop stops as soon as every row has emitted a stop token. It grows in
  windows of WINDOW decode steps (S = P+64, P+128, ..., P+N; one loop each, the cache padded once in between) so a step attends over the slots written so far rather than the whole
  future buffer: ~25% less attention work at P=128, N=256.
- The loop state is an immutable pytree (`_Decode`) like gemma's / tunix's samplers: sample from the last
  logits, record, feed the sampled token back. Sampling options are a frozen dataclass, static under jit.
- Randomness: row b uses key_b = split(rng, B)[b] (or the caller's own per-row keys) and draws step t with
  fold_in(key_b, t), so a row's sample depends only on its key, its prompt and t.
- Greedy decoding with `lookahead` = k > 0 runs speculative.py's loop instead (k drafted tokens checked per
  step, a cache write slot per row, the same tokens).
- Log-probs are log softmax of the *raw* model logits (temperature 1, no top-k/top-p) at the sampled token:
  the quantity importance ratios and KL terms in RL need, whatever distribution the token was drawn from.

`generate` takes Python lists, validates them, pads to a bucketed length (so similar prompt lengths share one
compiled program) and returns numpy arrays. `generate_arrays` is the traceable core for callers that already
hold padded arrays, e.g. rollouts inside their own jit.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from jaxllm import speculative
from jaxllm.model import Transformer, init_cache

Array = jax.Array
# on_token(t, tokens_B, active_B): called on the host after token t of every row is drawn (streaming only);
# with lookahead, once per column a step emits, t then per row ([B]: rows stand at different tokens).
TokenCallback = Callable[[np.ndarray, np.ndarray, np.ndarray], None]
WINDOW = 64  # decode steps per cache window (see generate_arrays)


@dataclasses.dataclass(frozen=True)
class SamplingParams:
  """How to pick tokens. Hashable: a static argument of the compiled generation."""
  max_new_tokens: int
  temperature: float = 0.0  # 0 = greedy (argmax); top_k / top_p then do nothing
  top_k: int = 0  # keep the k most likely tokens; 0 = off
  top_p: float = 1.0  # keep the smallest set of tokens whose probability reaches top_p; 1 = off
  stop_ids: tuple[int, ...] = ()  # a row ends after emitting any of these (the stop token is returned)
  # ids >= vocab_limit are never drawn: a model's vocabulary padded past its tokenizer's (the padding ids'
  # logits are trained down, not to -inf, so sampling at temperature 1 can reach them); 0 = no limit
  vocab_limit: int = 0
  # greedy only: drafted tokens checked per model call (speculative.py); 0 = one token a call. The same tokens
  # either way; pays where outputs repeat or copy their prompt, costs a wider step where they do not.
  lookahead: int = 0

  def __post_init__(self):
    object.__setattr__(self, "stop_ids", tuple(int(i) for i in self.stop_ids))  # lists -> hashable
    if int(self.max_new_tokens) != self.max_new_tokens or self.max_new_tokens < 1:
      raise ValueError(f"max_new_tokens must be an int >= 1, got {self.max_new_tokens!r}")
    if not self.temperature >= 0:
      raise ValueError(f"temperature must be >= 0, got {self.temperature!r}")
    if int(self.top_k) != self.top_k or self.top_k < 0:
      raise ValueError(f"top_k must be an int >= 0, got {self.top_k!r}")
    if not 0 < self.top_p <= 1:
      raise ValueError(f"top_p must be in (0, 1], got {self.top_p!r}")
    if int(self.vocab_limit) != self.vocab_limit or self.vocab_limit < 0:
      raise ValueError(f"vocab_limit must be an int >= 0, got {self.vocab_limit!r}")
    if int(self.lookahead) != self.lookahead or self.lookahead < 0:
      raise ValueError(f"lookahead must be an int >= 0, got {self.lookahead!r}")
    if self.lookahead and self.temperature != 0:
      raise ValueError(f"lookahead={self.lookahead} speeds up greedy decoding only (temperature 0), got "
                       f"temperature={self.temperature}")


def params_from(section, stop_ids: tuple[int, ...] = (), vocab_limit: int = 0, **changes) -> SamplingParams:
  """SamplingParams from a config's `sampling` section (its `system` is the caller's), with `changes` on top."""
  fields = {k: section[k] for k in ("max_new_tokens", "temperature", "top_k", "top_p", "lookahead")}
  return SamplingParams(**{**fields, **changes}, stop_ids=stop_ids, vocab_limit=vocab_limit)


@dataclasses.dataclass
class Generation:
  """One batch of completions as host numpy arrays; N = max_new_tokens."""
  tokens: np.ndarray  # [B, N] int32; columns at and after lengths[b] hold pad_id
  logprobs: np.ndarray  # [B, N] f32 raw-model log p(token) (temperature 1, no top-k/p); 0 where padded
  lengths: np.ndarray  # [B] int32 generated tokens, the stop token included
  stopped: np.ndarray  # [B] bool: a stop token ended the row (False: cut at max_new_tokens)


@flax.struct.dataclass
class _Decode:
  """The decode loop's state; every field has a fixed shape."""
  t: Array  # tokens emitted so far (by every row still running)
  last_B: Array  # the token drawn at step t-1 (raw, also for finished rows): the next model input
  logits_BV: Array  # f32 logits for drawing token t
  cache: dict
  tokens_BN: Array
  logprobs_BN: Array
  lengths_B: Array
  stopped_B: Array


def bucket_length(n: int) -> int:
  """Prompt lengths are padded up to a multiple of 16 (short) or 64 (long) so jit sees few shapes."""
  step = 16 if n <= 64 else 64
  return -(-n // step) * step


def _grow(cache: dict, length: int) -> dict:
  """The cache with empty slots (segment 0: never attended to) appended up to `length`."""
  extra = length - cache["segment_ids"].shape[1]
  pad_slots = lambda x, axis: jnp.pad(x, [(0, extra if i == axis else 0) for i in range(x.ndim)])
  return {"layers": [{"k": pad_slots(layer["k"], 3), "v": pad_slots(layer["v"], 2)}  # [B, K, Dh, S], [B, K, S, Dh]
                     for layer in cache["layers"]],
          "segment_ids": jnp.pad(cache["segment_ids"], [(0, 0), (0, extra)]), "index": cache["index"]}


def _row_keys(rng: Array, b: int) -> Array:
  """One typed key per row from a single key (split) or from the caller's [B] keys (used as they are)."""
  if not jnp.issubdtype(rng.dtype, jax.dtypes.prng_key):
    rng = jax.random.wrap_key_data(rng)
  if rng.ndim == 0:
    return jax.random.split(rng, b)
  if rng.shape != (b,):
    raise ValueError(f"rng: expected one key or {b} keys (one per prompt), got key shape {rng.shape}")
  return rng


def _filter_logits(logits_BV: Array, params: SamplingParams) -> Array:
  """Temperature, then top-k, then top-p: tokens outside the kept set get -inf."""
  logits_BV = logits_BV / params.temperature
  if params.top_k and params.top_k < logits_BV.shape[-1]:
    kth_B1 = jax.lax.top_k(logits_BV, params.top_k)[0][:, -1:]
    logits_BV = jnp.where(logits_BV < kth_B1, -jnp.inf, logits_BV)
  if params.top_p < 1.0:
    sorted_BV = jnp.sort(logits_BV, axis=-1)[:, ::-1]
    probs_BV = jax.nn.softmax(sorted_BV, axis=-1)
    # keep a token if the mass strictly before it is below top_p (so the most likely token is always kept)
    keep_BV = jnp.cumsum(probs_BV, axis=-1) - probs_BV < params.top_p
    last_B1 = jnp.sum(keep_BV, axis=-1, keepdims=True) - 1
    threshold_B1 = jnp.take_along_axis(sorted_BV, last_B1, axis=-1)
    logits_BV = jnp.where(logits_BV < threshold_B1, -jnp.inf, logits_BV)
  return logits_BV


def _draw(logits_BV: Array, keys_B: Array, t: Array, params: SamplingParams) -> Array:
  if 0 < params.vocab_limit < logits_BV.shape[-1]:
    logits_BV = jnp.where(jnp.arange(logits_BV.shape[-1]) < params.vocab_limit, logits_BV, -jnp.inf)
  if params.temperature == 0:
    return jnp.argmax(logits_BV, axis=-1).astype(jnp.int32)
  filtered_BV = _filter_logits(logits_BV, params)
  step_keys_B = jax.vmap(jax.random.fold_in, in_axes=(0, None))(keys_B, t)
  return jax.vmap(jax.random.categorical)(step_keys_B, filtered_BV).astype(jnp.int32)


def _left_align(tokens_BP: Array, lengths_B: Array) -> tuple[Array, Array, Array]:
  """Right-padded prompts -> (tokens, positions, segment ids), each [B, P], with prompts ending at column P-1."""
  p = tokens_BP.shape[1]
  src_BP = jnp.arange(p, dtype=jnp.int32)[None, :] - (p - lengths_B)[:, None]  # prompt index per column
  real_BP = src_BP >= 0
  gathered_BP = jnp.take_along_axis(tokens_BP, jnp.clip(src_BP, 0, p - 1), axis=1)
  # padding holds token 0 (a valid id, so no NaN can enter the masked-out keys and values)
  return jnp.where(real_BP, gathered_BP, 0), jnp.maximum(src_BP, 0), real_BP.astype(jnp.int32)


def prefill(model: Transformer, weights: Any, prompt_tokens_BP: Array, prompt_lengths_B: Array, cache_len: int,
            lora: Any = None) -> tuple[Array, dict]:
  """One forward pass over right-padded prompts into a fresh cache of `cache_len` slots (prompts left-aligned
  in slots [0, P)); returns the f32 logits [B, V] for each row's first new token, and the cache."""
  tokens_BP, positions_BP, segments_BP = _left_align(prompt_tokens_BP.astype(jnp.int32),
                                                     prompt_lengths_B.astype(jnp.int32))
  variables = {"params": weights}
  cache = init_cache(model.cfg, prompt_tokens_BP.shape[0], cache_len)
  hidden_BPD, cache = model.apply(variables, tokens_BP, positions_BP, segments_BP, cache=cache, lora=lora,
                                  return_hidden=True)
  # Only the last column's logits are needed: skip the [B, P, V] head matmul of a full prefill.
  return model.apply(variables, hidden_BPD[:, -1:], lora, method=Transformer.head)[:, 0], cache


def decode_step(model: Transformer, weights: Any, cache: dict, tokens_B: Array, positions_B: Array,
                lora: Any = None) -> tuple[Array, dict]:
  """Feed one token per row at cache['index'] (and RoPE position positions_B): (f32 logits [B, V], cache)."""
  b = tokens_B.shape[0]
  logits_B1V, cache = model.apply({"params": weights}, tokens_B[:, None], positions_B[:, None],
                                  jnp.ones((b, 1), jnp.int32), cache=cache, lora=lora)
  return logits_B1V[:, 0], cache


def generate_arrays(model: Transformer, weights: Any, prompt_tokens_BP: Array, prompt_lengths_B: Array,
                    params: SamplingParams, rng: Array, lora: Any = None, pad_id: int = 0,
                    on_token: TokenCallback | None = None,
                    samples_per_prompt: int = 1) -> tuple[Array, Array, Array, Array]:
  """The traceable core: (tokens [B, N], logprobs [B, N], lengths [B], stopped [B]) as device arrays.

  prompt_tokens_BP is right-padded: row b's prompt is prompt_tokens_BP[b, :prompt_lengths_B[b]], every length
  >= 1 and length + N <= model.cfg.max_seq_len (not checked here: call `generate` for validated input, or jit
  this with `model`, `params`, `pad_id`, `on_token`, `samples_per_prompt` static). `rng` is one key or one key
  per output row. With samples_per_prompt = G > 1 the output has B * G rows, prompt-major (rows [i*G, (i+1)*G)
  complete prompt i): the same as passing each prompt G times, but each prompt is prefilled once and its cache
  copied to its G rows (in a GRPO rollout the prefill of every copy was about half the sampling time).
  """
  p = prompt_tokens_BP.shape[1]
  n = params.max_new_tokens
  stop_ids = jnp.asarray(params.stop_ids, jnp.int32)
  # The cache grows in windows of WINDOW slots (one while_loop each, stopped early once every row is done):
  # a decode step attends over the current window only, not the whole future buffer.
  ends = list(range(WINDOW, n, WINDOW)) + [n]
  k = params.lookahead  # a speculative step writes k slots past the one-token loop's last
  logits_BV, cache = prefill(model, weights, prompt_tokens_BP, prompt_lengths_B, p + ends[0] + k, lora)
  lengths_B = prompt_lengths_B.astype(jnp.int32)
  copies = lambda x: jnp.repeat(x, samples_per_prompt, axis=0) if samples_per_prompt > 1 else x
  logits_BV, lengths_B = copies(logits_BV), copies(lengths_B)
  cache = {**cache, "layers": jax.tree.map(copies, cache["layers"]), "segment_ids": copies(cache["segment_ids"])}
  b = lengths_B.shape[0]
  keys_B = _row_keys(rng, b)
  if k:
    tokens_BP, _, segments_BP = _left_align(prompt_tokens_BP.astype(jnp.int32), prompt_lengths_B.astype(jnp.int32))
    return speculative.decode(
        model, weights, cache, logits_BV, copies(jnp.where(segments_BP > 0, tokens_BP, -1)), lengths_B, n, k,
        params.stop_ids, pad_id, lambda logits: _draw(logits, keys_B, 0, params), [p + end + k for end in ends],
        _grow, lora, on_token)

  def emit(s: _Decode) -> _Decode:
    """Draw token t of every row from s.logits_BV and record it for the rows still running."""
    token_B = _draw(s.logits_BV, keys_B, s.t, params)
    logprob_B = jnp.take_along_axis(jax.nn.log_softmax(s.logits_BV, axis=-1), token_B[:, None], axis=-1)[:, 0]
    active_B = ~s.stopped_B
    if on_token is not None:
      jax.debug.callback(on_token, s.t, token_B, active_B, ordered=True)
    return s.replace(
        t=s.t + 1, last_B=token_B,
        tokens_BN=s.tokens_BN.at[:, s.t].set(jnp.where(active_B, token_B, pad_id)),
        logprobs_BN=s.logprobs_BN.at[:, s.t].set(jnp.where(active_B, logprob_B, 0.0)),
        lengths_B=s.lengths_B + active_B.astype(jnp.int32),
        stopped_B=s.stopped_B | (active_B & jnp.isin(token_B, stop_ids)))

  def running_until(end: int) -> Callable[[_Decode], Array]:
    # token t is drawn after feeding token t-1 into slot p+t-1, so a window of p+end slots serves t <= end
    return lambda s: (s.t < min(end + 1, n)) & ~jnp.all(s.stopped_B)

  def step(s: _Decode) -> _Decode:
    """Feed token t-1 (at position prompt_len + t-1, cache slot P + t-1), then draw token t."""
    logits_BV, cache = decode_step(model, weights, s.cache, s.last_B, lengths_B + s.t - 1, lora)
    return emit(s.replace(logits_BV=logits_BV, cache=cache))

  state = _Decode(t=jnp.zeros((), jnp.int32), last_B=jnp.zeros((b,), jnp.int32), logits_BV=logits_BV,
                  cache=cache, tokens_BN=jnp.full((b, n), pad_id, jnp.int32),
                  logprobs_BN=jnp.zeros((b, n), jnp.float32), lengths_B=jnp.zeros((b,), jnp.int32),
                  stopped_B=jnp.zeros((b,), bool))
  state = emit(state)
  for i, end in enumerate(ends):
    if i:
      state = state.replace(cache=_grow(state.cache, p + end))
    state = jax.lax.while_loop(running_until(end), step, state)
  return state.tokens_BN, state.logprobs_BN, state.lengths_B, state.stopped_B


# jax.jit keys its compile cache on the static args (model, hence its config; params; pad_id; on_token;
# samples_per_prompt) and on the argument shapes, so each (model, sampling params, batch, prompt bucket) compiles
# once.
_generate_jit = jax.jit(generate_arrays, static_argnames=("model", "params", "pad_id", "on_token",
                                                         "samples_per_prompt"))


def _validate(prompts: list[list[int]], params: SamplingParams, vocab_size: int, max_seq_len: int) -> None:
  if not prompts:
    raise ValueError("generate: no prompts given")
  for i, prompt in enumerate(prompts):
    if len(prompt) == 0:
      raise ValueError(f"prompt {i} is empty: a prompt needs at least one token (e.g. a BOS / <|endoftext|>)")
    if len(prompt) + params.max_new_tokens > max_seq_len:
      raise ValueError(f"prompt {i}: {len(prompt)} prompt tokens + max_new_tokens={params.max_new_tokens} = "
                       f"{len(prompt) + params.max_new_tokens} exceeds the model's max_seq_len={max_seq_len}")
    lo, hi = min(prompt), max(prompt)
    if lo < 0 or hi >= vocab_size:
      raise ValueError(f"prompt {i}: token id {lo if lo < 0 else hi} is outside the vocabulary [0, {vocab_size})")
  for stop in params.stop_ids:
    if not 0 <= stop < vocab_size:
      raise ValueError(f"stop id {stop} is outside the vocabulary [0, {vocab_size})")
  if params.vocab_limit > vocab_size:
    raise ValueError(f"vocab_limit={params.vocab_limit} exceeds the model's vocabulary of {vocab_size}: the "
                     f"tokenizer does not match the model")


def generate(model: Transformer, weights: Any, prompts: list[list[int]], params: SamplingParams, rng: Array,
             lora: Any = None, pad_id: int = 0, on_token: TokenCallback | None = None,
             samples_per_prompt: int = 1) -> Generation:
  """Complete each prompt (a list of token ids) `samples_per_prompt` times (rows prompt-major); one compiled
  call for the whole batch.

  Deterministic for a given rng. Greedy output of a prompt is the same alone or in any batch. `on_token`
  (optional, for streaming) is called on the host as each step's tokens are drawn; without it nothing
  happens on the host until the whole batch is done.
  """
  if int(samples_per_prompt) != samples_per_prompt or samples_per_prompt < 1:
    raise ValueError(f"samples_per_prompt must be an int >= 1, got {samples_per_prompt!r}")
  cfg = model.cfg
  _validate(prompts, params, cfg.vocab_size, cfg.max_seq_len)
  lengths = np.array([len(p) for p in prompts], np.int32)
  tokens = np.zeros((len(prompts), bucket_length(int(lengths.max()))), np.int32)
  for row, prompt in zip(tokens, prompts):
    row[:len(prompt)] = prompt
  out = _generate_jit(model, weights, tokens, lengths, params, rng, lora, pad_id, on_token, int(samples_per_prompt))
  return Generation(*jax.device_get(out))


def compiled_count() -> int:
  """How many programs the engine has compiled so far (a test asserts bucketing avoids retraces)."""
  return _generate_jit._cache_size()


__all__ = ["SamplingParams", "Generation", "generate", "generate_arrays", "prefill", "decode_step", "bucket_length",
           "compiled_count"]
