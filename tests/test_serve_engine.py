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


def _text(tokenizer) -> list[int]:
  return tokenizer.encode(" ".join(f"what is {i} plus {2 * i}? hello, how are you today?" for i in range(20)))


def _run(loaded, options: EngineOptions, requests: list[dict]) -> tuple[list[list], int]:
  """Each request's events (Request fields but the sink; all queued before the engine starts), and the decode
  steps the engine ran."""
  model, weights, tokenizer = loaded
  engine = Engine(model, weights, tokenizer, options)
  events = [[] for _ in requests]
  done = threading.Semaphore(0)

  def sink(i):
    def put(event):
      events[i].append(event)
      if event.finish_reason:
        done.release()
    return put

  for i, fields in enumerate(requests):
    engine.submit(Request(sink=sink(i), **fields))
  engine.start()
  try:
    for _ in requests:
      assert done.acquire(timeout=120), "a request never finished"
  finally:
    engine.stop()
  return events, engine.steps


def _serve_all(loaded, steps_per_dispatch: int) -> tuple[list[list], int]:
  """11 requests on 8 slots (3 wait for a slot); each one's events."""
  text = _text(loaded[2])
  prompts = [text[3 * i:3 * i + n] for i, n in enumerate((12, 16, 9, 14, 5, 15, 7, 10, 13))]  # one bucket
  # greedy, with top log-probs; sampled with a seed and top-p; and one that ends at a stop string, mid-call
  requests = [dict(prompt=prompt, max_tokens=9 + 3 * i, temperature=0.0, ignore_eos=True, top_logprobs=2)
              for i, prompt in enumerate(prompts)]
  requests += [dict(prompt=prompts[0], max_tokens=30, temperature=1.0, top_p=0.9, seed=3, top_logprobs=0),
               dict(prompt=prompts[1], max_tokens=60, temperature=1.0, seed=5, stop=("an",))]
  return _run(loaded, EngineOptions(max_batch=8, context=SERVE_CONTEXT, max_queue=64,
                                    steps_per_dispatch=steps_per_dispatch), requests)


def _summary(events: list) -> tuple:
  tokens = [(t.id, t.logprob, t.top) for e in events for t in e.tokens]
  return "".join(e.text for e in events), tokens, events[-1].finish_reason, events[-1].completion_tokens


def test_several_steps_per_call_match_one_step_per_call(loaded):
  one, steps_one = _serve_all(loaded, steps_per_dispatch=1)
  four, steps_four = _serve_all(loaded, steps_per_dispatch=4)
  for i in range(len(one)):
    assert _summary(four[i]) == _summary(one[i]), i
  assert [_summary(one[i])[3] for i in range(9)] == [9 + 3 * i for i in range(9)]
  assert _summary(one[10])[2] == "stop" and "an" not in _summary(one[10])[0]
  assert all(len(one[i]) == 9 + 3 * i for i in range(9))  # one event per token
  assert max(len(e.tokens) for i in range(9) for e in four[i]) == 4  # ... or per call of 4 steps
  assert sum(map(len, four)) < 0.75 * sum(map(len, one))  # 1 step a call while some wait
  assert steps_four <= steps_one + 2 * 4  # the last calls' remaining steps at most


def _greedy(loaded, prompts: list[list[int]], max_tokens: list[int], kv_block: int) -> list[list[tuple]]:
  """Each request's (token, log-prob) pairs, all submitted together on a 4-slot engine with that cache block."""
  events, _ = _run(loaded, EngineOptions(max_batch=4, context=SERVE_CONTEXT, max_queue=8, kv_block=kv_block),
                   [dict(prompt=p, max_tokens=n, temperature=0.0, ignore_eos=True, top_logprobs=0)
                    for p, n in zip(prompts, max_tokens)])
  return [[(t.id, t.logprob) for e in es for t in e.tokens] for es in events]


def test_a_short_request_is_bit_identical_beside_one_that_spans_more_cache_blocks(loaded):
  """With blocks of 32 slots the short request fits block 0; beside the long one its decode calls attend over
  up to 4 blocks: the same tokens and log-probs to the bit. A one-block cache gives the same tokens."""
  text = _text(loaded[2])
  short, long = text[:6], text[10:80]
  alone = _greedy(loaded, [short], [12], kv_block=32)[0]
  long_alone, beside = _greedy(loaded, [long, short], [40, 12], kv_block=32)
  assert len(text) > 80 and len(alone) == 12 and len(long_alone) == 40
  assert beside == alone
  one_block = _greedy(loaded, [long, short], [40, 12], kv_block=SERVE_CONTEXT)
  assert [[t for t, _ in r] for r in one_block] == [[t for t, _ in r] for r in (long_alone, beside)]
