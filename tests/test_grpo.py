"""GRPO: group advantages by hand, the batch layout, the loss against a hand-written policy gradient, clipping
and KL properties, rewards (GSM8K strings, errors naming the reward), config checks, a LoRA step that moves
only the adapters, and a tiny run end to end with an exact resume."""
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from conftest import tiny_config
from jaxllm import rewards, rl, runtime, train
from jaxllm.config import ConfigError
from jaxllm.losses import grpo as grpo_lib
from jaxllm.losses.common import target_logprobs
from jaxllm.metrics import read_metrics
from jaxllm.model import ModelConfig, Transformer
from jaxllm.state import make_optimizer

CFG = ModelConfig(vocab_size=64, d_model=32, n_layers=1, n_heads=4, n_kv_heads=2, head_dim=8, mlp_dim=64,
                  max_seq_len=32)
MODEL = Transformer(CFG)


@rewards.register("test_fives")  # a user-defined reward: how often the reply says "5" (gives tiny models signal)
def _fives(completions, references):
  return np.array([min(c.count("5"), 4) / 4 for c in completions], np.float32)


# --------------------------------------------------------------------------------------------- advantages

def test_group_advantages_on_hand_made_groups():
  r = np.array([[1, 0, 0, 1], [1, 1, 1, 1], [0, 0, 0, 2]], np.float32)
  adv, live = rl.group_advantages(r, scale_std=True, eps=1e-4)
  np.testing.assert_allclose(adv[0], np.array([1, -1, -1, 1]) * 0.5 / (0.5 + 1e-4), rtol=1e-6)
  np.testing.assert_array_equal(adv[1], 0.0)  # all equal: no signal, and no 0/0
  std = np.sqrt(0.75)  # population std of (0, 0, 0, 2)
  np.testing.assert_allclose(adv[2], (np.array([0, 0, 0, 2]) - 0.5) / (std + 1e-4), rtol=1e-6)
  assert live.all()

  adv, live = rl.group_advantages(r, scale_std=False, drop_equal=True)  # Dr. GRPO: only r - mean
  np.testing.assert_allclose(adv, [[0.5, -0.5, -0.5, 0.5], [0, 0, 0, 0], [-0.5, -0.5, -0.5, 1.5]])
  np.testing.assert_array_equal(live, [True, False, True])


def test_layout_masks_exactly_the_completion_targets():
  sampled = [np.array([-0.4, -0.5, -0.6, 9.0]), np.array([-0.8, 9.0])]  # the engine's padding past each length
  batch = rl.layout([(1, 2, 3), (7,)], [np.array([4, 5, 6]), np.array([8])], seq_len=8, pad_id=0,
                    completion_logprobs=sampled)
  np.testing.assert_array_equal(batch["tokens"][0], [1, 2, 3, 4, 5, 6, 0, 0])
  np.testing.assert_array_equal(batch["targets"][0], [2, 3, 4, 5, 6, 0, 0, 0])
  np.testing.assert_array_equal(batch["loss_mask"][0], [0, 0, 1, 1, 1, 0, 0, 0])  # targets 4, 5, 6
  np.testing.assert_array_equal(batch["segment_ids"][0], [1] * 6 + [0] * 2)
  np.testing.assert_array_equal(batch["loss_mask"][1], [1] + [0] * 7)  # target 8 after prompt (7,)
  np.testing.assert_allclose(batch["sampler_logprobs"], [[0, 0, -0.4, -0.5, -0.6, 0, 0, 0], [-0.8] + [0] * 7])
  assert "sampler_logprobs" not in rl.layout([(1,)], [np.array([2])], seq_len=4, pad_id=0)
  with pytest.raises(ValueError, match="exceed data.seq_len"):
    rl.layout([(1,) * 6], [np.arange(4)], seq_len=8, pad_id=0)


