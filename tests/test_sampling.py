"""Sampling engine properties: cached decode = full forward, batch invariance, determinism, filters, stops, errors."""
import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxllm import lora as lora_lib
from jaxllm import sampling
from jaxllm.model import ModelConfig, Transformer, init_cache
from jaxllm.sampling import SamplingParams, generate

# GQA (4 query heads over 2 kv heads). A large init_std makes logits peaked, so greedy choices are far from
# ties and float-rounding differences between equivalent computations cannot flip them.
CFG = ModelConfig(vocab_size=97, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=8, mlp_dim=64,
                  max_seq_len=48, init_std=0.3)
PROMPTS = [[3, 14, 15, 92, 65], [35], [89, 79, 32, 38, 46, 26, 43, 38, 32, 79, 50, 28, 84, 19, 71, 69, 39, 9]]
# Shared by several tests so they reuse compiled programs (each costs ~1 s of XLA compile on CPU).
N = 12
GREEDY = SamplingParams(max_new_tokens=N)
SAMPLED = SamplingParams(max_new_tokens=N, temperature=1.0)


@functools.lru_cache(maxsize=None)
def _model(cfg: ModelConfig = CFG, seed: int = 0):
  model = Transformer(cfg)
  weights = nn.meta.unbox(model.init(jax.random.PRNGKey(seed), jnp.zeros((1, 4), jnp.int32))["params"])
  return model, weights


@functools.lru_cache(maxsize=None)
def _full_forward(model):
  """Logits of one unpadded row, right-padded to max_seq_len (causal: the padding changes nothing before it)."""
  length = model.cfg.max_seq_len

  @jax.jit
  def forward(weights, tokens_L, lora):
    padded = jnp.zeros((1, length), jnp.int32).at[0, :tokens_L.shape[0]].set(tokens_L)
    return model.apply({"params": weights}, padded, lora=lora)[0]

  def logits(weights, tokens, lora=None):
    return np.asarray(forward(weights, jnp.zeros((length,), jnp.int32).at[:len(tokens)].set(tokens),
                              lora))[:len(tokens)]
  return logits


def _naive_greedy(model, weights, prompt, n, lora=None):
  """Greedy decoding the slow way: a full forward over the whole sequence for every new token."""
  seq, logprobs = list(prompt), []
  for _ in range(n):
    logits_V = _full_forward(model)(weights, seq, lora)[-1]
    token = int(np.argmax(logits_V))
    logprobs.append(float(jax.nn.log_softmax(logits_V)[token]))
    seq.append(token)
  return seq[len(prompt):], np.array(logprobs)


def test_prefill_then_cached_decode_equals_full_forward_at_every_position():
  model, weights = _model()
  rng = np.random.default_rng(0)
  lengths, n_decode = [6, 2, 4], 7
  p = max(lengths)
  rows = [rng.integers(0, CFG.vocab_size, size=n + n_decode) for n in lengths]
  full = [_full_forward(model)(weights, row.tolist()) for row in rows]

  # The model with a cache: left-padded prompts (padding segment 0; real tokens segment 1 at positions 0..n-1)
  tokens, segments, positions = (np.zeros((3, p), np.int32) for _ in range(3))
  for b, (row, n) in enumerate(zip(rows, lengths)):
    tokens[b, p - n:], segments[b, p - n:], positions[b, p - n:] = row[:n], 1, np.arange(n)
  apply = jax.jit(lambda t, pos, seg, cache: model.apply({"params": weights}, t, pos, seg, cache=cache))
  logits, cache = apply(tokens, positions, segments, init_cache(CFG, 3, p + n_decode))
  cached = [[np.asarray(logits[b, p - n:])] for b, n in enumerate(lengths)]
  for t in range(n_decode):
    step_tokens = np.array([[row[n + t]] for row, n in zip(rows, lengths)], np.int32)
    logits, cache = apply(step_tokens, np.array([[n + t] for n in lengths], np.int32), np.ones((3, 1), np.int32),
                          cache)
    for b in range(3):
      cached[b].append(np.asarray(logits[b]))
  for b in range(3):
    np.testing.assert_allclose(np.concatenate(cached[b]), full[b], atol=1e-5, err_msg=f"row {b}")

  # The engine's own prefill (right-padded input, left-aligned inside) and decode_step, teacher-forced
  right = np.zeros((3, p + 3), np.int32)  # extra padding columns must not matter either
  for b, (row, n) in enumerate(zip(rows, lengths)):
    right[b, :n] = row[:n]
  lens = np.array(lengths, np.int32)
  logits, cache = jax.jit(sampling.prefill, static_argnums=(0, 4))(model, weights, right, lens, p + 3 + n_decode)
  step = jax.jit(sampling.decode_step, static_argnums=0)
  for t in range(n_decode):
    for b, n in enumerate(lengths):
      np.testing.assert_allclose(logits[b], full[b][n - 1 + t], atol=1e-5, err_msg=f"row {b}, step {t}")
    logits, cache = step(model, weights, cache, np.array([row[n + t] for row, n in zip(rows, lengths)], np.int32),
                         lens + t)


