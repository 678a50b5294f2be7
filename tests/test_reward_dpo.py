"""Reward modelling and DPO: pair batches (one shared-prompt row per pair), the Bradley-Terry loss and its gradient by hand, rewards read at the
right token under either padding, DPO = log 2 when policy = reference, real preference data sets, bad rows,
and tiny end-to-end runs (full fine-tuning and LoRA)."""
import functools
import gzip
import json
import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from conftest import tiny_config
from jaxllm import chat_template, reward_model, stages
from jaxllm.data import preference, sources
from jaxllm.losses import dpo as dpo_loss_lib
from jaxllm.losses import reward as reward_loss_lib
from jaxllm.metrics import read_metrics
from jaxllm.model import ModelConfig, Transformer
from jaxllm.tokenizer import Tokenizer

CFG = ModelConfig(vocab_size=512, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=8, mlp_dim=64,
                  max_seq_len=128)
MODEL = Transformer(CFG)
HH = ("\n\nHuman: How do I boil an egg?\n\nAssistant: Put it in boiling water.\n\nHuman: For how long?"
      "\n\nAssistant: ")


def _weights(seed=0):
  import flax.linen as nn
  return nn.meta.unbox(MODEL.init(jax.random.PRNGKey(seed), jnp.zeros((1, 8), jnp.int32))["params"])


_hidden = jax.jit(lambda w, t, p, s: MODEL.apply({"params": w}, t, p, s, return_hidden=True))
_logits = jax.jit(lambda w, t: MODEL.apply({"params": w}, t))
_rewards = jax.jit(lambda w, h, t, p, s, i: reward_model.rewards(MODEL, w, None, h, t, p, s, i))


def _cfg(**sections):
  dpo = {"beta": 0.1, "label_smoothing": 0.0, "variant": "sigmoid", "nll_weight": 0.0}
  reward = {"margin": 0.0, "prefix_weight": 0.0, "lm_weight": 0.0}
  return ml_collections.ConfigDict({"loss": {"chunk_size": 0}, "reward": reward, "dpo": dpo, **sections})


@pytest.fixture(scope="module")
def tok(tokenizer_dir):
  return Tokenizer.load(tokenizer_dir)


def _records(n=6):
  from jaxllm.data import synthetic
  return synthetic.preference_pairs(0, "train", n)


def _batch(tok, records, seq_len=104):
  pairs = preference.tokenize(tok, records, seq_len)
  return pairs, preference.make_batch(pairs, np.arange(len(pairs)))


def _flat_sides(batch, pad_id=0):
  """Each side's own row (`preference.side_rows`) as [2B, ...]: rows 2i / 2i + 1 are pair i's chosen / rejected."""
  return {k: v.reshape((-1,) + v.shape[2:]) for k, v in preference.side_rows(batch, pad_id).items()}


# ------------------------------------------------------------------------------------------------- batches