def test_group_rows_share_the_prompt_and_give_each_sample_its_own_log_probs():
  """group_layout: prompt once, then each completion behind it; sample_logprobs reads, per sample, exactly the
  log-probs its own row (`layout`) gives, a completion that fills its row to L + 1 included; take_groups keeps
  groups and their samples together."""
  rng = np.random.default_rng(0)
  prompts = [(1, 2, 3), (4,), tuple(rng.integers(1, 64, 8))]
  completions = [np.array([5, 6]), np.array([7]), np.array([8, 9, 10]),
                 np.array([11, 12]), np.array([13]), np.array([14, 15, 16, 17]),
                 rng.integers(1, 64, 7), rng.integers(1, 64, 2), rng.integers(1, 64, 5)]  # 8 + 7 = L + 1
  seq_len, row_len = 14, rl.group_row_len(8, 7, 3)
  batch = rl.group_layout(prompts, completions, 3, seq_len, row_len, pad_id=0)
  assert batch["tokens"].shape == (3, row_len) and batch["side_index"].shape == (3, 3, seq_len)
  np.testing.assert_array_equal(batch["tokens"][0, :12], [1, 2, 3, 5, 6, 3, 7, 3, 8, 9, 10, 0])
  np.testing.assert_array_equal(batch["targets"][0, :11], [2, 3, 5, 6, 0, 7, 0, 8, 9, 10, 0])
  np.testing.assert_array_equal(batch["segment_ids"][0, :12], [1, 1, 2, 2, 2, 3, 3, 4, 4, 4, 4, 0])
  np.testing.assert_array_equal(batch["prefix_ids"][0, :12], [1] * 11 + [0])
  np.testing.assert_array_equal(batch["positions"][0, :11], [0, 1, 2, 3, 4, 2, 3, 2, 3, 4, 5])
  np.testing.assert_array_equal(batch["side_index"][0, 1, :4], [0, 1, 5, 6])
  plain = rl.layout([p for p in prompts for _ in range(3)], completions, seq_len, pad_id=0)
  np.testing.assert_array_equal(batch["loss_mask"], plain["loss_mask"])
  w = _weights()
  mask = plain["loss_mask"]
  by_rows = np.asarray(_logp(w, plain)) * mask
  np.testing.assert_allclose(np.asarray(grpo_lib.sample_logprobs(MODEL, w, None, batch, None)) * mask, by_rows,
                             atol=1e-5)
  assert np.abs(by_rows[6:9]).sum() > 0
  sub = rl.take_groups(batch, np.array([0, 2]), 3)
  assert sub["tokens"].shape == (2, row_len) and sub["loss_mask"].shape == (6, seq_len)
  np.testing.assert_array_equal(sub["loss_mask"][3:], plain["loss_mask"][6:9])
  with pytest.raises(ValueError, match="prompt 2 of the rollout: 8 prompt tokens .* do not fit a row of 23"):
    rl.group_layout(prompts, completions, 3, seq_len, 23, pad_id=0)  # group 2 needs 7 + 8 + 3 + 6 = 24


def test_group_rows_are_trimmed_to_the_longest_group_in_buckets(monkeypatch):
  """A rollout's rows are as long as its longest group needs, rounded up to ROW_BUCKET, capped at the budget
  (group_row_len); the trimmed rows give every sample the same log-probs as the full-length ones."""
  monkeypatch.setattr(rl, "ROW_BUCKET", 8)
  prompts = [(1, 2, 3), (4,)]
  completions = [np.array([5, 6]), np.array([7]), np.array([8, 9, 10]), np.array([11]), np.array([12]), np.array([13])]
  most = rl.group_row_len(8, 7, 3)  # 31
  assert rl.trimmed_row_len(prompts, completions, 3, most) == 16  # group 0 needs 2 + 3 + 2 + 4 = 11
  assert rl.trimmed_row_len(prompts, completions[:3] + [np.arange(1, 8)] * 3, 3, most) == 24  # 0 + 3 x 8
  assert rl.trimmed_row_len([(1,) * 8], [np.arange(1, 8)] * 3, 3, most) == most  # the budget itself: 31, not 32
  full = rl.group_layout(prompts, completions, 3, 10, most, pad_id=0)
  trimmed = rl.group_layout(prompts, completions, 3, 10, 16, pad_id=0)
  np.testing.assert_array_equal(trimmed["tokens"], full["tokens"][:, :16])
  assert not full["segment_ids"][:, 16:].any()
  w, mask = _weights(), full["loss_mask"]
  np.testing.assert_allclose(np.asarray(grpo_lib.sample_logprobs(MODEL, w, None, trimmed, None)) * mask,
                             np.asarray(grpo_lib.sample_logprobs(MODEL, w, None, full, None)) * mask, atol=1e-5)


