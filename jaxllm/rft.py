"""Rejection-sampling fine-tuning (expert iteration): each round samples rft.samples answers to each of
rft.problems_per_round problems with the current policy, keeps the verified-correct ones, and serves them as
SFT rows for rft.steps_per_round optimizer steps; then the next round samples with the updated policy.

Sampling is the GRPO rollout's: one `sampling.generate` call with samples_per_prompt = k over chat-template
prompts (`rl.encode_prompts`), replies scored by `rewards.Combined` on their text without the stop token, and
rows laid out by `rl.layout` (prompt, then the sampled tokens, stop token included, in the loss mask). An answer
is kept when it stopped (a truncated reply is not a finished answer) and the reward named by rft.verifier scores
it >= rft.threshold. Identical answers to one problem count once. Of a problem's kept answers, rft.keep picks:
  shortest  the shortest first (ties in sample order): "keep the right and shortest ones"
  first     in sample order
  all       every distinct correct answer
at most rft.max_keep_per_problem of them (0 = no cap).

Resume: the data state holds the round, the steps served from it and the round's kept rows (token ids), so a
run killed anywhere continues at the same step of the same round with the same rows, without sampling again
from a policy that no longer exists.
"""
from __future__ import annotations

import dataclasses
import time
from typing import Any

import jax
import numpy as np

from jaxllm import chat_template, rl, sampling
from jaxllm.rewards import Combined
from jaxllm.state import TrainState, policy_weights

KEEP_RULES = ("shortest", "first", "all")
_SAMPLE_STREAM = 0x2F7  # fold_in constant naming RFT's sampling stream of the seed's root key


def select(correct_G: np.ndarray, lengths_G: np.ndarray, completions: list[tuple[int, ...]], rule: str,
           max_keep: int) -> list[int]:
  """Indices (into one problem's G samples) of the answers to train on: the correct ones, each distinct
  completion once, ordered by `rule` (KEEP_RULES), at most max_keep (0 = all)."""
  if rule not in KEEP_RULES:
    raise ValueError(f"config.rft.keep: {rule!r} is not one of {KEEP_RULES}")
  seen, picked = set(), []
  for g in np.flatnonzero(correct_G):
    if completions[g] not in seen:
      seen.add(completions[g])
      picked.append(int(g))
  if rule == "shortest":
    picked.sort(key=lambda g: (int(lengths_G[g]), g))  # stable on sample order
  return picked[:max_keep] if max_keep > 0 else picked


@dataclasses.dataclass
class Round:
  rows: list[tuple[tuple[int, ...], tuple[int, ...]]]  # kept (prompt ids, completion ids incl. stop token)
  stats: dict[str, float]