def test_pair_batch_matches_the_chat_template_and_truncates_prompts_alike(tok):
  records = [{"messages": [{"role": "user", "content": "Say hi. " * 30}], "chosen": "hi", "rejected": "hello there"},
             {"messages": [{"role": "user", "content": "q"}], "chosen": "a " * 100, "rejected": "b"},  # too long
             {"messages": [{"role": "user", "content": "q"}], "chosen": "yes", "rejected": "no"},  # short
             *_records(2)]
  pairs = preference.tokenize(tok, records, 48, on_long="drop")  # the pair whose answers overflow is dropped
  assert len(pairs) == 4 and pairs.dropped == 1 and pairs.truncated == 3  # prompts cut: row 0, both _records
  batch = preference.make_batch(pairs, np.arange(4))
  assert batch["tokens"].shape == (4, 48) and batch["side_index"].shape == (4, 2, 48)
  assert batch["last_index"].shape == (4, 2)
  # Row 0: the prompt was cut from the left until prompt + both answers fit one row, answers kept whole.
  p = int(pairs.prompt_len[0])
  full_prompt = chat_template.prompt_ids(tok, records[0]["messages"])
  answers = [preference.answer_ids(tok, a) for a in ("hi", "hello there")]
  assert p < len(full_prompt) and p + 1 + len(answers[0]) + len(answers[1]) == 48  # the row is full
  sides = preference.side_rows(batch, tok.pad_id)
  for s, answer in enumerate(answers):
    n = int(batch["last_index"][0, s]) + 1
    np.testing.assert_array_equal(sides["tokens"][0, s, :n], full_prompt[-p:] + answer)
    np.testing.assert_array_equal(sides["tokens"][0, s, :n], pairs.ids[0, s, :n])
  # The shared row: P[:-1] | P[-1] chosen | P[-1] rejected, each branch seeing the prompt (prefix 1) and itself.
  a, c = len(answers[0]), len(answers[1])
  np.testing.assert_array_equal(batch["tokens"][0], full_prompt[-p:] + answers[0] + full_prompt[-1:] + answers[1])
  np.testing.assert_array_equal(batch["segment_ids"][0], [1] * (p - 1) + [2] * (a + 1) + [3] * (c + 1))
  np.testing.assert_array_equal(batch["prefix_ids"][0], [1] * 48)
  np.testing.assert_array_equal(batch["positions"][0],
                                [*range(p - 1), *range(p - 1, p + a), *range(p - 1, p + c)])
  # Targets: the next token of the token's own branch; a branch's last slot targets padding.
  np.testing.assert_array_equal(batch["targets"][0, :p + a - 1], batch["tokens"][0, 1:p + a])
  assert batch["targets"][0, p + a - 1] == tok.pad_id
  # A short pair's row is right-padded: segment and prefix 0, so padding sees padding only.
  filled = int((batch["segment_ids"][1] > 0).sum())
  assert filled == pairs.prompt_len[1] + 1 + (pairs.lengths[1] - pairs.prompt_len[1]).sum() < 48
  assert (batch["prefix_ids"][1, filled:] == 0).all() and (batch["tokens"][1, filled:] == tok.pad_id).all()


def test_hh_rlhf_multi_turn_pairs_batch_correctly(tmp_path, tok):
  path = tmp_path / "hh.jsonl.gz"
  rows = [{"chosen": HH + "About nine minutes.", "rejected": HH + "Forever."},
          {"chosen": "\n\nHuman: Hi\n\nAssistant: Hello!", "rejected": "\n\nHuman: Hi\n\nAssistant: Go away."}]
  path.write_bytes(gzip.compress("\n".join(json.dumps(r) for r in rows).encode()))
  records = sources.load_file(str(path), "hh_rlhf", "preference").records
  assert [m["role"] for m in records[0]["messages"]] == ["user", "assistant", "user"]
  pairs, batch = _batch(tok, records, seq_len=160)
  assert len(pairs) == 2
  sides = preference.side_rows(batch, tok.pad_id)
  for i, record in enumerate(records):
    for s, side in enumerate(preference.SIDES):
      # Each side's row is the conversation rendered whole (earlier assistant turns included), up to the
      # closing <|im_end|>; loss_mask marks exactly the targets the chat template would train on (the last answer).
      rendered = chat_template.render(tok, record["messages"] + [{"role": "assistant", "content": record[side]}])
      n = int(batch["last_index"][i, s]) + 1
      assert rendered.ids[:n] == sides["tokens"][i, s, :n].tolist() and len(rendered.ids) > n
      np.testing.assert_array_equal(batch["loss_mask"][i, s, :n - 1], rendered.loss_mask[1:n])
      assert batch["loss_mask"][i, s, n - 1:].sum() == 0
      # The shared row's targets, read per side, are each side's next tokens.
      side_targets = np.take_along_axis(batch["targets"][i], batch["side_index"][i, s], -1)
      np.testing.assert_array_equal(side_targets[:n - 1], sides["tokens"][i, s, 1:n])
      np.testing.assert_array_equal(sides["segment_ids"][i, s], np.arange(160) < n)
      np.testing.assert_array_equal(np.take_along_axis(batch["positions"][i], batch["side_index"][i, s], -1)[:n],
                                    np.arange(n))
      assert tok.decode(sides["tokens"][i, s, n - 1:n]) == "<|im_end|>"
    assert pairs.prompt_len[i] == len(chat_template.prompt_ids(tok, record["messages"]))


