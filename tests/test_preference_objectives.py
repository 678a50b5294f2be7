"""The reference-free and unpaired preference objectives (SimPO, ORPO, KTO): each loss against a hand
computation from full-vocabulary logits of each side's own row, and what each run keeps in its state."""
import functools
import json

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


# ---------------------------------------------------------------------------------------------------- ORPO

def test_orpo_loss_matches_a_hand_computation(pair_batch):
  pairs, batch = pair_batch
  weights = _weights(1)
  lam = 0.3
  loss, m = run_loss("orpo", {"model": weights}, {}, batch, lam=lam)
  losses_by_hand, ratios = [], []
  for i in range(2):  # pair 2 has weight 0
    (lc, nc), (lr, nr) = pair_logps(weights, pairs, i)
    p_c, p_r = np.exp(lc / nc), np.exp(lr / nr)
    ratios.append(np.log(p_c / (1 - p_c)) - np.log(p_r / (1 - p_r)))
    losses_by_hand.append(-lc / nc - lam * log_sigmoid(ratios[-1]))
  np.testing.assert_allclose(loss, np.mean(losses_by_hand), rtol=1e-5)
  np.testing.assert_allclose(m["log_odds_ratio"], np.mean(ratios), rtol=1e-4, atol=1e-6)


def test_orpo_log1m_exp_is_exact_at_both_ends():
  from jaxllm.losses.orpo import log1m_exp
  m = np.array([-1e-5, -0.01, -0.69, -0.7, -5.0, -40.0], np.float64)
  exact = np.where(m > -0.5, np.log(-np.expm1(m)), np.log1p(-np.exp(m)))  # float64: accurate at both ends
  np.testing.assert_allclose(log1m_exp(jnp.asarray(m, jnp.float32)), exact, rtol=2e-5)
  assert np.isfinite(float(log1m_exp(jnp.zeros(())))) and np.isfinite(jax.grad(log1m_exp)(jnp.asarray(-1e-9)))


def test_an_orpo_run_holds_no_reference_weights(tmp_path, tokenizer_dir):
  state = state_of("orpo", tmp_path, tokenizer_dir)
  assert state.frozen == {} and set(state.params) == {"model"}


# ----------------------------------------------------------------------------------------------------- KTO

def test_kto_loss_matches_a_hand_computation(tok):
  from jaxllm.data import kto
  records = kto.from_pairs(synthetic.preference_pairs(0, "train", 2))  # desirable, undesirable, desirable, ...
  pairs, tags = kto.tokenize(tok, records, 128, seed=0)
  assert tags.tolist() == [True, False, True, False]
  batch = kto.make_batch(pairs, tags, np.arange(4), np.array([1, 1, 1, 0], np.float32))
  policy, ref = _weights(0), _weights(1)
  beta, lam_d, lam_u = 0.5, 1.0, 1.3
  loss, m = run_loss("kto", {"model": policy}, {"model": ref}, batch, beta=beta, desirable_weight=lam_d,
                     undesirable_weight=lam_u)
  ratio = np.array([[pair_logps(policy, pairs, i)[s][0] - pair_logps(ref, pairs, i)[s][0] for s in range(2)]
                    for i in range(3)])  # row 3 has weight 0
  kl = ratio[:, 1].mean()
  z = max(kl, 0.0)
  sigmoid = lambda x: 1 / (1 + np.exp(-x))
  by_hand = [lam_d * (1 - sigmoid(beta * (r - z))) if good else lam_u * (1 - sigmoid(beta * (z - r)))
             for r, good in zip(ratio[:, 0], tags[:3])]
  np.testing.assert_allclose(loss, np.mean(by_hand), rtol=1e-5)
  np.testing.assert_allclose(m["kl"], kl, rtol=1e-4, atol=1e-5)


def test_kto_rows_pair_each_prompt_with_another_examples_answer(tok):
  from jaxllm.data import kto
  records = kto.from_pairs(synthetic.preference_pairs(0, "train", 3))
  pairs, _ = kto.tokenize(tok, records, 128, seed=0)
  own = [pairs.ids[i, 0, pairs.prompt_len[i]:pairs.lengths[i, 0]].tolist() for i in range(6)]
  kl = [pairs.ids[i, 1, pairs.prompt_len[i]:pairs.lengths[i, 1]].tolist() for i in range(6)]
  assert sorted(map(tuple, kl)) == sorted(map(tuple, own))  # every answer is some row's KL sample exactly once
  assert all(a != b for a, b in zip(own, kl))


def _kto_file(tmp_path, rows):
  path = tmp_path / "kto.json"
  path.write_text(json.dumps(rows))
  info = {"kto_demo": {"file_name": "kto.json", "formatting": "sharegpt",
                       "columns": {"messages": "messages", "kto_tag": "label"},
                       "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user",
                                "assistant_tag": "assistant"}}}
  (tmp_path / "dataset_info.json").write_text(json.dumps(info))
  return tiny_config("kto", tmp_path / "run", "", **{"data.name": "kto_demo",
                                                     "data.dataset_info": str(tmp_path / "dataset_info.json")})


def _kto_row(question, answer, label):
  return {"messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}],
          "label": label}


def test_kto_reads_llama_factory_kto_tag_data(tmp_path):
  from jaxllm.data import kto
  config = _kto_file(tmp_path, [_kto_row("2+2?", "4", True), _kto_row("3+3?", "7", False)])
  result = kto.read(config)
  assert result.records == [
      {"messages": [{"role": "user", "content": "2+2?"}], "answer": "4", "desirable": True},
      {"messages": [{"role": "user", "content": "3+3?"}], "answer": "7", "desirable": False}]


@pytest.mark.parametrize("row, message", [(_kto_row("q", "a", "yes"), "must be true or false, got 'yes'"),
                                          ({"messages": [{"role": "user", "content": "q"},
                                                         {"role": "assistant", "content": "a"}]}, "kto_tag")])
def test_a_bad_kto_row_is_named(tmp_path, row, message):
  from jaxllm.data import kto
  from jaxllm.data.files import DataError
  config = _kto_file(tmp_path, [_kto_row("q", "a", True), row])
  with pytest.raises(DataError, match=rf"kto.json.*1.*{message}"):
    kto.read(config)