def sample_round(env, state: TrainState, prompts: list[rl.Prompt], rewards: Combined, rng: jax.Array) -> Round:
  """k samples of each prompt with the policy of `state`, scored; the kept rows and the round's statistics."""
  c, f, tok = env.config, env.config.rft, env.tokenizer
  t0 = time.perf_counter()
  k = f.samples
  params = sampling.params_from(c.sampling, stop_ids=chat_template.stop_ids(tok), vocab_limit=tok.n_vocab)
  weights, lora = policy_weights(state.params, state.frozen)
  gen = sampling.generate(env.model, weights, [list(p.ids) for p in prompts], params, rng, lora=lora,
                          pad_id=tok.pad_id, samples_per_prompt=k)
  completions = [tuple(int(t) for t in gen.tokens[i, :gen.lengths[i]]) for i in range(len(gen.lengths))]
  texts = [tok.decode(list(c_[:-1]) if s else list(c_)) for c_, s in zip(completions, gen.stopped)]
  refs = [{**prompts[i // k].record, "truncated": not bool(gen.stopped[i])} for i in range(len(completions))]
  total, parts = rewards(texts, refs)
  if f.verifier not in parts:
    raise ValueError(f"config.rft.verifier: {f.verifier!r} is not one of the rewards in rl.rewards ({sorted(parts)})")
  correct = (parts[f.verifier] >= f.threshold) & gen.stopped
  rows, solved = [], 0
  for i, p in enumerate(prompts):
    span = slice(i * k, (i + 1) * k)
    picked = select(correct[span], gen.lengths[span], completions[span], f.keep, f.max_keep_per_problem)
    solved += bool(picked)
    rows += [(p.ids, completions[i * k + g]) for g in picked]
  lengths = gen.lengths.astype(np.float64)
  stats = {"reward_mean": float(total.mean()), **{f"reward_{n}": float(v.mean()) for n, v in parts.items()},
           "correct_frac": float(correct.mean()), "solved_frac": solved / len(prompts),
           "kept_rows": float(len(rows)), "completion_len": float(lengths.mean()),
           "kept_len": float(np.mean([len(r[1]) for r in rows])) if rows else 0.0,
           "round_sampled_tokens": float(lengths.sum()), "rollout_sec": time.perf_counter() - t0}
  return Round(rows, stats)


class RoundSource:
  """A train.BatchSource: a round of sampling every rft.steps_per_round optimizer steps, then data.batch_size
  kept rows a step, walking a fresh seeded permutation of the round's rows each pass."""

  def __init__(self, env, prompts: list[rl.Prompt], rewards: Combined):
    if not prompts:
      raise ValueError("rft: no training prompts")
    c = env.config
    self.env, self.prompts, self.rewards = env, prompts, rewards
    self.f, self.seed = c.rft, c.seed
    self.round = 0  # rounds sampled so far
    self.served = 0  # steps served from the current round
    self.rows: list[tuple[tuple[int, ...], tuple[int, ...]]] = []
    self.sampled_tokens = 0.0  # completion tokens sampled by the whole run (resumed with it)
    self.last_stats: dict[str, float] = {}

  def _prompt_at(self, position: int) -> rl.Prompt:
    n = len(self.prompts)
    epoch, i = divmod(position, n)
    return self.prompts[int(np.random.default_rng([self.seed, epoch]).permutation(n)[i])]

  def _new_round(self, state: TrainState) -> None:
    p = self.f.problems_per_round
    prompts = [self._prompt_at(self.round * p + j) for j in range(p)]
    key = jax.random.fold_in(jax.random.fold_in(jax.random.PRNGKey(self.seed), _SAMPLE_STREAM), self.round)
    got = sample_round(self.env, state, prompts, self.rewards, key)
    if not got.rows:
      self.env.log(f"rft: round {self.round + 1} kept no answer (none of {p} problems x {self.f.samples} samples "
                   f"verified by {self.f.verifier!r}): its {self.f.steps_per_round} steps train on nothing. Start "
                   "from an SFT model (init_from) or raise rft.samples")
    self.rows, self.round, self.served = got.rows, self.round + 1, 0
    self.sampled_tokens += got.stats["round_sampled_tokens"]
    self.last_stats = {**got.stats, "round": float(self.round)}

  def _batch(self, step_in_round: int) -> dict[str, np.ndarray]:
    b, n = self.env.config.data.batch_size, len(self.rows)
    if n == 0:  # a round that kept nothing: rows of the first prompt alone, all outside the loss mask
      return rl.layout([self.prompts[0].ids] * b, [np.zeros(0, np.int32)] * b, self.env.config.data.seq_len,
                       self.env.tokenizer.pad_id)
    picks = []
    for slot in range(step_in_round * b, (step_in_round + 1) * b):
      epoch, i = divmod(slot, n)
      picks.append(int(np.random.default_rng([self.seed, self.round, epoch]).permutation(n)[i]))
    rows = [self.rows[i] for i in picks]
    return rl.layout([r[0] for r in rows], [np.asarray(r[1], np.int32) for r in rows],
                     self.env.config.data.seq_len, self.env.tokenizer.pad_id)

  def next(self, state: TrainState) -> dict[str, np.ndarray]:
    if self.round == 0 or self.served == self.f.steps_per_round:
      self._new_round(state)
    batch = self._batch(self.served)
    self.served += 1
    return batch

  def get_state(self) -> dict[str, Any]:
    return {"round": self.round, "served": self.served, "sampled_tokens": self.sampled_tokens,
            "stats": self.last_stats, "rows": [[list(p), list(c)] for p, c in self.rows]}

  def set_state(self, state: dict) -> None:
    self.round, self.served = int(state["round"]), int(state["served"])
    self.sampled_tokens, self.last_stats = float(state["sampled_tokens"]), dict(state["stats"])
    self.rows = [(tuple(p), tuple(c)) for p, c in state["rows"]]

  def host_metrics(self) -> dict[str, float]:
    return {**self.last_stats, "sampled_tokens": self.sampled_tokens}