def test_bad_pairs_are_reported_with_their_row(tmp_path, tok):
  good = _records(1)[0]
  bad = [good, {**good, "rejected": good["chosen"]}, {**good, "chosen": "  "}, {"messages": good["messages"],
                                                                                 "chosen": "x"}]
  with pytest.raises(sources.DataError, match=r"row 1: chosen and rejected are identical"):
    preference.tokenize(tok, bad, 96)
  with pytest.raises(sources.DataError, match=r"row 1: empty chosen answer"):
    preference.tokenize(tok, [bad[0], bad[2]] * 2, 96)
  with pytest.raises(sources.DataError, match=r"row 0: missing rejected answer"):
    preference.tokenize(tok, bad[3:], 96)
  pairs = preference.tokenize(tok, bad, 96, on_bad="skip")
  assert len(pairs) == 1 and pairs.skipped == 3
  # From a file through the stage's reader: the file and line are named (alpaca ranking columns).
  path = tmp_path / "pairs.jsonl"
  lines = [{"instruction": "q1", "chosen": "a", "rejected": "b"}, {"instruction": "q2", "chosen": "a", "rejected": "a"},
           {"instruction": "q3", "chosen": "a"}]
  path.write_text("\n".join(json.dumps(r) for r in lines))
  config = tiny_config("reward", tmp_path / "w", "unused", **{"data.name": str(path)})
  with pytest.raises(sources.DataError, match=r"pairs.jsonl: line 2: chosen and rejected are identical"):
    preference.records(config)
  config.data.on_bad_row = "skip"
  train, held, skipped = preference.records(config)
  assert skipped == 2 and len(train) + len(held) == 1


@pytest.mark.parametrize("name,on_bad", [("dpo_en_demo", "fail"), ("dpo_zh_demo", "fail"),
                                         ("hh_rlhf_harmless_test", "skip")])
def test_shared_preference_datasets_load_and_batch(shared_data, tok, tmp_path, name, on_bad):
  config = tiny_config("dpo", tmp_path, "unused", **{"data.name": name, "data.on_bad_row": on_bad,
                                                      "data.dataset_info": str(shared_data / "dataset_info.json"),
                                                      "data.seq_len": 1024})
  train, held, skipped = preference.records(config)
  assert len(train) > 10 * len(held) > 0
  batches, eval_batches, counts = preference.build(config, tok)
  assert counts["train_pairs"] + counts["eval_pairs"] + counts["dropped_too_long"] == len(train) + len(held)
  assert counts["dropped_too_long"] == 0  # over-long pairs are truncated (data.on_long=truncate), not dropped
  assert counts["train_pairs"] > 0  # a 512-token world tokenizer makes long English/Chinese answers long
  batch = batches.next(None)
  assert batch["tokens"].shape == (config.data.batch_size, 1024) and batch["weight"].shape == (8,)
  assert (batch["loss_mask"].sum(-1) > 0).all()  # every side has answer tokens
  assert (batch["last_index"] < 1024).all() and eval_batches[0]["tokens"].shape == batch["tokens"].shape


def test_short_held_out_set_is_padded_with_weight_zero(tok):
  pairs = preference.tokenize(tok, _records(3), 96)
  [batch] = preference.eval_batches(pairs, 8, 4)
  np.testing.assert_array_equal(batch["weight"], [1, 1, 1, 0, 0, 0, 0, 0])


# ------------------------------------------------------------------------------------------ reward model