def test_shared_prompt_rows_give_each_sample_its_own_rows_log_probs_loss_and_gradient():
  """prompt_layout: each prompt once (left-padded into a KV cache), its completions as rows behind it; per sample
  exactly the log-probs of its own row (`layout`), and the grpo loss and its gradient those of the plain rows (the
  gradient reaches the prompt through every copy of its cache); take_groups keeps prompts and samples together."""
  rng = np.random.default_rng(0)
  prompts = [(1, 2, 3), (4,), tuple(rng.integers(1, 64, 8))]
  completions = [np.array([5, 6]), np.array([7]), np.array([8, 9, 10]),
                 np.array([11, 12]), np.array([13]), np.array([14, 15, 16, 17]),
                 rng.integers(1, 64, 7), rng.integers(1, 64, 2), rng.integers(1, 64, 5)]
  batch = rl.prompt_layout(prompts, completions, 3, max_prompt_len=8, max_new_tokens=7, pad_id=0,
                           completion_logprobs=[np.full(len(c), -1.0) for c in completions])
  assert batch["prompt_tokens"].shape == (3, 7) and batch["tokens"].shape == (9, 7)  # widths capped: 8 - 1, 7
  np.testing.assert_array_equal(batch["prompt_tokens"][0], [0, 0, 0, 0, 0, 1, 2])
  np.testing.assert_array_equal(batch["prompt_positions"][0], [0, 0, 0, 0, 0, 0, 1])
  np.testing.assert_array_equal(batch["prompt_segments"][1], [0] * 7)  # a one-token prompt: all in the rows
  np.testing.assert_array_equal(batch["tokens"][2, :4], [3, 8, 9, 0])
  np.testing.assert_array_equal(batch["targets"][2, :4], [8, 9, 10, 0])
  np.testing.assert_array_equal(batch["positions"][2, :3], [2, 3, 4])
  np.testing.assert_array_equal(batch["loss_mask"][2], [1, 1, 1, 0, 0, 0, 0])
  np.testing.assert_array_equal(batch["sampler_logprobs"][2], [-1, -1, -1, 0, 0, 0, 0])
  assert rl.trained_tokens(batch) == 2 + 0 + 7 + sum(len(c) for c in completions)
  plain = rl.layout([p for p in prompts for _ in range(3)], completions, 15, pad_id=0)
  w = _weights()
  by_rows = np.asarray(_logp(w, plain)) * plain["loss_mask"]
  shared = np.asarray(grpo_lib.sample_logprobs(MODEL, w, None, batch, None)) * batch["loss_mask"]
  for j, (p, c) in enumerate(zip([p for p in prompts for _ in range(3)], completions)):
    np.testing.assert_allclose(shared[j, :len(c)], by_rows[j, len(p) - 1:len(p) - 1 + len(c)], atol=1e-5)
  advantages = rng.normal(size=9).astype(np.float32)
  ref_shift = {"plain": plain, "shared": batch}
  for b in ref_shift.values():
    b["advantages"] = advantages
    b["ref_logprobs"] = np.zeros_like(b["loss_mask"]) - 3.0 * b["loss_mask"]
    b.setdefault("sampler_logprobs", np.zeros_like(b["loss_mask"]))
  loss_plain, _, grads_plain = _loss_and_grads(w, plain, kl_beta=0.04)
  loss_shared, _, grads_shared = _loss_and_grads(w, batch, kl_beta=0.04)
  assert float(loss_shared) == pytest.approx(float(loss_plain), abs=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5), grads_shared, grads_plain)
  sub = rl.take_groups(batch, np.array([0, 2]), 3)
  assert sub["prompt_tokens"].shape == (2, 7) and sub["tokens"].shape == (6, 7)
  np.testing.assert_array_equal(sub["loss_mask"][3:], batch["loss_mask"][6:9])
  with pytest.raises(ValueError, match="completion 5 of the rollout: 4 tokens exceed max_new_tokens = 3"):
    rl.prompt_layout(prompts, completions, 3, max_prompt_len=8, max_new_tokens=3, pad_id=0)


# --------------------------------------------------------------------------------------------------- loss

@functools.lru_cache(maxsize=None)
def _logp_fn():
  return jax.jit(lambda w, b: target_logprobs(MODEL, w, None, b, None)[0])


