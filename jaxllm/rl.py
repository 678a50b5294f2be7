"""Rollouts for GRPO: sample G completions per prompt with the current policy, score them, turn the scores into
group-relative advantages, and lay everything out as fixed-shape batches for the `grpo` loss.

One rollout = `rl.prompts_per_step` prompts x `rl.group_size` samples = R samples. It feeds
`rl.ppo_epochs * rl.minibatches` optimizer steps of P / minibatches whole groups each (R / minibatches
samples, `data.batch_size`); then the next rollout is drawn with the updated policy.

A group's prompt runs once (rl.group_rows, the default): into a KV cache, copied to its G completions, which
run as rows of their own attending to it (`prompt_layout`, losses/shared_prompt.py), so the forward and
backward passes cost the prompt once per group plus each completion against its prompt and itself: at the GRPO
benchmark's shape (8 prompts of ~56 tokens x 8 samples x 64 tokens) about 2x faster than one branch row per
group (`group_layout`, data/branches.py: P[:-1] | P[-1] c_1 | ... | P[-1] c_G in one row, whose [G * C]^2
attention is mostly masked out) and than a row per sample (the prompt G times). Both widths are trimmed to what
the rollout sampled (the longest prompt and completion, rounded up to COLUMN_BUCKET), so a step trains on the
tokens sampled rather than the budget, and a run compiles a handful of shapes. Every sample's log-probs are
exactly those of its own row. Shapes (P prompts, G group size, R = P*G samples prompt-major, Q / C the trimmed
prompt / completion widths). GRPO's rollouts take it (`RolloutSource(..., shared_prompt=True)`, as the stage
builds it); PPO's (its value head reads branch rows) and those with tool calls (their masks are in a sample
row's columns) keep the branch rows of `group_layout`:

  prompt_tokens, prompt_positions,         [P, Q] int32   each prompt but its last token, left-padded (segment 0)
  prompt_segments
  tokens, targets, positions, segment_ids  [R, C] int32   the prompt's last token then the completion but its
                                                          last; targets the completion; segment 1, 0 on padding
  loss_mask                                [R, C] f32     1 on completion targets (the stop token included)
  old_logprobs, ref_logprobs               [R, C] f32     log pi_old / log pi_ref of each target (0 off-mask);
                                                          old_logprobs only when a rollout feeds > 1 step
  sampler_logprobs                         [R, C] f32     the sampling engine's log p of each target
  advantages                               [R]    f32     (r - mean_group) / (std_group + eps)

With rl.group_rows = False each sample is its own row of L = data.seq_len (`layout`, the per-sample arrays
[R, L]): its prompt repeated in each of its group's rows.

With one optimizer step per rollout (ppo_epochs = minibatches = 1, the default) the policy being updated is
the one that sampled, so the `grpo` loss takes its own log-probs, stop-gradient, as the old ones: the ratio is
exactly 1, and the rollout saves a forward pass over every row. With more steps per rollout the policy moves
between them, and `old_logprobs` are recomputed with one forward pass instead of taken from the sampler: the
sampler runs a KV-cached decode, a different XLA program from the training forward, and its log-probs differ
in the last bits (more under bfloat16). The first optimizer step on a rollout should see a ratio of exactly 1;
with the sampler's numbers it sees noise that the clip then mistakes for policy change. The loss logs the mean
|sampler - training log-prob| as `sampler_logp_gap`, so a broken cache or mask shows up. The sampler's
log-probs are at temperature 1 and so is pi: with sampling.temperature != 1 the samples come from a tempered policy
that the objective treats as pi.
"""
from __future__ import annotations

import dataclasses
import time
from typing import Any

import jax
import numpy as np

from jaxllm import chat_template, sampling, sharding, spmd_sampling
from jaxllm.data import branches
from jaxllm.losses.grpo import sample_logprobs
from jaxllm.losses.shared_prompt import PROMPT_KEYS
from jaxllm.rewards import Combined
from jaxllm.state import TrainState, policy_weights, reference_weights
from jaxllm.tools import loop as tool_loop, rollouts as tool_rollouts

_SAMPLE_STREAM = 0x5A3  # fold_in constant naming the rollout-sampling stream of the seed's root key
GROUP_KEYS = (*branches.ROW_KEYS, "side_index")  # [P, ...] in a group batch; the rest [R, ...]
ROW_BUCKET = 64  # group rows are trimmed to a multiple of this: a handful of compiled shapes in a whole run
COLUMN_BUCKET = 16  # a shared-prompt batch's prompt and completion widths: multiples of this