def test_bradley_terry_loss_and_gradient_match_a_hand_computation(tok):
  pairs, batch = _batch(tok, _records(4))
  batch["weight"] = np.array([1, 1, 1, 0], np.float32)  # the last pair must not count
  weights = _weights()
  head = {"w": jax.random.normal(jax.random.PRNGKey(1), (CFG.d_model,)) * 3.0, "b": jnp.array(0.7)}
  margin = 0.3
  params = {"model": weights, "score_head": head}
  loss_fn = functools.partial(reward_loss_lib.reward_loss, model=MODEL,
                              cfg=_cfg(reward={"margin": margin, "prefix_weight": 0.0, "lm_weight": 0.0}))
  (loss, metrics), grads = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))(params, {}, batch, None)

  # By hand, on each side's own row: hidden state at its last real token, r = h.w + b,
  # loss = mean -log sigmoid(dr - margin).
  rows = _flat_sides(batch, tok.pad_id)
  sides = preference.side_rows(batch, tok.pad_id)
  hidden = np.asarray(_hidden(weights, rows["tokens"], rows["positions"], rows["segment_ids"]), np.float64)
  h = hidden[np.arange(8), rows["last_index"]].reshape(4, 2, -1)[:3]
  w, b = np.asarray(head["w"], np.float64), float(head["b"])
  r = h @ w + b
  d = r[:, 0] - r[:, 1]
  sig = 1 / (1 + np.exp(-(d - margin)))
  np.testing.assert_allclose(loss, np.mean(-np.log(sig)), rtol=1e-5)
  np.testing.assert_allclose(metrics["margin"], d.mean(), rtol=1e-5)
  np.testing.assert_allclose(metrics["accuracy"], np.mean(d > 0), rtol=1e-6)
  # d loss / d w = mean -(1 - sigmoid) (h_c - h_r); b cancels in the difference, so its gradient is 0.
  np.testing.assert_allclose(grads["score_head"]["w"], np.mean(-(1 - sig)[:, None] * (h[:, 0] - h[:, 1]), 0),
                             rtol=1e-4, atol=1e-6)
  assert abs(float(grads["score_head"]["b"])) < 1e-6
  assert float(optax_norm(grads["model"])) > 0  # the trunk learns too

  # The token-level term: BT on aligned prefixes from the first differing token to the end of the shorter side.
  loss_fn = functools.partial(reward_loss_lib.reward_loss, model=MODEL,
                              cfg=_cfg(reward={"margin": margin, "prefix_weight": 0.5, "lm_weight": 0.0}))
  loss_with_prefix, _ = jax.jit(loss_fn)(params, {}, batch, None)
  r_all = (hidden @ w + b).reshape(4, 2, -1)
  per_pair = []
  for i in range(3):
    first = int(np.argmax(sides["tokens"][i, 0] != sides["tokens"][i, 1]))
    assert first >= pairs.prompt_len[i]  # the shared prompt never differs
    end = int(batch["last_index"][i].min())
    d_t = r_all[i, 0, first:end + 1] - r_all[i, 1, first:end + 1]
    per_pair.append(np.mean(-np.log(1 / (1 + np.exp(-(d_t - margin))))))
  np.testing.assert_allclose(loss_with_prefix, loss + 0.5 * np.mean(per_pair), rtol=1e-5)

  # With a log-likelihood weight in the head the pair margins are those of reward_model.rewards (what scoring
  # later reads), and the weight itself is trained.
  ll_params = {"model": weights, "score_head": {**head, reward_model.LOGLIK: jnp.array(0.5)}}
  loss_fn = functools.partial(reward_loss_lib.reward_loss, model=MODEL, cfg=_cfg())
  (_, ll_metrics), ll_grads = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))(ll_params, {}, batch, None)
  scored = np.asarray(_rewards(weights, ll_params["score_head"], rows["tokens"], rows["positions"],
                               rows["segment_ids"], rows["last_index"])).reshape(4, 2)[:3]
  np.testing.assert_allclose(ll_metrics["margin"], np.mean(scored[:, 0] - scored[:, 1]), rtol=1e-4)
  assert float(ll_metrics[reward_model.LOGLIK]) == 0.5
  assert abs(float(ll_grads["score_head"][reward_model.LOGLIK])) > 0

  # The LM term: + lm_weight * per-token NLL of the chosen answers (pairs of weight 0 excluded), by hand.
  loss_fn = functools.partial(reward_loss_lib.reward_loss, model=MODEL,
                              cfg=_cfg(reward={"margin": 0.0, "prefix_weight": 0.0, "lm_weight": 0.5}))
  lm_loss, lm_metrics = jax.jit(loss_fn)(ll_params, {}, batch, None)
  nll, count = 0.0, 0
  for i in range(3):
    ids, n, p = sides["tokens"][i, 0], pairs.lengths[i, 0], pairs.prompt_len[i]
    logp = jax.nn.log_softmax(_logits(weights, ids[None, :n])[0], axis=-1)
    nll -= sum(float(logp[t - 1, ids[t]]) for t in range(p, n))
    count += n - p
  np.testing.assert_allclose(lm_metrics["chosen_nll"], nll / count, rtol=1e-4)
  np.testing.assert_allclose(lm_loss - 0.5 * nll / count,
                             np.mean(-np.log(1 / (1 + np.exp(-(scored[:, 0] - scored[:, 1]))))), rtol=1e-4)