def _logp(weights, batch):
  return _logp_fn()(weights, batch)


@functools.lru_cache(maxsize=None)
def _grad_fn(loss_agg="seq_mean", clip_eps_high=0.0, kl_beta=0.0):
  """Jitted value_and_grad of the grpo loss, compiled once per setting (compiles dominate on a busy CPU)."""
  cfg = _cfg(loss_agg=loss_agg, clip_eps_high=clip_eps_high, kl_beta=kl_beta)
  fn = functools.partial(grpo_lib.grpo_loss, model=MODEL, cfg=cfg)
  return jax.jit(jax.value_and_grad(fn, has_aux=True))


def _loss_and_grads(weights, batch, **settings):
  (loss, metrics), grads = _grad_fn(**settings)({"model": weights}, {}, batch, None)
  return loss, metrics, grads["model"]


@functools.lru_cache(maxsize=None)
def _weights(seed=0):
  init = jax.jit(lambda key: nn.meta.unbox(MODEL.init(key, jnp.zeros((1, 8), jnp.int32))["params"]))
  return init(jax.random.PRNGKey(seed))


def _cfg(**rl_overrides):
  r = dict(clip_eps=0.2, clip_eps_high=0.0, kl_beta=0.0, loss_agg="seq_mean")
  r.update(rl_overrides)
  return ml_collections.ConfigDict({"loss": {"chunk_size": 0}, "rl": r, "sampling": {"max_new_tokens": 8}})


def _batch(weights, advantages=(1.0, -0.5, 2.0, 0.0), old_shift=0.0, ref=None):
  rng = np.random.default_rng(0)
  tokens = rng.integers(1, CFG.vocab_size, (4, 12)).astype(np.int32)
  mask = np.zeros((4, 12), np.float32)
  mask[0, 3:9], mask[1, 5:7], mask[2, 2:12] = 1, 1, 1  # row 3 has no completion tokens at all
  batch = {"tokens": tokens, "targets": np.roll(tokens, -1, axis=1), "loss_mask": mask,
           "advantages": np.asarray(advantages, np.float32)}
  logp = np.asarray(_logp(weights, batch))
  batch["old_logprobs"] = (logp - old_shift) * mask
  batch["sampler_logprobs"] = logp * mask
  batch["ref_logprobs"] = (logp if ref is None else np.asarray(_logp(ref, batch))) * mask
  return batch


def _hand_pg(weights, batch, how):
  """-aggregate(A * log pi) written out by hand: the plain policy gradient objective."""
  logp = target_logprobs(MODEL, weights, None, batch, None)[0]
  m, a = jnp.asarray(batch["loss_mask"]), batch["advantages"][:, None]
  per_token = -a * logp * m
  if how == "token_mean":
    return per_token.sum() / m.sum()
  if how == "constant":
    return per_token.sum() / (4 * 8)
  counts = batch["loss_mask"].sum(1)
  rows = [i for i in range(4) if counts[i] > 0]
  return sum(per_token[i].sum() / counts[i] for i in rows) / len(rows)


@pytest.mark.parametrize("how", grpo_lib.LOSS_AGGS)
def test_loss_is_the_plain_policy_gradient_when_the_ratio_is_one_and_beta_is_zero(how):
  w = _weights()
  batch = _batch(w)
  loss, metrics, grads = _loss_and_grads(w, batch, loss_agg=how)
  hand_grads = jax.jit(jax.grad(lambda weights: _hand_pg(weights, batch, how)))(w)  # batch static: numpy
  jax.tree.map(lambda g, h: np.testing.assert_allclose(g, h, rtol=1e-4, atol=1e-7), grads, hand_grads)
  assert max(abs(x).max() for x in jax.tree.leaves(grads)) > 1e-3  # a real, non-zero gradient
  np.testing.assert_allclose(metrics["ratio_mean"], 1.0, atol=1e-6)
  assert float(metrics["clip_frac"]) == 0.0
  # The value: -aggregate(A) since ratio = 1 (seq_mean: mean of per-row A over rows with tokens).
  want = {"seq_mean": -(1.0 - 0.5 + 2.0) / 3, "token_mean": -(6 * 1.0 - 2 * 0.5 + 10 * 2.0) / 18,
          "constant": -(6 * 1.0 - 2 * 0.5 + 10 * 2.0) / 32}[how]
  np.testing.assert_allclose(loss, want, rtol=1e-5)
  # The entropy estimate is -mean log pi of the sampled tokens.
  logp = np.asarray(_logp(w, batch))
  np.testing.assert_allclose(metrics["entropy"], -(logp * batch["loss_mask"]).sum() / 18, rtol=1e-5)


