"""The engine loop for tool use: generate, stop the rows that made a tool call, run the tool, append its result
as a `tool` turn, and resume those rows; the rest are finished.

  rollouts = run(generate_fn, tokenizer, tools, prompts, max_calls=4, max_len=512, max_new_tokens=96)
  rollouts[i].ids        # the whole completion: sampled tokens and inserted tool-turn tokens, in order
  rollouts[i].sampled    # 1 on tokens the model sampled, 0 on inserted ones (no loss, no policy gradient)
  rollouts[i].reply_ids  # the final turn's sampled tokens, its stop token excluded: what is scored

`generate_fn(rows, inputs, round)` completes a batch of token-id inputs (prompt + completion so far) with one call of
jaxllm.sampling.generate and returns one `Sampled` per input: the loop is a host-side wrapper around the
batched engine, not a second sampler. A round's rows are those still calling tools; the rows of round 0 are all
of them. A call ends at the closing marker `</tool_call>` (a stop sequence: generated text after it is dropped;
where the tokenizer has it as one token it is also a stop id, chat_template.call_stop_ids) or at the end of
the call's turn. A row ends when it stops without a call, after `max_calls` calls (its last call unanswered),
at a round cut by max_new_tokens, or when its next round would not fit in `max_len` tokens.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

from jaxllm import chat_template, tools as tool_registry
from jaxllm.tools import calls


@dataclasses.dataclass
class Sampled:
  """One row of one generate call."""
  ids: list[int]  # generated tokens, the stop token included when stopped
  logprobs: list[float]  # one per generated token
  stopped: bool


# generate_fn(rows, inputs, round): rows are the indices (into `prompts`) of the inputs being continued
GenerateFn = Callable[[list[int], list[list[int]], int], list[Sampled]]


@dataclasses.dataclass
class ToolRollout:
  ids: list[int] = dataclasses.field(default_factory=list)
  sampled: list[int] = dataclasses.field(default_factory=list)
  logprobs: list[float] = dataclasses.field(default_factory=list)  # raw log p of sampled tokens, 0 on inserted
  reply_ids: list[int] = dataclasses.field(default_factory=list)
  calls: int = 0
  stopped: bool = False  # the final turn ended with a stop id (not cut by a budget)
  results: list[str] = dataclasses.field(default_factory=list)  # each tool result, in order

  def append(self, ids: list[int], logprobs: list[float] | None) -> None:
    self.ids += ids
    self.sampled += [1 if logprobs is not None else 0] * len(ids)
    self.logprobs += list(logprobs) if logprobs is not None else [0.0] * len(ids)


def _cut_at_call(tokenizer, out: Sampled, turn_stops: set[int]) -> tuple[int, bool] | None:
  """(tokens kept, whether they end the call's turn) when `out` makes a call; None otherwise. Keeps the tokens
  through the closing marker, and the end-of-turn token when it comes right after."""
  if calls.cut_after_call(tokenizer.decode(out.ids)) is None:
    return None
  for k in range(1, len(out.ids) + 1):  # the shortest prefix whose text holds the closing marker
    if calls.cut_after_call(tokenizer.decode(out.ids[:k])) is not None:
      break
  return (k + 1, True) if k < len(out.ids) and out.ids[k] in turn_stops else (k, False)


def run(generate_fn: GenerateFn, tokenizer, tools: dict[str, tool_registry.Tool], prompts: list[list[int]], *,
        max_calls: int, max_len: int, max_new_tokens: int) -> list[ToolRollout]:
  """Complete every prompt, running tool calls (see the module docstring)."""
  stops = set(chat_template.stop_ids(tokenizer))
  out = [ToolRollout() for _ in prompts]
  active = list(range(len(prompts)))
  round_ = 0
  while active:
    results = generate_fn(active, [list(prompts[i]) + out[i].ids for i in active], round_)
    still = []
    for i, got in zip(active, results):
      row = out[i]
      call = _cut_at_call(tokenizer, got, stops) if tools else None
      if call is None:
        row.append(got.ids, got.logprobs)
        row.stopped = got.stopped
        row.reply_ids = got.ids[:-1] if got.stopped and got.ids and got.ids[-1] in stops else list(got.ids)
        continue
      kept, closed = call
      row.append(got.ids[:kept], got.logprobs[:kept])
      row.reply_ids = got.ids[:kept]
      row.calls += 1
      if row.calls > max_calls:  # too many calls: the row ends on its unanswered call
        continue
      result = tool_registry.run_call(tools, tokenizer.decode(got.ids[:kept]))
      row.results.append(result)
      turn = chat_template.tool_turn_ids(tokenizer, result, closed)
      if len(prompts[i]) + len(row.ids) + len(turn) + max_new_tokens > max_len:
        continue  # no room for the result and another reply: ends on its call
      row.append(turn, None)
      still.append(i)
    active = still
    round_ += 1
  return out


def sampled_mask(prompt_lens: list[int], rollouts: list[ToolRollout], seq_len: int) -> np.ndarray:
  """[R, seq_len] f32: 0 where a row's target is an inserted (tool-turn) token, 1 elsewhere. Multiplies the
  loss mask of jaxllm.rl.layout's rows (prompt + completion, targets shifted by one) so tool results carry no
  loss and no policy gradient."""
  mask = np.ones((len(rollouts), seq_len), np.float32)
  for r, (p, roll) in enumerate(zip(prompt_lens, rollouts)):
    inserted = np.flatnonzero(np.asarray(roll.sampled, np.int32) == 0)
    mask[r, p - 1 + inserted[p - 1 + inserted < seq_len]] = 0.0
  return mask
