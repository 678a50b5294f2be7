"""PPO rollouts: GRPO's rollouts (jaxllm/rl.py: sampling, rewards, reference log-probs, the layout) with what
PPO adds on top: the rollout policy's log-probs and values from one pass of the trainee (policy and value head,
`losses.ppo.policy_and_values`), per-token rewards with the KL to the reference folded in, and GAE advantages
and returns (jaxllm/gae.py), whitened over the rollout when ppo.whiten_advantages. The group-relative
advantages rl.py computes are replaced by them; samples still come G a prompt (rl.group_size), which only
decides how prompts are batched. Minibatches, epochs and exact resume at rollout boundaries are rl.py's.
"""
from __future__ import annotations

import time

import jax
import numpy as np

from jaxllm import gae, rl
from jaxllm.losses.ppo import policy_and_values
from jaxllm.state import TrainState


def _values_fn(env):
  """Jitted (log pi [R, L], values [R, L]) of a rollout chunk under the state's params, deterministic, masked."""
  def fn(params, frozen, batch):
    logp, values = policy_and_values(env.model, params, frozen, batch, None, env.config.loss.chunk_size,
                                     env.config.ppo.value_head_scale)
    return logp * batch["loss_mask"], values * batch["loss_mask"]
  return env.jit_cache(("ppo_values",), lambda: jax.jit(fn))


def rollout_values(env, state: TrainState, batch: dict, groups_per_call: int) -> tuple[np.ndarray, np.ndarray]:
  """(old log-probs [R, L], old values [R, L]) over the rollout in chunks of one train batch's groups."""
  fn, g = _values_fn(env), env.config.rl.group_size
  keys = [k for k in (*rl.GROUP_KEYS, "loss_mask") if k in batch]
  logps, values = [], []
  for s in range(0, len(batch["loss_mask"]) // g, groups_per_call):
    chunk = rl.take_groups({k: batch[k] for k in keys}, np.arange(s, s + groups_per_call), g)
    logp, value = jax.device_get(fn(state.params, state.frozen, chunk))
    logps.append(np.asarray(logp))
    values.append(np.asarray(value))
  return np.concatenate(logps), np.concatenate(values)


def add_advantages(batch: dict, old_logprobs_RL: np.ndarray, values_RL: np.ndarray, ppo) -> dict[str, float]:
  """Put PPO's old_logprobs, old_values, advantages and returns into the rollout batch; their statistics."""
  mask_RL = batch["loss_mask"]
  rewards_RL = gae.shaped_rewards(batch["rewards"], old_logprobs_RL, batch["ref_logprobs"], mask_RL, ppo.kl_coef)
  adv_RL, returns_RL = gae.advantages(rewards_RL, values_RL, mask_RL, ppo.gamma, ppo.lam)
  live = mask_RL > 0
  batch.update(old_logprobs=old_logprobs_RL, old_values=values_RL, returns=returns_RL,
               advantages=gae.whiten(adv_RL, mask_RL) if ppo.whiten_advantages else adv_RL)
  kl_R = ((old_logprobs_RL - batch["ref_logprobs"]) * live).sum(axis=1)
  residual = returns_RL[live] - values_RL[live]
  return {"score_mean": float(np.mean(batch["rewards"])), "kl_penalty": float(ppo.kl_coef * kl_R.mean()),
          "value_mean_old": float(values_RL[live].mean()) if live.any() else 0.0,
          "return_mean": float(returns_RL[live].mean()) if live.any() else 0.0,
          # 1 = the values predict the returns; <= 0: no better than their mean
          "explained_var": float(1.0 - residual.var() / max(returns_RL[live].var(), 1e-8)) if live.any() else 0.0}


class PPOSource(rl.RolloutSource):
  """rl.RolloutSource whose rollouts carry PPO's advantages; it also counts the completion tokens the run has
  sampled (`sampled_tokens`, checkpointed with it): the budget RL objectives are compared at."""

  def __init__(self, env, prompts, rewards):
    super().__init__(env, prompts, rewards)
    self.ppo = env.config.ppo
    self.sampled_tokens = 0.0

  def _new_rollout(self, state: TrainState) -> None:
    super()._new_rollout(state)
    t0 = time.perf_counter()
    batch = self.current.batch
    old_logprobs, values = rollout_values(self.env, state, batch, self.rl.prompts_per_step // self.rl.minibatches)
    stats = add_advantages(batch, old_logprobs, values, self.ppo)
    self.sampled_tokens += self.current.stats["completion_len"] * len(batch["loss_mask"])
    self.last_stats.update(stats, value_sec=time.perf_counter() - t0, sampled_tokens=self.sampled_tokens)
    self._update_start = time.perf_counter()

  def get_state(self) -> dict:
    return {**super().get_state(), "sampled_tokens": self.sampled_tokens}

  def set_state(self, state: dict) -> None:
    super().set_state(state)
    self.sampled_tokens = float(state.get("sampled_tokens", 0.0))