@pytest.mark.parametrize("how", grpo_lib.LOSS_AGGS)
def test_without_old_logprobs_the_policy_itself_is_pi_old(how):
  """One optimizer step per rollout: the batch has no old_logprobs and the loss, its gradient and metrics
  equal those with old_logprobs = log pi (the forward pass the rollout skips)."""
  w = _weights()
  batch = _batch(w, ref=_weights(1))
  on_policy = {k: v for k, v in batch.items() if k != "old_logprobs"}
  loss, metrics, grads = _loss_and_grads(w, batch, loss_agg=how, kl_beta=0.1)
  loss_on, metrics_on, grads_on = _loss_and_grads(w, on_policy, loss_agg=how, kl_beta=0.1)
  np.testing.assert_allclose(loss_on, loss, rtol=1e-6)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-8), grads_on, grads)
  assert float(metrics_on["ratio_max"]) == 1.0 == float(metrics_on["ratio_min"])
  assert float(metrics_on["sampler_logp_gap"]) < 1e-6  # the batch's sampler log-probs are log pi here
  shifted = {**on_policy, "sampler_logprobs": on_policy["sampler_logprobs"] - 0.25 * on_policy["loss_mask"]}
  np.testing.assert_allclose(_loss_and_grads(w, shifted)[1]["sampler_logp_gap"], 0.25, rtol=1e-4)


@pytest.mark.parametrize("shift, advantage", [(0.5, 1.0), (-0.5, -1.0)])
def test_clipping_zeroes_the_gradient_outside_the_trust_region(shift, advantage):
  w = _weights()
  # ratio = exp(shift) = 1.65 with A > 0, or 0.61 with A < 0: beyond the clip in the direction A pushes.
  batch = _batch(w, advantages=(advantage,) * 4, old_shift=shift)
  _, metrics, grads = _loss_and_grads(w, batch)
  assert all(not np.asarray(g).any() for g in jax.tree.leaves(grads)), "clipped tokens must get no gradient"
  assert float(metrics["clip_frac"]) == 1.0
  # The same ratio with the opposite advantage is not clipped (the objective still gets worse): gradient.
  _, metrics, grads = _loss_and_grads(w, {**batch, "advantages": -batch["advantages"]})
  assert any(np.asarray(g).any() for g in jax.tree.leaves(grads)) and float(metrics["clip_frac"]) == 0.0
  if shift > 0:  # a separate, higher upper clip (DAPO's clip-higher) lets ratio 1.65 through
    _, _, grads = _loss_and_grads(w, batch, clip_eps_high=0.7)
    assert any(np.asarray(g).any() for g in jax.tree.leaves(grads))


def test_kl_is_zero_when_policy_equals_reference_and_positive_otherwise():
  w = _weights()
  batch = _batch(w, advantages=(0.0,) * 4)
  loss, metrics, grads = _loss_and_grads(w, batch, kl_beta=1.0)
  assert abs(float(metrics["kl"])) < 1e-6 and abs(float(loss)) < 1e-6
  assert max(abs(x).max() for x in jax.tree.leaves(grads)) < 1e-5  # KL is at its minimum
  other = _batch(w, advantages=(0.0,) * 4, ref=_weights(1))
  loss, metrics, _ = _loss_and_grads(w, other, kl_beta=1.0)
  assert float(metrics["kl"]) > 1e-3 and float(loss) > 0


def test_a_batch_with_no_completion_tokens_gives_zero_not_nan():
  w = _weights()
  batch = _batch(w)
  batch["loss_mask"] = np.zeros_like(batch["loss_mask"])
  for settings in ({"loss_agg": "token_mean"}, {"loss_agg": "constant"}, {"kl_beta": 1.0}):
    loss, metrics, _ = _loss_and_grads(w, batch, **settings)
    assert float(loss) == 0.0 and all(np.isfinite(float(v)) for v in metrics.values())


# ------------------------------------------------------------------------------------------------ rewards