def optax_norm(tree):
  return jnp.sqrt(sum(jnp.sum(x ** 2) for x in jax.tree.leaves(tree)))


def test_reward_is_read_at_the_last_real_token_with_left_or_right_padding():
  weights, head = _weights(), reward_model.init_head(jax.random.PRNGKey(2), CFG.d_model, 1.0)
  seqs = [[5, 9, 17, 33, 2], [7, 8, 100, 101, 102, 103, 104, 3], [11, 12]]
  length = 12
  right = np.zeros((3, length), np.int32)
  right_seg = np.zeros((3, length), np.int32)
  left, left_seg = right.copy(), right_seg.copy()
  for i, s in enumerate(seqs):
    right[i, :len(s)], right_seg[i, :len(s)] = s, 1
    left[i, length - len(s):], left_seg[i, length - len(s):] = s, 1
    right[i, len(s):] = 99  # junk in the padding must not matter
  positions, last = reward_model.layout_from_segments(left_seg)
  np.testing.assert_array_equal(last, [length - 1] * 3)
  np.testing.assert_array_equal(positions[0], [0] * 7 + [0, 1, 2, 3, 4])
  right_positions, _ = reward_model.layout_from_segments(right_seg)
  r_right = _rewards(weights, head, right, right_positions, right_seg, np.array([4, 7, 1]))
  r_left = _rewards(weights, head, left, positions, left_seg, last)
  np.testing.assert_allclose(r_left, r_right, rtol=1e-4, atol=1e-5)
  # Each row alone, unpadded: the same rewards; reading one token early gives different ones.
  alone = [_rewards(weights, head, np.array([s]), np.arange(len(s))[None], np.ones((1, len(s)), np.int32),
                    np.array([len(s) - 1]))[0] for s in seqs]
  np.testing.assert_allclose(r_right, alone, rtol=1e-4, atol=1e-5)
  early = _rewards(weights, head, right, right_positions, right_seg, np.array([3, 6, 0]))
  assert np.all(np.abs(np.asarray(early) - np.asarray(r_right)) > 1e-4)


def test_loglik_reward_adds_the_trunks_log_likelihood_of_the_real_tokens():
  weights = _weights()
  head = reward_model.init_head(jax.random.PRNGKey(2), CFG.d_model, 1.0, loglik_weight=0.7)
  plain = {k: v for k, v in head.items() if k != reward_model.LOGLIK}
  seqs = [[5, 9, 17, 33, 2], [7, 8, 100, 101, 102, 103, 104, 3]]
  length = 10
  left, left_seg = np.full((2, length), 99, np.int32), np.zeros((2, length), np.int32)
  for i, s in enumerate(seqs):
    left[i, length - len(s):], left_seg[i, length - len(s):] = s, 1
  positions, last = reward_model.layout_from_segments(left_seg)
  by_hand = []
  for s in seqs:  # each row alone, unpadded: sum over t of log p(s[t + 1] | s[:t + 1])
    logp = jax.nn.log_softmax(_logits(weights, np.array([s]))[0], axis=-1)
    by_hand.append(sum(float(logp[t, s[t + 1]]) for t in range(len(s) - 1)))
  r = _rewards(weights, head, left, positions, left_seg, last)
  r_plain = _rewards(weights, plain, left, positions, left_seg, last)
  np.testing.assert_allclose(np.asarray(r) - np.asarray(r_plain), 0.7 * np.array(by_hand), rtol=1e-4, atol=1e-4)
  hidden = _hidden(weights, left, positions, left_seg)
  sliced = reward_model.read_rewards(MODEL, weights, head, hidden, left, left_seg, last, chunk_size=128)
  np.testing.assert_allclose(sliced, r, rtol=1e-5, atol=1e-4)