@dataclasses.dataclass(frozen=True)
class Prompt:
  record: dict  # {"messages": prompt turns, "answer": str, ...}: what rewards see as the reference
  ids: tuple[int, ...]  # chat-template prompt ids, ending with the assistant header


def encode_prompts(tokenizer, records: list[dict], max_len: int) -> tuple[list[Prompt], int]:
  """(prompts whose ids fit in max_len, number dropped as too long). A cut question is no longer the question
  its answer checks, so long prompts are dropped, not truncated."""
  out = []
  for r in records:
    ids = chat_template.prompt_ids(tokenizer, r["messages"])
    if len(ids) <= max_len:
      out.append(Prompt(r, tuple(ids)))
  return out, len(records) - len(out)


def group_advantages(rewards_PG: np.ndarray, scale_std: bool = True, eps: float = 1e-4,
                     drop_equal: bool = False) -> tuple[np.ndarray, np.ndarray]:
  """(advantages [P, G], live [P]): (r - mean) / (std + eps) within each group (population std), or only
  r - mean without scale_std (Dr. GRPO). A group whose rewards are all equal has advantage 0 everywhere; with
  drop_equal it is also marked not live, so the batch masks it out of the loss (and its KL term) entirely."""
  rewards_PG = np.asarray(rewards_PG, np.float64)
  centred_PG = rewards_PG - rewards_PG.mean(axis=1, keepdims=True)
  std_P1 = rewards_PG.std(axis=1, keepdims=True)
  adv_PG = centred_PG / (std_P1 + eps) if scale_std else centred_PG
  equal_P = np.ptp(rewards_PG, axis=1) == 0
  live_P = ~equal_P if drop_equal else np.ones(len(rewards_PG), bool)
  return adv_PG.astype(np.float32), live_P


def layout(prompts: list[tuple[int, ...]], completions: list[np.ndarray], seq_len: int,
           pad_id: int, completion_logprobs: list[np.ndarray] | None = None) -> dict[str, np.ndarray]:
  """Rows prompt + completion as tokens/targets/positions/segment_ids/loss_mask [R, L] (see module doc), and
  with `completion_logprobs` (one value per completion token) `sampler_logprobs` [R, L] under the loss mask."""
  r = len(prompts)
  row_RL = np.full((r, seq_len + 1), pad_id, np.int32)
  segment_ids = np.zeros((r, seq_len), np.int32)
  loss_mask = np.zeros((r, seq_len), np.float32)
  sampler_RL = np.zeros((r, seq_len), np.float32)
  for i, (p, c) in enumerate(zip(prompts, completions)):
    n = len(p) + len(c)
    if n > seq_len + 1:
      raise ValueError(f"row {i}: {len(p)} prompt + {len(c)} completion tokens exceed data.seq_len + 1 = "
                       f"{seq_len + 1}")
    row_RL[i, :n] = np.concatenate([np.asarray(p, np.int32), np.asarray(c, np.int32)])
    segment_ids[i, :min(n, seq_len)] = 1
    loss_mask[i, len(p) - 1:n - 1] = 1.0  # targets at t are tokens t+1: the completion starts at len(p)
    if completion_logprobs is not None:
      sampler_RL[i, len(p) - 1:n - 1] = completion_logprobs[i][:len(c)]
  positions = np.broadcast_to(np.arange(seq_len, dtype=np.int32), (r, seq_len)).copy()
  batch = {"tokens": row_RL[:, :-1], "targets": row_RL[:, 1:].copy(), "positions": positions,
           "segment_ids": segment_ids, "loss_mask": loss_mask}
  if completion_logprobs is not None:
    batch["sampler_logprobs"] = sampler_RL
  return batch


def group_row_len(max_prompt_len: int, max_new_tokens: int, group_size: int) -> int:
  """Tokens in a group row that holds the longest prompt and G completions of the longest length."""
  return max_prompt_len - 1 + group_size * (1 + max_new_tokens)


