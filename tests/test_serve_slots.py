"""The serving engine's row buckets: a decode step runs only the lowest rows that hold the running requests,
requests are moved down into freed rows, and a request's greedy tokens stay what they are when it runs alone."""
import threading

import pytest

from configs import serve
from jaxllm.serve import slots as slots_lib
from jaxllm.serve.engine import Engine, EngineOptions, Request, prompt_bucket
from jaxllm.stages.chat import load


@pytest.fixture(scope="module")
def engine(serve_workdir):
  config = serve.get_config("tiny")
  config.init_from = serve_workdir
  model, weights, tokenizer = load(config)
  engine = Engine(model, weights, tokenizer, EngineOptions(max_batch=4, context=64, max_queue=16))
  yield engine.start()
  engine.stop()


def _run(engine: Engine, prompts_and_lengths: list[tuple[list[int], int]]) -> list[list[int]]:
  """Submit all at once; each request's generated token ids once every one has finished."""
  done = [threading.Event() for _ in prompts_and_lengths]
  tokens = [[] for _ in prompts_and_lengths]

  def sink(i):
    def on_event(event):
      tokens[i].extend(t.id for t in event.tokens)
      if event.finish_reason:
        assert event.finish_reason == "length", event.finish_reason
        done[i].set()
    return on_event

  for i, (prompt, n) in enumerate(prompts_and_lengths):
    engine.submit(Request(prompt, max_tokens=n, sink=sink(i), temperature=0.0, ignore_eos=True, top_logprobs=0))
  for event in done:
    assert event.wait(120)
  return tokens


def test_row_buckets_and_prompt_buckets():
  assert slots_lib.row_buckets(32) == (1, 2, 4, 8, 16, 32)
  assert slots_lib.row_buckets(6) == (1, 2, 4, 6)
  assert [prompt_bucket(n, 256) for n in (1, 16, 17, 70, 128, 129, 250)] == [16, 16, 32, 80, 128, 160, 256]


@pytest.mark.slow
def test_greedy_tokens_survive_row_buckets_and_moves(engine):
  # rows 1 and 2 end first: the request in row 3 is moved down into row 1 and two-row steps serve both
  jobs = [([5 + i, 9, 2 + i] * (1 + i % 3), n) for i, n in enumerate([20, 2, 3, 20])]
  alone = [_run(engine, [job])[0] for job in jobs]
  moves, steps = engine.moves, engine.steps
  together = _run(engine, jobs)
  assert together == alone
  assert all(len(t) == n for t, (_, n) in zip(together, jobs))
  assert engine.moves > moves  # rows were compacted
  assert engine.steps - steps < sum(n for _, n in jobs) / 2  # and the requests did share decode steps