def test_greedy_with_cache_equals_greedy_by_repeated_full_forward():
  model, weights = _model()
  out = generate(model, weights, PROMPTS, GREEDY, jax.random.PRNGKey(0))
  for b, prompt in enumerate(PROMPTS):
    tokens, logprobs = _naive_greedy(model, weights, prompt, N)
    np.testing.assert_array_equal(out.tokens[b], tokens, err_msg=f"prompt {b}")
    np.testing.assert_allclose(out.logprobs[b], logprobs, atol=1e-5)
  np.testing.assert_array_equal(out.lengths, [N] * 3)
  assert not out.stopped.any()
  assert out.tokens.dtype == np.int32 and out.logprobs.dtype == np.float32


def test_a_cache_grown_in_windows_decodes_the_same(monkeypatch):
  model, weights = _model()
  monkeypatch.setattr(sampling, "WINDOW", 4)  # N-1 tokens in windows of 4, 4, 3 decode steps
  windowed = generate(model, weights, PROMPTS, SamplingParams(max_new_tokens=N - 1), jax.random.PRNGKey(0))
  for b, prompt in enumerate(PROMPTS):
    tokens, logprobs = _naive_greedy(model, weights, prompt, N)
    np.testing.assert_array_equal(windowed.tokens[b], tokens[:-1], err_msg=f"prompt {b}")
    np.testing.assert_allclose(windowed.logprobs[b], logprobs[:-1], atol=1e-5)


def test_a_prompt_generates_the_same_alone_and_inside_a_batch():
  model, weights = _model()
  key = jax.random.PRNGKey(0)
  alone = generate(model, weights, [PROMPTS[0]], GREEDY, key)
  # different companions and positions: shorter, longer (a larger padding bucket), duplicated
  for batch, row in [(PROMPTS, 0), ([PROMPTS[2], PROMPTS[1], PROMPTS[0]], 2), ([PROMPTS[0]] * 3, 1)]:
    out = generate(model, weights, batch, GREEDY, key)
    np.testing.assert_array_equal(out.tokens[row], alone.tokens[0])
    np.testing.assert_allclose(out.logprobs[row], alone.logprobs[0], atol=1e-5)


def test_sampling_is_deterministic_per_rng_and_differs_across_rngs():
  model, weights = _model()
  params = SAMPLED
  a = generate(model, weights, PROMPTS, params, jax.random.PRNGKey(1))
  b = generate(model, weights, PROMPTS, params, jax.random.PRNGKey(1))
  c = generate(model, weights, PROMPTS, params, jax.random.PRNGKey(2))
  np.testing.assert_array_equal(a.tokens, b.tokens)
  np.testing.assert_array_equal(a.logprobs, b.logprobs)
  assert (a.tokens != c.tokens).any()
  greedy = generate(model, weights, PROMPTS, GREEDY, jax.random.PRNGKey(1))
  assert (a.tokens != greedy.tokens).any()
  # identical prompts in one batch get different samples (each row has its own key)
  same = generate(model, weights, [PROMPTS[0]] * 3, params, jax.random.PRNGKey(1))
  assert (same.tokens[0] != same.tokens[1]).any()


def test_per_row_keys_make_sampling_independent_of_the_batch():
  model, weights = _model()
  params = SAMPLED
  keys = jax.random.split(jax.random.PRNGKey(3), 3)
  batch = generate(model, weights, PROMPTS, params, keys)
  alone = generate(model, weights, [PROMPTS[2]], params, keys[2:])
  np.testing.assert_array_equal(batch.tokens[2], alone.tokens[0])
  with pytest.raises(ValueError, match="one key or 3 keys"):
    generate(model, weights, PROMPTS, params, keys[:2])