def test_gsm8k_reward_on_tricky_strings():
  cases = [("so the total is #### 1,234", "1234", 1), ("She pays $18.00.", "18", 1), ("18.", "18", 1),
           ("#### -3", "-3", 1), ("Answer: 3", "-3", 0), ("no number here", "5", 0), ("#### 2.50", "2.5", 1),
           ("7 + 5 = 12\n#### 12", "12", 1), ("#### 12 but the last number is 13", "12", 1),
           ("first 4 then 9", "9", 1), ("", "0", 0)]
  texts, refs, want = zip(*cases)
  got = rewards.gsm8k(list(texts), [{"answer": r} for r in refs])
  np.testing.assert_array_equal(got, np.array(want, np.float32))
  # exact_answer is strict: the number must follow the last "####".
  strict = rewards.exact_answer(["18", "#### 18", "#### 7 then #### 18", "####18 apples"], [{"answer": "18"}] * 4)
  np.testing.assert_array_equal(strict, [0, 1, 1, 1])
  np.testing.assert_array_equal(rewards.answer_format(["#### 5", "5", "#### x"], [{}] * 3), [1, 0, 0])


def test_a_broken_reward_gets_an_error_naming_it():
  def raises(c, r):
    raise KeyError("answer")

  refs = [{"answer": "1"}] * 3
  bad = {"raises": raises, "nan": lambda c, r: np.array([0.0, np.nan, 1.0]),
         "shape": lambda c, r: np.zeros((3, 1)), "text": lambda c, r: ["a", "b", "c"]}
  messages = {"raises": "reward 'raises' raised KeyError", "nan": "reward 'nan' returned a non-finite value",
              "shape": r"reward 'shape' returned shape \(3, 1\)", "text": "reward 'text' returned list"}
  for name, fn in bad.items():
    combined = rewards.Combined({"format": 0.1, name: 1.0}, {"format": rewards.answer_format, name: fn})
    with pytest.raises(rewards.RewardError, match=messages[name]):
      combined(["a", "b", "c"], refs)
  total, parts = rewards.Combined({"format": 0.5, "gsm8k": 1.0}, {"format": rewards.answer_format,
                                                                  "gsm8k": rewards.gsm8k})(["#### 1", "2", "1"], refs)
  np.testing.assert_allclose(total, [1.5, 0.0, 1.0])
  assert set(parts) == {"format", "gsm8k"}
  assert rewards.parse("exact_answer:1.0, format:0.1,gsm8k") == {"exact_answer": 1.0, "format": 0.1, "gsm8k": 1.0}
  with pytest.raises(rewards.RewardError, match="config.rl.rewards: unknown reward 'exact'"):
    rewards.parse("exact:1")
  with pytest.raises(rewards.RewardError, match="weight of 'format' is not a number"):
    rewards.parse("format:high")


# ------------------------------------------------------------------------------------------------- config

def test_config_follows_rl_keys_and_refuses_steps_that_split_a_rollout(tmp_path, tokenizer_dir):
  from jaxllm.losses.grpo import validate

  config = tiny_config("grpo", tmp_path, tokenizer_dir, **{"rl.group_size": 6, "rl.minibatches": 2})
  assert config.data.batch_size == 4 * 6 // 2 and config.data.seq_len == 64 + 16  # derived, not stale
  config.checkpoint.every = 2
  config.steps = 4
  validate(config)
  config.rl.ppo_epochs = 2  # 4 optimizer steps per rollout: checkpoints every 2 would split one
  with pytest.raises(ConfigError, match=r"config.checkpoint.every: 2 is not a multiple of rl.ppo_epochs \* "
                                        r"rl.minibatches = 4"):
    validate(config)
  config.checkpoint.every, config.steps = 4, 6
  with pytest.raises(ConfigError, match="config.steps: 6 is not a multiple"):
    validate(config)
  config.steps = 8
  config.data.batch_size = 5
  with pytest.raises(ConfigError, match="config.data.batch_size: 5 != rl.prompts_per_step"):
    validate(config)
  config.data.batch_size = 12
  for key, value, match in [("rl.loss_agg", "mean", "rl.loss_agg"), ("rl.rewards", "nope:1", "rl.rewards"),
                            ("rl.rewards", "reward_model:1", "rl.reward_model"), ("rl.group_size", 1, "group_size")]:
    broken = ml_collections.ConfigDict(config.to_dict())
    broken.rl[key.split(".")[1]] = value
    with pytest.raises(ConfigError, match=match):
      validate(broken)


