"""n-gram speculation (jaxllm/speculative.py): its drafts, and greedy output identical to one-token steps."""
import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxllm import speculative
from jaxllm.model import ModelConfig, Transformer
from jaxllm.sampling import SamplingParams, generate

# A small init keeps logits flat, so greedy output falls into loops and drafts get accepted (and rejected where
# a loop changes); max_seq_len leaves room to cross sampling.WINDOW.
CFG = ModelConfig(vocab_size=61, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=8, mlp_dim=64,
                  max_seq_len=128, init_std=0.05)
PROMPTS = [[3, 14, 15, 42, 9], [35], [9, 19, 32, 38, 46, 26, 43, 38, 32, 19, 50, 28, 4, 19, 1, 6, 39, 9]]


@functools.lru_cache(maxsize=None)
def _model(cfg: ModelConfig = CFG):
  model = Transformer(cfg)
  return model, nn.meta.unbox(model.init(jax.random.PRNGKey(0), jnp.zeros((1, 4), jnp.int32))["params"])


def test_drafts_continue_the_latest_earlier_occurrence_periodically():
  hist = jnp.array([
      [7, 1, 2, 3, 4, 1, 2, 3, 0, 0],  # "1 2 3" seen before, followed by 4 -> 4 1 2 3 4
      [5, 6, 5, 6, 5, 6, 0, 0, 0, 0],  # the latest "5 6" is 2 back: period 2 -> 5 6 5 6 5
      [-1, -1, 9, 8, 7, 6, 0, 0, 0, 0],  # nothing repeats: the last token again; padding (-1) never matches
      [2, 2, 2, 2, 0, 0, 0, 0, 0, 0],  # a run: period 1
      [1, 9, 1, 8, 1, 0, 0, 0, 0, 0],  # only the 1-gram "1" repeats, latest 2 back -> 8 1 8 1 8
  ], jnp.int32)
  end = jnp.array([8, 6, 6, 4, 5])
  np.testing.assert_array_equal(speculative.ngram_draft(hist, end, 5), [
      [4, 1, 2, 3, 4], [5, 6, 5, 6, 5], [6, 6, 6, 6, 6], [2, 2, 2, 2, 2], [8, 1, 8, 1, 8]])


def test_accepted_counts_the_drafts_before_the_first_disagreement():
  greedy = jnp.array([[4, 5, 6, 7], [4, 0, 6, 7], [9, 5, 6, 7]])
  draft = jnp.array([[4, 5, 6], [4, 5, 6], [4, 5, 6]])
  np.testing.assert_array_equal(speculative.accepted(greedy, draft), [3, 1, 0])


def _both(model, weights, prompts, params, k, samples=1):
  key = jax.random.PRNGKey(0)
  one = generate(model, weights, prompts, params, key, samples_per_prompt=samples)
  calls = []
  spec = generate(model, weights, prompts, dataclasses.replace(params, lookahead=k), key,
                  on_token=lambda t, tokens, active: calls.append(np.asarray(active).copy()),
                  samples_per_prompt=samples)
  jax.effects_barrier()
  return one, spec, calls


@pytest.mark.parametrize("k", [1, 4])
def test_lookahead_gives_the_tokens_of_one_token_steps(k):
  model, weights = _model()
  for params, samples in [(SamplingParams(max_new_tokens=90), 1),  # crosses a cache window
                          (SamplingParams(max_new_tokens=30, stop_ids=(4, 10)), 2)]:
    one, spec, calls = _both(model, weights, PROMPTS, params, k, samples)
    np.testing.assert_array_equal(spec.tokens, one.tokens)
    np.testing.assert_array_equal(spec.lengths, one.lengths)
    np.testing.assert_array_equal(spec.stopped, one.stopped)
    np.testing.assert_allclose(spec.logprobs, one.logprobs, atol=1e-5)
    # the streamed columns are the tokens, in order; fewer model calls than tokens, so drafts were accepted
    streamed = sum(int(a.sum()) for a in calls)
    assert streamed == int(one.lengths.sum())
    assert (len(calls) - 1) // (k + 1) < one.lengths.max() - 1
  assert one.stopped.any() and not one.stopped.all()


def test_lookahead_with_a_sliding_window():
  model, weights = _model(dataclasses.replace(CFG, sliding_window=6))
  one, spec, _ = _both(model, weights, PROMPTS, SamplingParams(max_new_tokens=40), 3)
  np.testing.assert_array_equal(spec.tokens, one.tokens)


def test_lookahead_is_for_greedy_decoding_only():
  with pytest.raises(ValueError, match="greedy"):
    SamplingParams(max_new_tokens=4, temperature=1.0, lookahead=2)
  with pytest.raises(ValueError, match="lookahead"):
    SamplingParams(max_new_tokens=4, lookahead=-1)