# -------------------------------------------------------------------------------------------------- DPO

@pytest.mark.parametrize("lora", [False, True])
def test_dpo_loss_is_log_2_when_policy_equals_reference(tok, lora):
  from jaxllm import lora as lora_lib

  _, batch = _batch(tok, _records(4))
  weights = _weights()
  if lora:
    params = {"lora": lora_lib.init_lora(weights, ("q", "v"), 4, jax.random.PRNGKey(3))}
  else:
    params = {"model": jax.tree.map(jnp.copy, weights)}
  frozen = {"model": weights}
  variants = (({"beta": 0.1, "label_smoothing": 0.0, "variant": "sigmoid", "nll_weight": 0.0}, math.log(2)),
              ({"beta": 0.5, "label_smoothing": 0.2, "variant": "sigmoid", "nll_weight": 0.0}, math.log(2)),  # cDPO
              ({"beta": 0.1, "label_smoothing": 0.0, "variant": "ipo", "nll_weight": 0.0}, (1 / 0.2) ** 2))  # IPO
  for dpo, expected in variants[:1] if lora else variants:
    loss_fn = functools.partial(dpo_loss_lib.dpo_loss, model=MODEL, cfg=_cfg(dpo=dpo))
    loss, m = jax.jit(loss_fn)(params, frozen, batch, None)
    np.testing.assert_allclose(loss, expected, rtol=1e-6)
    assert float(m["accuracy"]) == 0.5 and float(m["margin"]) == 0.0


