"""The serving engine without HTTP, on a tiny random model: batched admission (several prompts prefilled in one
call) and several decode steps per call give exactly the tokens, log-probs and text of one-at-a-time admission
and one step per call."""
import threading

import pytest

from conftest import SERVE_CONTEXT
from jaxllm.serve.engine import Engine, EngineOptions, Request, admission_sizes


@pytest.fixture(scope="module")
def loaded(serve_workdir):
  from configs import serve
  from jaxllm.stages.chat import load

  config = serve.get_config("tiny")
  config.init_from = serve_workdir
  return load(config)


def _serve_all(loaded, prefill_per_step: int, steps_per_dispatch: int) -> dict:
  """Every request queued before the engine starts (so admission batches them); each one's events."""
  model, weights, tokenizer = loaded
  engine = Engine(model, weights, tokenizer, EngineOptions(max_batch=8, context=SERVE_CONTEXT, max_queue=64,
                                                           prefill_per_step=prefill_per_step,
                                                           steps_per_dispatch=steps_per_dispatch))
  # lengths in two prompt buckets (16, 32): a batch of 5 and one of 4 (5 padded to 8 rows)
  text = tokenizer.encode(" ".join(f"what is {i} plus {2 * i}? hello, how are you today?" for i in range(20)))
  prompts = [text[3 * i:3 * i + n] for i, n in enumerate((12, 20, 9, 24, 14, 30, 5, 18, 11))]
  events = {i: [] for i in range(len(prompts) + 2)}
  done = threading.Semaphore(0)

  def sink(i):
    def put(event):
      events[i].append(event)
      if event.finish_reason:
        done.release()
    return put

  for i, prompt in enumerate(prompts):  # greedy, 5 to 13 tokens: calls of 4 steps end mid-call
    engine.submit(Request(prompt, max_tokens=5 + i, sink=sink(i), temperature=0.0, ignore_eos=True, top_logprobs=2))
  # sampled with a seed and top-p; and one that stops at a stop string
  engine.submit(Request(prompts[0], max_tokens=11, sink=sink(9), temperature=1.0, top_p=0.9, seed=3,
                        top_logprobs=0))
  engine.submit(Request(prompts[1], max_tokens=40, sink=sink(10), temperature=1.0, seed=5, stop=("e",)))
  engine.start()
  try:
    for _ in events:
      assert done.acquire(timeout=120), "a request never finished"
  finally:
    engine.stop()
  return events


def _summary(events: list) -> tuple:
  tokens = [(t.id, t.logprob, t.top) for e in events for t in e.tokens]
  return "".join(e.text for e in events), tokens, events[-1].finish_reason, events[-1].completion_tokens


def test_batched_admission_and_multi_step_calls_match_one_at_a_time(loaded):
  one_at_a_time = _serve_all(loaded, prefill_per_step=1, steps_per_dispatch=1)
  batched = _serve_all(loaded, prefill_per_step=1, steps_per_dispatch=4)
  for i in one_at_a_time:
    assert _summary(batched[i]) == _summary(one_at_a_time[i]), i
  assert [_summary(one_at_a_time[i])[3] for i in range(9)] == [5 + i for i in range(9)]  # ended mid-call
  assert _summary(one_at_a_time[10])[2] == "stop" and "e" not in _summary(one_at_a_time[10])[0]
  # one event per call: the first token from the prefill, then up to 4 tokens per decode call
  assert all(len(batched[i]) <= 1 + -(-(4 + i) // 4) for i in range(9))
  assert max(len(one_at_a_time[i]) for i in range(9)) == 13


def test_admission_sizes_are_powers_of_two_up_to_prefill_per_step():
  assert admission_sizes(1) == [1]
  assert admission_sizes(4) == [1, 2, 4]
  assert admission_sizes(6) == [1, 2, 4, 8]