def test_samples_per_prompt_equals_each_prompt_repeated():
  """One prefill per prompt, its cache copied to G rows: the rows a batch of every prompt G times would get
  (same keys: row i*G + j of both), stop tokens included."""
  model, weights = _model()
  g = 3
  repeated = [p for p in PROMPTS for _ in range(g)]
  params, key = dataclasses.replace(SAMPLED, stop_ids=(5, 17)), jax.random.PRNGKey(4)  # as a rollout calls it
  shared = generate(model, weights, PROMPTS, params, key, samples_per_prompt=g)
  each = generate(model, weights, repeated, params, key)
  np.testing.assert_array_equal(shared.tokens, each.tokens)
  np.testing.assert_array_equal(shared.lengths, each.lengths)
  np.testing.assert_array_equal(shared.stopped, each.stopped)
  np.testing.assert_allclose(shared.logprobs, each.logprobs, atol=1e-5)
  assert (shared.tokens[0] != shared.tokens[1]).any()  # a prompt's rows are samples of their own
  assert 0 < shared.stopped.sum() < len(repeated)  # some rows stopped early, some ran to the end
  with pytest.raises(ValueError, match="one key or 9 keys"):
    generate(model, weights, PROMPTS, SAMPLED, jax.random.split(jax.random.PRNGKey(5), 3), samples_per_prompt=g)
  with pytest.raises(ValueError, match="samples_per_prompt must be an int >= 1"):
    generate(model, weights, PROMPTS, SAMPLED, jax.random.PRNGKey(5), samples_per_prompt=0)


def test_logprobs_are_raw_model_logprobs_of_the_sampled_tokens():
  model, weights = _model()
  params = SamplingParams(max_new_tokens=8, temperature=0.7, top_k=5)
  out = generate(model, weights, PROMPTS[:2], params, jax.random.PRNGKey(4))
  for b, prompt in enumerate(PROMPTS[:2]):
    seq = prompt + out.tokens[b].tolist()
    logits = _full_forward(model)(weights, seq)[len(prompt) - 1:-1]
    expected = np.take_along_axis(np.asarray(jax.nn.log_softmax(logits)), out.tokens[b][:, None], 1)[:, 0]
    np.testing.assert_allclose(out.logprobs[b], expected, atol=1e-5)
    ranks = (logits > np.take_along_axis(logits, out.tokens[b][:, None], 1)).sum(-1)
    assert ranks.max() < 5, "top_k=5 drew a token outside the 5 most likely"


def test_top_k_one_and_tiny_top_p_equal_greedy():
  model, weights = _model()
  key = jax.random.PRNGKey(5)
  greedy = generate(model, weights, PROMPTS, GREEDY, key)
  top_k = generate(model, weights, PROMPTS, SamplingParams(max_new_tokens=N, temperature=1.5, top_k=1), key)
  top_p = generate(model, weights, PROMPTS, SamplingParams(max_new_tokens=N, temperature=1.5, top_p=1e-6), key)
  np.testing.assert_array_equal(top_k.tokens, greedy.tokens)
  np.testing.assert_array_equal(top_p.tokens, greedy.tokens)
  np.testing.assert_allclose(top_p.logprobs, greedy.logprobs, atol=1e-6)


def test_ids_past_vocab_limit_are_never_drawn():
  """A model vocabulary padded past the tokenizer's: the padding ids must not come out, greedy or sampled."""
  model, weights = _model()
  key = jax.random.PRNGKey(2)
  for params in (GREEDY, SAMPLED):
    free = generate(model, weights, PROMPTS, params, key)
    limited = generate(model, weights, PROMPTS, dataclasses.replace(params, vocab_limit=10), key)
    assert free.tokens.max() >= 10 and limited.tokens.max() < 10  # the limit is what kept them out
  with pytest.raises(ValueError, match="vocab_limit=500 exceeds"):
    generate(model, weights, PROMPTS, dataclasses.replace(GREEDY, vocab_limit=500), key)


def test_stop_tokens_end_rows_independently_and_the_loop_exits_early():
  model, weights = _model()
  n = N
  free = generate(model, weights, PROMPTS, GREEDY, jax.random.PRNGKey(0))
  stops = (int(free.tokens[0, 2]), 96)  # row 0 stops after 3 tokens; the others when (if) they emit one
  expected = [next((i + 1 for i, t in enumerate(row) if t in stops), n) for row in free.tokens.tolist()]
  assert len(set(expected)) > 1, "pick stop ids that end the rows at different steps"
  steps = []
  out = generate(model, weights, PROMPTS, SamplingParams(max_new_tokens=n, stop_ids=stops),
                 jax.random.PRNGKey(0), pad_id=7, on_token=lambda t, tokens, active: steps.append(int(t)))
  np.testing.assert_array_equal(out.lengths, expected)
  np.testing.assert_array_equal(out.stopped, [free.tokens[b, e - 1] in stops for b, e in enumerate(expected)])
  for b, length in enumerate(expected):
    np.testing.assert_array_equal(out.tokens[b, :length], free.tokens[b, :length])
    assert (out.tokens[b, length:] == 7).all() and (out.logprobs[b, length:] == 0).all()
  assert steps == list(range(max(expected)))

  # every row stops at once: a single step runs
  first = sorted(set(free.tokens[:, 0].tolist()))
  steps.clear()
  out = generate(model, weights, PROMPTS, SamplingParams(max_new_tokens=n, stop_ids=tuple(first)),
                 jax.random.PRNGKey(0), on_token=lambda t, tokens, active: steps.append(int(t)))
  assert steps == [0] and out.stopped.all() and (out.lengths == 1).all()