def test_gsm8k_prompts_carry_the_format_instruction(shared_data):
  import importlib
  from jaxllm.data.prompts import load_prompts

  config = importlib.import_module("configs.grpo_gsm8k").get_config("tiny")
  config.unlock()  # the config reads hf:openai/gsm8k (network); the same splits offline:
  config.data.update(name="gsm8k_train", dataset_info=str(shared_data / "dataset_info.json"), eval_split="")
  config.rl.eval_data = "gsm8k_test"
  train_records, held, source, _ = load_prompts(config)
  assert len(train_records) == 64 and len(held) == 4 and "train.jsonl" in source
  first = train_records[0]
  assert first["messages"][0] == {"role": "system", "content": config.sampling.system}
  assert "#### <number>" in config.sampling.system
  assert first["messages"][1]["content"].startswith("Natalia sold clips") and first["answer"] == "72"


# ---------------------------------------------------------------------------------------------- end to end

@pytest.fixture(scope="module")
def pretrained(tmp_path_factory, tokenizer_dir):
  from jaxllm.stages import pretrain
  workdir = tmp_path_factory.mktemp("pt")
  pretrain.run(tiny_config("pretrain", workdir, tokenizer_dir, steps=5, **{"sample.num": 0}))
  return str(workdir)


def test_a_lora_grpo_step_changes_only_the_adapters(tmp_path, tokenizer_dir, pretrained):
  from jaxllm.data import synthetic

  env = runtime.prepare(tiny_config("grpo", tmp_path, tokenizer_dir, init_from=pretrained,
                                    **{"lora.rank": 4, "rl.kl_beta": 0.1}))
  optim = ml_collections.ConfigDict(env.config.optim.to_dict())
  optim.warmup_steps = 0
  tx = make_optimizer(optim, 10)
  state, _ = train.init_state(env, train.Task(loss="grpo", batches=None), tx)
  prompts, _ = rl.encode_prompts(env.tokenizer, synthetic.rl_prompts(0, "train", 8), env.config.rl.max_prompt_len)
  source = rl.RolloutSource(env, prompts, rewards.build(env.config.rl), shared_prompt=True)  # as the stage's
  with env.mesh_context():
    batch = source.next(state)
  stats = source.host_metrics()
  (_, q), (rows, c) = batch["prompt_tokens"].shape, batch["tokens"].shape
  assert batch["prompt_tokens"].shape[0] == 4 and rows == 16 and batch["loss_mask"].shape == (16, c)
  # each width trimmed to what the rollout holds: the longest prompt (but its last token), the longest completion
  assert q == 63 or (q % rl.COLUMN_BUCKET == 0 and (batch["prompt_segments"] > 0).sum(1).max() > q - rl.COLUMN_BUCKET)
  assert c == 16 and batch["loss_mask"].sum(1).max() > c - rl.COLUMN_BUCKET
  assert stats["row_len"] == q + c
  assert batch["advantages"].shape == (16,)  # 4 prompts x 4 samples: each prompt run once
  assert 0.0 <= stats["truncated"] <= 1.0 and stats["completion_len"] > 0  # cut-off replies are scored, no crash
  assert "old_logprobs" not in batch  # one optimizer step per rollout: the loss's own log pi is pi_old
  # Fresh adapters: pi = ref, so the cached sampler's log-probs must match the training forward's.
  np.testing.assert_allclose(batch["sampler_logprobs"], batch["ref_logprobs"], atol=1e-4)
  assert np.abs(batch["sampler_logprobs"]).sum() > 0
  assert source.get_state() == {"rollouts": 1, "served": 1}
  with pytest.raises(ValueError, match="into a rollout"):  # only rollout boundaries resume exactly
    source.set_state({"rollouts": 3, "served": 0})
  batch["advantages"] = np.where(np.arange(16) % 2 == 0, 1.0, -1.0).astype(np.float32)  # signal either way

  before = jax.device_get((state.params, state.frozen))
  step = jax.jit(train.make_train_step(env, "grpo", tx, lambda s: 1e-2))
  with env.mesh_context():
    for _ in range(2):  # the first step moves only b (b = 0 at init, so a's gradient is 0), the second also a
      state, metrics = step(state, batch)
  params, frozen = jax.device_get((state.params, state.frozen))
  jax.tree.map(np.testing.assert_array_equal, frozen, before[1])  # base = reference: untouched, bitwise
  assert set(params) == {"lora"}
  assert all(jax.tree.leaves(jax.tree.map(lambda a, b: not np.array_equal(a, b), params, before[0])))
  assert np.isfinite(float(metrics["loss"])) and float(metrics["kl"]) > 0

  # Two optimizer steps per rollout: old log-probs are computed once, by the training forward.
  env.config.rl.ppo_epochs = 2
  source = rl.RolloutSource(env, prompts, rewards.build(env.config.rl))
  with env.mesh_context():
    batch = source.next(state)
  np.testing.assert_allclose(batch["old_logprobs"], batch["sampler_logprobs"], atol=1e-4)
  # One row per sample (rl.group_rows=False): the plain layout, the same per-sample arrays.
  env.config.rl.group_rows = False
  source = rl.RolloutSource(env, prompts, rewards.build(env.config.rl))
  with env.mesh_context():
    batch = source.next(state)
  assert batch["tokens"].shape == (16, 80) and "side_index" not in batch
  np.testing.assert_allclose(batch["old_logprobs"], batch["sampler_logprobs"], atol=1e-4)
  with env.mesh_context():
    _, metrics = step(state, batch)
  assert np.isfinite(float(metrics["loss"]))


