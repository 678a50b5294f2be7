"""The reference-free and unpaired preference objectives (SimPO, ORPO, KTO): each loss against a hand
computation from full-vocabulary logits of each side's own row, and what each run keeps in its state."""
import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from conftest import tiny_config
from jaxllm import losses, runtime, train
from jaxllm.data import preference, synthetic
from jaxllm.model import ModelConfig, Transformer
from jaxllm.state import make_optimizer
from jaxllm.tokenizer import Tokenizer

CFG = ModelConfig(vocab_size=512, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=8, mlp_dim=64,
                  max_seq_len=128)
MODEL = Transformer(CFG)
_logits = jax.jit(lambda w, t: MODEL.apply({"params": w}, t))


def _weights(seed=0):
  import flax.linen as nn
  return nn.meta.unbox(MODEL.init(jax.random.PRNGKey(seed), jnp.zeros((1, 8), jnp.int32))["params"])


@pytest.fixture(scope="module")
def tok(tokenizer_dir):
  return Tokenizer.load(tokenizer_dir)


@pytest.fixture(scope="module")
def pair_batch(tok):
  pairs = preference.tokenize(tok, synthetic.preference_pairs(0, "train", 3), 104)
  weight = np.array([1.0, 1.0, 0.0], np.float32)  # the last pair is held-out filler: it must not count
  return pairs, preference.make_batch(pairs, np.arange(len(pairs)), weight)


def answer_logp(weights, row, length: int, prompt_len: int) -> tuple[float, int]:
  """(sum of log p(token t | tokens < t) over the answer tokens, their count) from the full logits of the
  right-padded row (one compiled shape; causal, so the padding changes nothing before `length`)."""
  logits = np.asarray(_logits(weights, np.asarray(row)[None]), np.float64)[0, :length]
  logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  return sum(logp[t - 1, row[t]] for t in range(prompt_len, length)), length - prompt_len


def pair_logps(weights, pairs, i):
  """[(chosen logp, n), (rejected logp, n)] of pair i."""
  return [answer_logp(weights, pairs.ids[i, s], int(pairs.lengths[i, s]), int(pairs.prompt_len[i]))
          for s in range(2)]


def run_loss(name, params, frozen, batch, **section):
  cfg = ml_collections.ConfigDict({"loss": {"chunk_size": 0}, name: section})
  return jax.jit(functools.partial(losses.get(name).loss, model=MODEL, cfg=cfg))(params, frozen, batch, None)


def log_sigmoid(x):
  return -np.log1p(np.exp(-x))


def state_of(stage, tmp_path, tokenizer_dir):
  env = runtime.prepare(tiny_config(stage, tmp_path, tokenizer_dir))
  state, _ = train.init_state(env, train.Task(loss=stage, batches=None), make_optimizer(env.config.optim, 1))
  return state


def n_values(tree) -> int:
  return sum(x.size for x in jax.tree.leaves(tree))


# --------------------------------------------------------------------------------------------------- SimPO

def test_simpo_loss_matches_a_hand_computation(pair_batch):
  pairs, batch = pair_batch
  weights = _weights(0)
  beta, gamma = 2.5, 0.7
  loss, m = run_loss("simpo", {"model": weights}, {}, batch, beta=beta, gamma=gamma)
  losses_by_hand, margins = [], []
  for i in range(2):  # pair 2 has weight 0
    (lc, nc), (lr, nr) = pair_logps(weights, pairs, i)
    margins.append(beta * (lc / nc - lr / nr))
    losses_by_hand.append(-log_sigmoid(margins[-1] - gamma))
  np.testing.assert_allclose(loss, np.mean(losses_by_hand), rtol=1e-5)
  np.testing.assert_allclose(m["margin"], np.mean(margins), rtol=1e-4, atol=1e-6)
  assert float(m["accuracy"]) == np.mean([float(x > 0) for x in margins])


def test_a_simpo_run_holds_no_reference_weights(tmp_path, tokenizer_dir):
  simpo = state_of("simpo", tmp_path / "simpo", tokenizer_dir)
  assert simpo.frozen == {} and set(simpo.params) == {"model"}
  dpo = state_of("dpo", tmp_path / "dpo", tokenizer_dir)  # the contrast: DPO keeps a second copy
  assert n_values(dpo.frozen) == n_values(simpo.params["model"]) > 0
