"""PPO's per-token rewards and advantages on the host, over a rollout's per-sample rows [R, L] (rl.layout's
view: a sample's completion targets are one contiguous run of loss_mask per row).

InstructGPT's shaping (Ouyang et al. 2022; Stiennon et al. 2020): every completion token t is rewarded
  r_t = -kl_coef * (log pi_old(t) - log pi_ref(t))        the sampled-token (k1) estimate of KL(pi_old || ref)
and the sequence's score (reward model and/or verifiable rewards) is added at its last token. Generalised
advantage estimation (Schulman et al. 2016) then runs backwards over each row's completion:
  delta_t = r_t + gamma * V_{t+1} - V_t,   A_t = delta_t + gamma * lambda * A_{t+1},   returns_t = A_t + V_t
with V and A after the last token 0 (the episode ends there). V_t is the value of the state before token t
(the value head at the position whose target is t, the same position as its log-prob).
"""
from __future__ import annotations

import numpy as np


def last_index(mask_RL: np.ndarray) -> np.ndarray:
  """[R] index of each row's last masked position (-1 for a row with none)."""
  live_RL = mask_RL > 0
  last_R = mask_RL.shape[1] - 1 - np.argmax(live_RL[:, ::-1], axis=1)
  return np.where(live_RL.any(axis=1), last_R, -1)


def shaped_rewards(score_R: np.ndarray, old_logprobs_RL: np.ndarray, ref_logprobs_RL: np.ndarray,
                   mask_RL: np.ndarray, kl_coef: float) -> np.ndarray:
  """[R, L] per-token rewards: -kl_coef * (old - ref) on completion tokens, plus the score at the last one."""
  mask_RL = (mask_RL > 0).astype(np.float64)
  rewards_RL = -kl_coef * (np.asarray(old_logprobs_RL, np.float64) - ref_logprobs_RL) * mask_RL
  last_R = last_index(mask_RL)
  rows = np.flatnonzero(last_R >= 0)
  rewards_RL[rows, last_R[rows]] += np.asarray(score_R, np.float64)[rows]
  return rewards_RL


def advantages(rewards_RL: np.ndarray, values_RL: np.ndarray, mask_RL: np.ndarray, gamma: float,
               lam: float) -> tuple[np.ndarray, np.ndarray]:
  """(GAE advantages [R, L], returns [R, L] = advantages + values), 0 off the mask."""
  live_RL = (mask_RL > 0).astype(np.float64)
  values_RL = np.asarray(values_RL, np.float64) * live_RL
  adv_RL = np.zeros_like(values_RL)
  next_value_R = np.zeros(len(values_RL))
  next_adv_R = np.zeros(len(values_RL))
  for t in range(values_RL.shape[1] - 1, -1, -1):
    delta_R = rewards_RL[:, t] + gamma * next_value_R - values_RL[:, t]
    adv_RL[:, t] = (delta_R + gamma * lam * next_adv_R) * live_RL[:, t]
    # Off the mask (prompt, padding) nothing carries over: the next row position a completion token sees is 0.
    next_value_R, next_adv_R = values_RL[:, t], adv_RL[:, t]
  return adv_RL.astype(np.float32), ((adv_RL + values_RL) * live_RL).astype(np.float32)


def whiten(x_RL: np.ndarray, mask_RL: np.ndarray, eps: float = 1e-8) -> np.ndarray:
  """(x - mean) / std over the masked entries of the whole rollout, 0 off the mask."""
  live = mask_RL > 0
  if not live.any():
    return np.zeros_like(x_RL)
  mean, std = x_RL[live].mean(), x_RL[live].std()
  return np.where(live, (x_RL - mean) / (std + eps), 0.0).astype(np.float32)