def test_tiny_grpo_run_end_to_end_and_exact_resume(tmp_path, tokenizer_dir, pretrained):
  from jaxllm.stages import grpo

  common = {"init_from": pretrained, "rl.rewards": "test_fives:1.0,format:0.1", "rl.truncation_penalty": 0.5,
            "optim.lr": 3e-3,
            "optim.warmup_steps": 1, "optim.decay_steps": 4, "log.every": 1, "sample.num": 0}
  summary = grpo.run(tiny_config("grpo", tmp_path / "straight", tokenizer_dir, **common))
  assert summary["step"] == 4 and summary["rollouts"] == 4 and 0 <= summary["eval_accuracy"] <= 1
  rows = read_metrics(str(tmp_path / "straight"))
  train_rows = [r for r in rows if r["split"] == "train"]
  assert [r["step"] for r in train_rows] == [1, 2, 3, 4]
  keys = {"loss", "kl", "clip_frac", "entropy", "reward_mean", "reward_std", "reward_test_fives", "reward_format",
          "completion_len", "truncated", "zero_signal_groups", "rollout_sec", "update_sec", "tokens_per_sec"}
  assert keys <= set(train_rows[-1])
  # trained tokens per second, the last step's too (it read 0 when each row counted the next step's tokens)
  assert all(r["tokens_per_sec"] > 0 for r in train_rows) and summary["train_tokens_per_sec"] > 0
  assert [r["rollouts"] for r in train_rows] == [1, 2, 3, 4]  # each line describes its own rollout
  assert any(r["reward_std"] > 0 for r in train_rows) and any(r["grad_norm"] > 0 for r in train_rows)
  for r in train_rows:  # replies cut at max_new_tokens are scored (not crashed) and lose the penalty
    want = r["reward_test_fives"] + 0.1 * r["reward_format"] - 0.5 * r["truncated"]
    assert r["reward_mean"] == pytest.approx(want, abs=1e-5)
  assert any(r["truncated"] > 0 for r in train_rows)
  eval_rows = [r for r in rows if r["split"] == "eval"]
  assert [r["step"] for r in eval_rows] == [2, 4] and {"accuracy", "answer_format"} <= set(eval_rows[-1])

  # Stopped after 2 steps and resumed: the same rollouts and the same losses as the uninterrupted run.
  grpo.run(tiny_config("grpo", tmp_path / "resumed", tokenizer_dir, steps=2, **common))
  grpo.run(tiny_config("grpo", tmp_path / "resumed", tokenizer_dir, **common))
  again = [r for r in read_metrics(str(tmp_path / "resumed")) if r["split"] == "train"]
  for key in ("loss", "reward_mean", "completion_len", "kl"):
    assert [r[key] for r in again] == [r[key] for r in train_rows], key
