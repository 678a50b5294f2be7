"""PPO: GAE and the KL-shaped rewards against hand computations, the clipped policy and value losses on a tiny
model with set log-probs and values, and a tiny run (separate critic) that resumes exactly."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from conftest import tiny_config
from jaxllm import gae, rewards
from jaxllm.losses import ppo as ppo_lib
from jaxllm.metrics import read_metrics
from jaxllm.model import ModelConfig, Transformer

@rewards.register("test_digit_count")  # gives a barely trained tiny model's replies different scores
def _digit_count(completions, references):
  return np.array([min(sum(ch.isdigit() for ch in c), 4) / 4 for c in completions], np.float32)


CFG = ModelConfig(vocab_size=64, d_model=32, n_layers=1, n_heads=4, n_kv_heads=2, head_dim=8, mlp_dim=64,
                  max_seq_len=32)
MODEL = Transformer(CFG)


def test_kl_shaped_rewards_put_the_score_on_the_last_completion_token():
  mask = np.array([[0, 0, 1, 1, 1, 0], [0, 0, 0, 0, 0, 0], [0, 1, 1, 0, 0, 0]], np.float32)
  old = np.array([[9, 9, -1.0, -2.0, -0.5, 9], [9] * 6, [9, -1.0, -1.0, 9, 9, 9]], np.float32) * (mask + (mask == 0))
  ref = np.array([[0, 0, -1.5, -1.8, -0.6, 0], [0] * 6, [0, -1.0, -3.0, 0, 0, 0]], np.float32)
  got = gae.shaped_rewards(np.array([1.0, 5.0, -1.0]), old, ref, mask, kl_coef=0.1)
  want = np.array([[0, 0, -0.05, 0.02, 1.0 - 0.01, 0], [0] * 6, [0, 0.0, -0.2 - 1.0, 0, 0, 0]])
  np.testing.assert_allclose(got, want, atol=1e-6)  # a row without completion tokens gets nothing, not its score


def test_gae_on_a_small_sequence_by_hand():
  mask = np.array([[0, 0, 1, 1, 1, 0]], np.float32)
  rewards = np.array([[0, 0, -0.05, 0.02, 0.99, 0]])
  values = np.array([[7, 7, 0.3, 0.5, 0.8, 7]])  # off-mask values must not leak in
  adv, ret = gae.advantages(rewards, values, mask, gamma=0.9, lam=0.8)
  # delta_4 = 0.99 - 0.8; delta_3 = 0.02 + 0.9 * 0.8 - 0.5; delta_2 = -0.05 + 0.9 * 0.5 - 0.3; A_t = delta_t + 0.72 A_t+1
  a4 = 0.19
  a3 = 0.24 + 0.72 * a4
  a2 = 0.1 + 0.72 * a3
  np.testing.assert_allclose(adv, [[0, 0, a2, a3, a4, 0]], atol=1e-6)
  np.testing.assert_allclose(ret, [[0, 0, a2 + 0.3, a3 + 0.5, a4 + 0.8, 0]], atol=1e-6)
  _, mc = gae.advantages(rewards, values, mask, gamma=1.0, lam=1.0)  # lambda = gamma = 1: summed future rewards
  np.testing.assert_allclose(mc, [[0, 0, 0.96, 1.01, 0.99, 0]], atol=1e-6)
  white = gae.whiten(np.array([[0, 1.0, 2.0, 3.0]]), np.array([[0, 1, 1, 1]]))
  np.testing.assert_allclose(white, [[0, -1.2247449, 0, 1.2247449]], atol=1e-5)


def _cfg(value_clip):
  return ml_collections.ConfigDict({"loss": {"chunk_size": 0}, "rl": {"clip_eps": 0.2},
                                    "ppo": {"vf_coef": 0.5, "value_clip": value_clip,
                                                                               "value_head_scale": 2.0}})


@pytest.mark.parametrize("value_clip", [0.2, 0.0])
def test_policy_ratio_clip_and_value_clip_by_hand(value_clip):
  weights = nn.meta.unbox(MODEL.init(jax.random.PRNGKey(0), jnp.zeros((1, 8), jnp.int32))["params"])
  value = 0.7  # w = 0: every position's value is value_head_scale (2) x the bias
  params = {"model": weights, "value_head": {"w": jnp.zeros((CFG.d_model,)), "b": jnp.asarray(value / 2)}}
  rng = np.random.default_rng(0)
  tokens = rng.integers(1, CFG.vocab_size, (2, 8)).astype(np.int32)
  mask = np.zeros((2, 8), np.float32)
  mask[0, 2:5], mask[1, 4:6] = 1, 1
  batch = {"tokens": tokens, "targets": np.roll(tokens, -1, axis=1), "loss_mask": mask}
  logp, values = ppo_lib.policy_and_values(MODEL, params, {}, batch, None, value_scale=2.0)
  np.testing.assert_allclose(values, value, atol=1e-6)
  shift = np.array([[0, 0, 0.5, -0.5, 0.05, 0, 0, 0], [0, 0, 0, 0, 0.5, -0.5, 0, 0]], np.float32)
  adv = np.array([[0, 0, 1.0, 1.0, -2.0, 0, 0, 0], [0, 0, 0, 0, -1.0, -1.0, 0, 0]], np.float32)
  old_v = np.full((2, 8), 0.2, np.float32)
  returns = np.array([[0, 0, 1.0, 0.0, 0.8, 0, 0, 0], [0, 0, 0, 0, 0.6, 0.3, 0, 0]], np.float32)
  batch.update(old_logprobs=np.asarray(logp) - shift, advantages=adv, old_values=old_v, returns=returns,
               ref_logprobs=np.asarray(logp))
  loss, m = jax.jit(lambda p, b: ppo_lib.ppo_loss(p, {}, b, None, model=MODEL, cfg=_cfg(value_clip)))(params, batch)

  # Ratios e^0.5, e^-0.5, e^0.05 (row 0), e^0.5, e^-0.5 (row 1), clipped to [0.8, 1.2]: -min(r A, clip(r) A)
  r = np.exp([0.5, -0.5, 0.05, 0.5, -0.5])
  a = np.array([1.0, 1.0, -2.0, -1.0, -1.0])
  pg = -np.minimum(r * a, np.clip(r, 0.8, 1.2) * a)
  assert pg.tolist() == pytest.approx([-1.2, -np.exp(-0.5), 2 * np.exp(0.05), np.exp(0.5), 0.8])
  ret = np.array([1.0, 0.0, 0.8, 0.6, 0.3])
  unclipped = (value - ret) ** 2
  v_clip = 0.2 + np.clip(value - 0.2, -value_clip, value_clip) if value_clip else value  # = 0.4 when clipped
  vf = 0.5 * np.maximum(unclipped, (v_clip - ret) ** 2)
  assert float(m["pg_loss"]) == pytest.approx(pg.mean(), abs=1e-5)
  assert float(m["value_loss"]) == pytest.approx(vf.mean(), abs=1e-5)
  assert float(loss) == pytest.approx(pg.mean() + 0.5 * vf.mean(), abs=1e-5)
  assert float(m["clip_frac"]) == pytest.approx(2 / 5)  # tokens 1 (A > 0, r > 1.2) and 5 (A < 0, r < 0.8)
  assert float(m["value_clip_frac"]) == pytest.approx((((v_clip - ret) ** 2 > unclipped).mean()) if value_clip else 0)
  assert float(m["kl"]) == pytest.approx(0.0, abs=1e-6)


@pytest.mark.slow
def test_tiny_ppo_run_with_a_separate_critic_resumes_exactly(tmp_path, tokenizer_dir, tiny_pretrained):
  from jaxllm.stages import ppo

  common = {"init_from": tiny_pretrained, "ppo.critic": "separate", "rl.rewards": "test_digit_count:1.0", "rl.eval_prompts": 0, "optim.lr": 1e-3,
            "optim.warmup_steps": 1, "optim.decay_steps": 4, "log.every": 1, "sample.num": 0}
  summary = ppo.run(tiny_config("ppo", tmp_path / "straight", tokenizer_dir, **common))
  assert summary["step"] == 4 and summary["rollouts"] == 2 and summary["sampled_tokens"] > 0
  train_rows = [r for r in read_metrics(str(tmp_path / "straight")) if r["split"] == "train"]
  keys = {"loss", "kl", "pg_loss", "value_loss", "clip_frac", "value_clip_frac", "score_mean", "kl_penalty",
          "explained_var", "return_mean", "sampled_tokens", "reward_mean", "completion_len"}
  assert keys <= set(train_rows[-1])
  assert all(np.isfinite(r["loss"]) for r in train_rows)
  # The first rollout's policy is the reference and earns no reward: returns 0. The second's has moved.
  assert train_rows[-1]["value_loss"] > 0 and train_rows[-1]["kl_penalty"] != 0
  assert train_rows[3]["ratio_mean"] != 1.0  # the second pass over a rollout sees the moved policy (step 1: lr 0)

  ppo.run(tiny_config("ppo", tmp_path / "resumed", tokenizer_dir, steps=2, **common))
  ppo.run(tiny_config("ppo", tmp_path / "resumed", tokenizer_dir, **common))
  again = [r for r in read_metrics(str(tmp_path / "resumed")) if r["split"] == "train"]
  for key in ("loss", "value_loss", "reward_mean", "sampled_tokens"):
    assert [r[key] for r in again] == [r[key] for r in train_rows], key