def trimmed_row_len(prompts: list[tuple[int, ...]], completions: list[np.ndarray], group_size: int,
                    most: int) -> int:
  """The group-row length a rollout needs: its longest group (prompt, then each completion behind the prompt's
  last token) rounded up to a multiple of ROW_BUCKET, and never more than `most` (`group_row_len`)."""
  g = group_size
  need = max(len(p) - 1 + sum(1 + len(c) for c in completions[i * g:(i + 1) * g]) for i, p in enumerate(prompts))
  return min(most, -(-need // ROW_BUCKET) * ROW_BUCKET)


def group_layout(prompts: list[tuple[int, ...]], completions: list[np.ndarray], group_size: int, seq_len: int,
                 row_len: int, pad_id: int, completion_logprobs: list[np.ndarray] | None = None
                 ) -> dict[str, np.ndarray]:
  """One row per prompt holding its `group_size` completions (completions prompt-major: i * G + g is prompt
  i's g-th), with `side_index` and the per-sample arrays of `layout` (see the module doc)."""
  g = group_size
  per_sample = layout([p for p in prompts for _ in range(g)], completions, seq_len, pad_id, completion_logprobs)
  rows, side_index = [], []
  for i, prompt in enumerate(prompts):
    try:
      row, sides = branches.branch_row(prompt, completions[i * g:(i + 1) * g], row_len, seq_len, pad_id)
    except ValueError as e:
      raise ValueError(f"prompt {i} of the rollout: {e}") from None
    rows.append(row)
    side_index.append(sides)
  return {**{k: np.stack([r[k] for r in rows]) for k in branches.ROW_KEYS}, "side_index": np.stack(side_index),
          **{k: v for k, v in per_sample.items() if k not in branches.ROW_KEYS}}


def _bucket(n: int, most: int) -> int:
  return min(most, -(-max(n, 1) // COLUMN_BUCKET) * COLUMN_BUCKET)


def prompt_layout(prompts: list[tuple[int, ...]], completions: list[np.ndarray], group_size: int, max_prompt_len: int,
                  max_new_tokens: int, pad_id: int, completion_logprobs: list[np.ndarray] | None = None,
                  longest_seen: tuple[int, int] | None = None) -> dict[str, np.ndarray]:
  """Each prompt once and its `group_size` completions as rows behind it (losses/shared_prompt.py: the prompt
  into a KV cache, each completion attending to it), completions prompt-major. Widths: the longest prompt but
  its last token and the longest completion, each rounded up to COLUMN_BUCKET (at most max_prompt_len - 1 and
  max_new_tokens), so a rollout trains on what it sampled and a run compiles a handful of shapes.
  `longest_seen` = (longest prompt, longest completion) of the whole rollout when these are one process's share."""
  g = group_size
  longest_prompt, longest_completion = longest_seen or (max(len(p) for p in prompts), max(len(x) for x in completions))
  q = _bucket(longest_prompt - 1, max(max_prompt_len - 1, 1))
  c = _bucket(longest_completion, max_new_tokens)
  n_p, r = len(prompts), len(completions)
  prompt = {k: np.zeros((n_p, q), np.int32) for k in PROMPT_KEYS}
  prompt["prompt_tokens"][:] = pad_id
  for i, ids in enumerate(prompts):
    if not 1 <= len(ids) <= q + 1:
      raise ValueError(f"prompt {i} of the rollout: {len(ids)} tokens, not in [1, {q + 1}]")
    head = len(ids) - 1  # every token but the last, left-padded to end at column q - 1
    prompt["prompt_tokens"][i, q - head:] = ids[:-1]
    prompt["prompt_positions"][i, q - head:] = np.arange(head)
    prompt["prompt_segments"][i, q - head:] = 1
  tokens, targets = np.full((r, c), pad_id, np.int32), np.full((r, c), pad_id, np.int32)
  positions = np.zeros((r, c), np.int32)
  loss_mask = np.zeros((r, c), np.float32)
  sampler = np.zeros((r, c), np.float32)
  for j, done in enumerate(completions):
    ids, n = prompts[j // g], len(done)
    if n > c:
      raise ValueError(f"completion {j} of the rollout: {n} tokens exceed max_new_tokens = {max_new_tokens}")
    tokens[j, :n] = np.concatenate([[ids[-1]], np.asarray(done[:-1], np.int32)])
    targets[j, :n] = done
    positions[j] = len(ids) - 1 + np.arange(c)
    loss_mask[j, :n] = 1.0  # inputs: the prompt's last token and the completion but its last; targets: the completion
    if completion_logprobs is not None:
      sampler[j, :n] = completion_logprobs[j][:n]
  batch = {**prompt, "tokens": tokens, "targets": targets, "positions": positions,
           "segment_ids": loss_mask.astype(np.int32), "loss_mask": loss_mask}
  if completion_logprobs is not None:
    batch["sampler_logprobs"] = sampler
  return batch


def take_groups(batch: dict[str, np.ndarray], groups: np.ndarray, group_size: int) -> dict[str, np.ndarray]:
  """The sub-batch of the given groups: their rows of the [P, ...] arrays (a shared-prompt batch's prompts, a
  group batch's rows) and their samples of the [R, ...] ones."""
  samples = (np.asarray(groups)[:, None] * group_size + np.arange(group_size)).reshape(-1)
  per_group = set(PROMPT_KEYS) | (set(GROUP_KEYS) if "side_index" in batch else set())
  return {k: v[groups] if k in per_group else v[samples] for k, v in batch.items()}


def trained_tokens(batch: dict[str, np.ndarray]) -> int:
  """The tokens an optimizer step on `batch` runs the model over, padding left out (GRPO's `tokens_per_sec`): of
  shared-prompt or group rows, each prompt once and its completions; of plain rows, each sample's prompt and
  completion."""
  return int(np.count_nonzero(batch["segment_ids"]) + np.count_nonzero(batch.get("prompt_segments", 0)))


@dataclasses.dataclass
class Rollout:
  batch: dict[str, np.ndarray]  # the whole rollout: GROUP_KEYS [P, ...] (group rows), the rest [R, ...]
  stats: dict[str, float]


def _logprob_fn(env):
  """Jitted log pi(targets) [R, L] of a rollout batch (either layout) under (weights, lora), deterministic,
  masked to the loss mask; its rows sharded as the batch's, so each process reads back its own."""
  def fn(weights, lora, batch):
    return sample_logprobs(env.model, weights, lora, batch, None, env.config.loss.chunk_size) * batch["loss_mask"]
  return env.jit_cache(("rl_logprobs",), lambda: jax.jit(fn, out_shardings=sharding.batch_sharding(env.mesh)))


def _logprobs(env, weights, lora, batch: dict, groups_per_call: int) -> np.ndarray:
  """Log-probs [R, L] over this process's rollout rows, in chunks of its share of the train batch's groups (one
  compiled program); every process calls it with as many chunks."""
  fn = _logprob_fn(env)
  g = env.config.rl.group_size
  keys = [k for k in (*GROUP_KEYS, *PROMPT_KEYS, "loss_mask") if k in batch]
  out = []
  for s in range(0, len(batch["loss_mask"]) // g, groups_per_call):
    chunk = take_groups({k: batch[k] for k in keys}, np.arange(s, s + groups_per_call), g)
    out.append(spmd_sampling.local_rows(fn(weights, lora, sharding.put_batch(chunk, env.mesh))))
  return np.concatenate(out)


def rollout(env, state: TrainState, prompts: list[Prompt], rewards: Combined, rng: jax.Array,
            shared_prompt: bool = False) -> Rollout:
  """Sample rl.group_size completions of every prompt with the policy of `state`, score them, build the batch:
  with rl.group_rows, in the shared-prompt layout where `shared_prompt` (GRPO, tool-free rollouts), else in
  group rows (PPO's value head reads its branch rows; tool masks are in row columns).

  Across processes (a collective: every process calls it with the same prompts and rng) each process brings its
  contiguous share of the prompts (`spmd_sampling.share`: whole groups, so group statistics stay exact) to one
  generation over the global batch with the policy as it is sharded for training, scores its own samples, and
  the returned batch holds its rows only, as `train.fit` takes them; the stats are the whole rollout's. Row i's
  key is split(rng, R)[i] whatever the split, so 2 processes draw the samples 1 process draws."""
  rl, tok = env.config.rl, env.tokenizer
  t0 = time.perf_counter()
  g = rl.group_size
  keys_R = np.asarray(jax.random.split(rng, len(prompts) * g))
  lo, hi = spmd_sampling.share(len(prompts))
  prompts = prompts[lo:hi]
  rows = [p for p in prompts for _ in range(g)]  # prompt-major: rows [i*G, (i+1)*G) are prompt i's group
  stops = chat_template.stop_ids(tok)
  params = sampling.params_from(env.config.sampling, stop_ids=stops, vocab_limit=tok.n_vocab)
  weights, lora = policy_weights(state.params, state.frozen)
  if env.config.tools.names:  # replies may call tools: the engine loop runs them (tool results: no loss); one process
    gen, tool_rolls = tool_rollouts.sample(env, weights, lora, [list(p.ids) for p in prompts], params, rng, g)
  else:
    gen, tool_rolls = spmd_sampling.generate(env, weights, lora, [list(p.ids) for p in prompts], params,
                                             keys_R[lo * g:hi * g], samples_per_prompt=g), None
  t_sample = time.perf_counter()

  completions = [gen.tokens[i, :gen.lengths[i]] for i in range(len(rows))]
  # A reply is scored on its text without the stop token (with tools: its final turn's); a truncated one (no
  # stop token) is scored as it stands, flagged in its reference, and loses rl.truncation_penalty.
  texts = ([tok.decode(r.reply_ids) for r in tool_rolls] if tool_rolls else
           [tok.decode(c[:-1] if stopped else c) for c, stopped in zip(completions, gen.stopped)])
  refs = [{**p.record, "truncated": not bool(s)} for p, s in zip(rows, gen.stopped)]
  total_R, parts = rewards(texts, refs)
  total_R = total_R - rl.truncation_penalty * (~gen.stopped).astype(np.float32)
  adv_PG, live_P = group_advantages(total_R.reshape(-1, g), rl.scale_std, rl.adv_eps, rl.drop_equal_groups)
  t_score = time.perf_counter()

  if rl.group_rows:
    ids = [p.ids for p in prompts]
    longest = env.config.data.seq_len if tool_rolls else params.max_new_tokens  # tool turns extend a completion
    if shared_prompt and not tool_rolls:  # (tool_loop.sampled_mask is in a sample row's columns)
      # widths from the whole rollout's longest prompt and completion: one global batch shape
      most = spmd_sampling.gather(np.array([[max(len(p) for p in ids), max(len(x) for x in completions)]]))
      batch = prompt_layout(ids, completions, g, rl.max_prompt_len, longest, tok.pad_id, list(gen.logprobs),
                            longest_seen=tuple(int(n) for n in most.max(axis=0)))
    else:
      row_len = trimmed_row_len(ids, completions, g, group_row_len(rl.max_prompt_len, longest, g))
      row_len = int(spmd_sampling.gather(np.array([row_len])).max())  # one global batch shape
      batch = group_layout(ids, completions, g, env.config.data.seq_len, row_len, tok.pad_id, list(gen.logprobs))
  else:
    batch = layout([p.ids for p in rows], completions, env.config.data.seq_len, tok.pad_id, list(gen.logprobs))
  if tool_rolls:  # tool results were not sampled: no loss, no policy gradient, no KL on them
    batch["loss_mask"] *= tool_loop.sampled_mask([len(p.ids) for p in rows], tool_rolls, env.config.data.seq_len)
  ref_weights, ref_lora = reference_weights(state.frozen)
  groups_per_step = len(prompts) // rl.minibatches
  if rl.ppo_epochs * rl.minibatches > 1:
    batch["old_logprobs"] = _logprobs(env, weights, lora, batch, groups_per_step)
  batch["ref_logprobs"] = _logprobs(env, ref_weights, ref_lora, batch, groups_per_step)
  batch["loss_mask"] *= np.repeat(live_P, g)[:, None].astype(np.float32)  # dropped groups: no loss at all
  batch["advantages"] = adv_PG.reshape(-1)
  batch["rewards"] = total_R  # [R] the scores themselves (PPO's GAE reads them; jaxllm/ppo.py)
  t_end = time.perf_counter()

  # the whole rollout's stats: every process's samples
  total_R, parts = spmd_sampling.gather(total_R), {name: spmd_sampling.gather(v) for name, v in parts.items()}
  lengths = spmd_sampling.gather(gen.lengths).astype(np.float64)
  stopped = spmd_sampling.gather(gen.stopped)
  equal_P = np.ptp(total_R.reshape(-1, g), axis=1) == 0
  stats = {
      "reward_mean": float(total_R.mean()), "reward_std": float(total_R.std()),
      **{f"reward_{name}": float(v.mean()) for name, v in parts.items()},
      "completion_len": float(lengths.mean()), "completion_len_max": float(lengths.max()),
      "truncated": float((~stopped).mean()), "zero_signal_groups": float(equal_P.mean()),
      # columns each sample trains over: its trimmed prompt (run once per group) and completion; plain rows' own
      "row_len": float(batch["tokens"].shape[1] + (batch["prompt_tokens"].shape[1] if "prompt_tokens" in batch else 0)),
      "rollout_sec": t_end - t0, "sample_sec": t_sample - t0, "score_sec": t_score - t_sample,
  }
  return Rollout(batch, stats)


class RolloutSource:
  """A train.BatchSource: one rollout per rl.ppo_epochs * rl.minibatches optimizer steps, served as shuffled
  minibatches of whole groups (data.batch_size samples). Its state is the number of rollouts drawn (prompt position = rollouts *
  prompts_per_step, walking a fresh seeded permutation each epoch); checkpoints fall on rollout boundaries
  (the stage checks checkpoint.every and steps), so a resumed run draws exactly the rollout it would have."""

  def __init__(self, env, prompts: list[Prompt], rewards: Combined, shared_prompt: bool = False):
    c = env.config
    if not prompts:
      raise ValueError("grpo: no training prompts")
    self.env, self.prompts, self.rewards = env, prompts, rewards
    self.shared_prompt = shared_prompt  # see `rollout`
    self.rl, self.seed = c.rl, c.seed
    self.steps_per_rollout = c.rl.ppo_epochs * c.rl.minibatches
    self.rollouts = 0  # rollouts drawn so far
    self.served = 0  # minibatches served from the current rollout
    self.current: Rollout | None = None
    self.order: list[np.ndarray] = []
    self.last_stats: dict[str, float] = {}
    self._update_start: float | None = None
    self.eval_sec = 0.0  # time spent in held-out evaluation since the last rollout (not update time)

  def _prompt_at(self, position: int) -> Prompt:
    n = len(self.prompts)
    epoch, i = divmod(position, n)
    return self.prompts[int(np.random.default_rng([self.seed, epoch]).permutation(n)[i])]

  def _new_rollout(self, state: TrainState) -> None:
    p = self.rl.prompts_per_step
    prompts = [self._prompt_at(self.rollouts * p + j) for j in range(p)]
    key = jax.random.fold_in(jax.random.fold_in(jax.random.PRNGKey(self.seed), _SAMPLE_STREAM), self.rollouts)
    jax.block_until_ready(state.params)  # the previous updates are dispatched asynchronously: count them there
    now = time.perf_counter()
    update_sec = (now - self._update_start - self.eval_sec) if self._update_start is not None else 0.0
    self.current = rollout(self.env, state, prompts, self.rewards, key, self.shared_prompt)
    # Each data-parallel device's block of groups is shuffled on its own and every minibatch takes the same
    # number from each block, so a process's minibatch rows are its own groups, and the minibatches are the same
    # whether 1 or n processes hold the blocks.
    blocks = sharding.data_parallel_size(self.env.mesh)
    shuffle = np.random.default_rng([self.seed, self.rollouts, 1])
    self.order = [shuffle.permuted(np.arange(p).reshape(blocks, -1), axis=1) for _ in range(self.rl.ppo_epochs)]
    self.last_stats = {**self.current.stats, "update_sec": update_sec, "rollouts": float(self.rollouts + 1)}
    self.rollouts += 1
    self.served = 0
    self.eval_sec = 0.0
    self._update_start = time.perf_counter()

  def next(self, state: TrainState) -> dict[str, np.ndarray]:
    if self.current is None or self.served == self.steps_per_rollout:
      self._new_rollout(state)
    epoch, mb = divmod(self.served, self.rl.minibatches)
    n = self.order[epoch].shape[1] // self.rl.minibatches
    groups = np.sort(self.order[epoch][:, mb * n:(mb + 1) * n].reshape(-1))
    lo, hi = spmd_sampling.share(self.rl.prompts_per_step)  # this process's groups, and its rows of the rollout
    self.served += 1
    return take_groups(self.current.batch, groups[(groups >= lo) & (groups < hi)] - lo, self.rl.group_size)

  def get_state(self) -> dict[str, Any]:
    return {"rollouts": self.rollouts, "served": self.served}

  def set_state(self, state: dict) -> None:
    if state["rollouts"] and state["served"] != self.steps_per_rollout:
      raise ValueError(f"grpo: the checkpoint was taken {state['served']} optimizer steps into a rollout of "
                       f"{self.steps_per_rollout}; only rollout boundaries can be resumed exactly")
    self.rollouts, self.served, self.current = int(state["rollouts"]), int(state["served"]), None

  def host_metrics(self) -> dict[str, float]:
    return dict(self.last_stats)
