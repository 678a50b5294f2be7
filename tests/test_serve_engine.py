"""The serving engine without HTTP, on a tiny random model: several decode steps per call
(serve.steps_per_dispatch) give exactly the tokens, log-probs, text and finish of one step per call, and one
event per call."""
import threading

import pytest

from conftest import SERVE_CONTEXT
from jaxllm.serve.engine import Engine, EngineOptions, Request


@pytest.fixture(scope="module")
def loaded(serve_workdir):
  from configs import serve
  from jaxllm.stages.chat import load

  config = serve.get_config("tiny")
  config.init_from = serve_workdir
  return load(config)


def _serve_all(loaded, steps_per_dispatch: int) -> tuple[dict, int]:
  """11 requests on 8 slots (3 wait for a slot), all queued before the engine starts; each one's events."""
  model, weights, tokenizer = loaded
  engine = Engine(model, weights, tokenizer, EngineOptions(max_batch=8, context=SERVE_CONTEXT, max_queue=64,
                                                           steps_per_dispatch=steps_per_dispatch))
  text = tokenizer.encode(" ".join(f"what is {i} plus {2 * i}? hello, how are you today?" for i in range(20)))
  prompts = [text[3 * i:3 * i + n] for i, n in enumerate((12, 16, 9, 14, 5, 15, 7, 10, 13))]  # one bucket
  events = {i: [] for i in range(len(prompts) + 2)}
  done = threading.Semaphore(0)

  def sink(i):
    def put(event):
      events[i].append(event)
      if event.finish_reason:
        done.release()
    return put

  for i, prompt in enumerate(prompts):  # greedy, with top log-probs
    engine.submit(Request(prompt, max_tokens=9 + 3 * i, sink=sink(i), temperature=0.0, ignore_eos=True,
                          top_logprobs=2))
  # sampled with a seed and top-p; and one that ends at a stop string, mid-call
  engine.submit(Request(prompts[0], max_tokens=30, sink=sink(9), temperature=1.0, top_p=0.9, seed=3,
                        top_logprobs=0))
  engine.submit(Request(prompts[1], max_tokens=60, sink=sink(10), temperature=1.0, seed=5, stop=("an",)))
  engine.start()
  try:
    for _ in events:
      assert done.acquire(timeout=120), "a request never finished"
  finally:
    engine.stop()
  return events, engine.steps


def _summary(events: list) -> tuple:
  tokens = [(t.id, t.logprob, t.top) for e in events for t in e.tokens]
  return "".join(e.text for e in events), tokens, events[-1].finish_reason, events[-1].completion_tokens


def test_several_steps_per_call_match_one_step_per_call(loaded):
  one, steps_one = _serve_all(loaded, steps_per_dispatch=1)
  four, steps_four = _serve_all(loaded, steps_per_dispatch=4)
  for i in one:
    assert _summary(four[i]) == _summary(one[i]), i
  assert [_summary(one[i])[3] for i in range(9)] == [9 + 3 * i for i in range(9)]
  assert _summary(one[10])[2] == "stop" and "an" not in _summary(one[10])[0]
  assert all(len(one[i]) == 9 + 3 * i for i in range(9))  # one event per token
  assert max(len(e.tokens) for i in range(9) for e in four[i]) == 4  # ... or per call of 4 steps
  assert sum(map(len, four.values())) < 0.75 * sum(map(len, one.values()))  # 1 step a call while some wait
  assert steps_four <= steps_one + 2 * 4  # the last calls' remaining steps at most


def _greedy(loaded, prompts: list[list[int]], max_tokens: list[int], kv_block: int) -> list[tuple]:
  """Each request's (tokens, log-probs), all submitted together on a 4-slot engine with that cache block."""
  model, weights, tokenizer = loaded
  engine = Engine(model, weights, tokenizer, EngineOptions(max_batch=4, context=SERVE_CONTEXT, max_queue=8,
                                                           kv_block=kv_block))
  events = [[] for _ in prompts]
  done = threading.Semaphore(0)
  for i, (prompt, n) in enumerate(zip(prompts, max_tokens)):
    def put(event, i=i):
      events[i].append(event)
      if event.finish_reason:
        done.release()
    engine.submit(Request(prompt, max_tokens=n, sink=put, temperature=0.0, ignore_eos=True, top_logprobs=0))
  engine.start()
  try:
    for _ in prompts:
      assert done.acquire(timeout=120), "a request never finished"
  finally:
    engine.stop()
  return [[(t.id, t.logprob) for e in es for t in e.tokens] for es in events]


def test_a_short_request_is_bit_identical_beside_one_that_spans_more_cache_blocks(loaded):
  """With blocks of 32 slots the short request fits block 0; beside the long one its decode calls attend over
  up to 4 blocks: the same tokens and log-probs to the bit. A one-block cache gives the same tokens."""
  tokenizer = loaded[2]
  text = tokenizer.encode(" ".join(f"what is {i} plus {2 * i}? hello, how are you today?" for i in range(20)))
  short, long = text[:6], text[10:80]
  alone = _greedy(loaded, [short], [12], kv_block=32)[0]
  long_alone, beside = _greedy(loaded, [long, short], [40, 12], kv_block=32)
  assert len(text) > 80 and len(alone) == 12 and len(long_alone) == 40
  assert beside == alone
  one_block = _greedy(loaded, [long, short], [40, 12], kv_block=SERVE_CONTEXT)
  assert [[t for t, _ in r] for r in one_block] == [[t for t, _ in r] for r in (long_alone, beside)]