def test_lora_adapters_generate_like_merged_weights():
  model, weights = _model()
  adapters = lora_lib.init_lora(weights, ("q", "v", "down"), 2, jax.random.PRNGKey(6))
  adapters = jax.tree.map(lambda x: x + 0.3 * jax.random.normal(jax.random.PRNGKey(7), x.shape), adapters)
  params = GREEDY
  with_lora = generate(model, weights, PROMPTS, params, jax.random.PRNGKey(0), lora=adapters)
  merged = generate(model, lora_lib.merge(weights, adapters, CFG.lora_scale), PROMPTS, params,
                    jax.random.PRNGKey(0))
  plain = generate(model, weights, PROMPTS, params, jax.random.PRNGKey(0))
  np.testing.assert_array_equal(with_lora.tokens, merged.tokens)
  assert (with_lora.tokens != plain.tokens).any()


def test_generate_arrays_runs_inside_a_callers_jit():
  model, weights = _model()
  params = SAMPLED
  key = jax.random.PRNGKey(8)
  tokens = np.zeros((3, 20), np.int32)
  for row, prompt in zip(tokens, PROMPTS):
    row[:len(prompt)] = prompt
  lengths = np.array([len(p) for p in PROMPTS], np.int32)
  rollout = jax.jit(lambda w, t, n, k: sampling.generate_arrays(model, w, t, n, params, k))
  got = rollout(weights, tokens, lengths, key)
  want = generate(model, weights, PROMPTS, params, key)
  np.testing.assert_array_equal(got[0], want.tokens)  # the padded width does not matter either
  np.testing.assert_array_equal(got[2], want.lengths)


def test_prompt_lengths_in_one_bucket_share_one_compiled_program():
  model, weights = _model()
  params = SamplingParams(max_new_tokens=5, temperature=0.5, top_k=7)  # used by no other test
  before = sampling.compiled_count()
  generate(model, weights, [[1, 2, 3]], params, jax.random.PRNGKey(0))
  generate(model, weights, [[1, 2, 3, 4, 5, 6, 7, 8, 9]], params, jax.random.PRNGKey(1))
  assert sampling.compiled_count() == before + 1
  assert [sampling.bucket_length(n) for n in (1, 16, 17, 64, 65, 200)] == [16, 16, 32, 64, 128, 256]


def test_clear_errors():
  model, weights = _model()
  key = jax.random.PRNGKey(0)
  ok = SamplingParams(max_new_tokens=4)
  with pytest.raises(ValueError, match="prompt 1 is empty"):
    generate(model, weights, [[1, 2], []], ok, key)
  with pytest.raises(ValueError, match=r"prompt 0: 45 prompt tokens \+ max_new_tokens=4 = 49 exceeds .*max_seq_len=48"):
    generate(model, weights, [[1] * 45], ok, key)
  with pytest.raises(ValueError, match="stop id 97 is outside the vocabulary"):
    generate(model, weights, [[1]], dataclasses.replace(ok, stop_ids=(3, 97)), key)
  with pytest.raises(ValueError, match="token id 200 is outside"):
    generate(model, weights, [[1, 200]], ok, key)
  with pytest.raises(ValueError, match="no prompts"):
    generate(model, weights, [], ok, key)
  for bad in (dict(max_new_tokens=0), dict(max_new_tokens=4, temperature=-1.0), dict(max_new_tokens=4, top_k=-2),
              dict(max_new_tokens=4, top_p=0.0), dict(max_new_tokens=4, top_p=1.5),
              dict(max_new_tokens=4, vocab_limit=-1)):
    with pytest.raises(ValueError):
      SamplingParams(**bad)
  assert SamplingParams(max_new_tokens=4, stop_ids=[5, 6]).stop_ids == (5, 6)  # hashable