def test_dpo_loss_matches_a_hand_computation(tok):
  pairs, batch = _batch(tok, _records(3))
  policy, ref = _weights(0), _weights(1)
  beta = 0.3
  dpo = {"beta": beta, "label_smoothing": 0.1, "variant": "sigmoid", "nll_weight": 0.5}  # cDPO + RPO's NLL term
  loss_fn = functools.partial(dpo_loss_lib.dpo_loss, model=MODEL, cfg=_cfg(dpo=dpo))
  loss, m = jax.jit(loss_fn)({"model": policy}, {"model": ref}, batch, None)

  def answer_logp(weights, i, s):  # sum of log p(token t | tokens < t) over the answer, from full logits
    n, p = int(pairs.lengths[i, s]), int(pairs.prompt_len[i])
    ids = pairs.ids[i, s, :n]
    logits = np.asarray(_logits(weights, pairs.ids[i:i + 1, s]), np.float64)[0, :n]  # one compiled shape
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    return sum(logp[t - 1, ids[t]] for t in range(p, n))

  h = np.array([(answer_logp(policy, i, 0) - answer_logp(ref, i, 0)) - (answer_logp(policy, i, 1)
                                                                          - answer_logp(ref, i, 1)) for i in range(3)])
  logsig = lambda x: -np.log1p(np.exp(-x))
  chosen_nll = [-answer_logp(policy, i, 0) / (pairs.lengths[i, 0] - pairs.prompt_len[i]) for i in range(3)]
  expected = np.mean(-0.9 * logsig(beta * h) - 0.1 * logsig(-beta * h) + 0.5 * np.array(chosen_nll))
  np.testing.assert_allclose(loss, expected, rtol=1e-4)
  np.testing.assert_allclose(m["margin"], beta * h.mean(), rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(m["chosen_logp"], np.mean([answer_logp(policy, i, 0) for i in range(3)]), rtol=1e-4)


# ----------------------------------------------------------------------------------------- end to end

@pytest.fixture(scope="module")
def pretrained(tmp_path_factory, tokenizer_dir):
  from jaxllm.stages import pretrain
  workdir = tmp_path_factory.mktemp("pt")
  pretrain.run(tiny_config("pretrain", workdir, tokenizer_dir, **{"sample.num": 0}))
  return str(workdir)


def _eval_rows(workdir):
  return [r for r in read_metrics(str(workdir)) if r["split"] == "eval"]


def test_tiny_reward_run_end_to_end_and_scoring_api(tmp_path, tokenizer_dir, pretrained):
  config = tiny_config("reward", tmp_path, tokenizer_dir, init_from=pretrained,
                       # the plain scalar head: the log-likelihood term of an untrained tiny model swings
                       # the per-batch loss too much for "the loss falls in 10 steps" (unit tests cover it)
                       **{"reward.head_init": 0.01, "optim.lr": 3e-3, "reward.lm_weight": 0.0,
                          "reward.loglik_init": 0.0})
  summary = stages.run(config)
  assert summary["step"] == 10 and summary["train_pairs"] == 200 and summary["eval_pairs"] == 16
  rows = _eval_rows(tmp_path)
  assert [r["step"] for r in rows] == [5, 10] and all(0 <= r["accuracy"] <= 1 for r in rows)
  losses = [r["loss"] for r in read_metrics(str(tmp_path)) if r["split"] == "train"]
  assert losses[-1] < losses[0]

  rm = reward_model.RewardModel.load(str(tmp_path), batch_size=4)
  pair = _records(1)[0]
  conversations = [pair["messages"] + [{"role": "assistant", "content": pair[s]}] for s in preference.SIDES]
  scores = rm.score(conversations + [(pair["messages"], pair["chosen"])] * 3)  # 5 items: two chunks of 4
  assert scores.shape == (5,) and np.isfinite(scores).all()
  np.testing.assert_allclose(scores[2:], scores[0], rtol=1e-5)
  # score_tokens agrees with the rewards the loss computes on the rendered pair.
  pairs = preference.tokenize(rm.tokenizer, [pair], 128)
  ids = [pairs.ids[0, s, :pairs.lengths[0, s]].tolist() for s in range(2)]
  np.testing.assert_allclose(rm.score_tokens(ids), scores[:2], rtol=1e-5)


def test_tiny_dpo_lora_run_end_to_end_and_resume(tmp_path, tokenizer_dir, pretrained):
  common = {"init_from": pretrained, "lora.rank": 4, "optim.lr": 3e-3, "log.every": 1, "optim.decay_steps": 10,
            "dpo.nll_weight": 0.0}  # plain DPO, whose loss at policy = reference is exactly log 2
  summary = stages.run(tiny_config("dpo", tmp_path / "straight", tokenizer_dir, **common))
  assert summary["step"] == 10
  rows = _eval_rows(tmp_path / "straight")
  assert [r["step"] for r in rows] == [5, 10]
  assert {"accuracy", "chosen_logp", "policy_accuracy", "margin"} <= set(rows[-1])
  train = [r for r in read_metrics(str(tmp_path / "straight")) if r["split"] == "train"]
  assert train[0]["loss"] == pytest.approx(math.log(2), rel=1e-6)  # adapters start at zero: policy = reference
  assert train[-1]["loss"] < math.log(2)
  # Stopped at step 5 and resumed: the same numbers as the uninterrupted run (data position included).
  stages.run(tiny_config("dpo", tmp_path / "resumed", tokenizer_dir, steps=5, **common))
  stages.run(tiny_config("dpo", tmp_path / "resumed", tokenizer_dir, **common))
  again = [r for r in read_metrics(str(tmp_path / "resumed")) if r["split"] == "train"]
  assert [r["loss"] for r in again] == [r["loss"] for r in train]


def test_full_fine_tuning_dpo_keeps_a_frozen_reference(tmp_path, tokenizer_dir, pretrained):
  summary = stages.run(tiny_config("dpo", tmp_path, tokenizer_dir, init_from=pretrained, steps=3,
                                **{"optim.lr": 3e-3, "optim.warmup_steps": 0, "log.every": 1,
                                   "dpo.nll_weight": 0.0}))
  train = [r for r in read_metrics(str(tmp_path)) if r["split"] == "train"]
  assert train[0]["loss"] == pytest.approx(math.log(2), rel=1e-6)
  assert summary["eval_margin"] != 0.0  # the policy moved away from its (unchanged) reference
