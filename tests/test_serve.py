"""The OpenAI-compatible server on a tiny random model, over real HTTP on 127.0.0.1: the official `openai` client
(streaming and not), 32 concurrent greedy requests equal to sequential ones, every bad request's status with
the server still up, a disconnect freeing its slot, queue-full 429, timeouts, API keys, and SIGTERM of
`run.py --config=configs/serve.py`."""
import concurrent.futures
import json
import os
import re
import signal
import subprocess
import sys
import time

import httpx
import pytest
from starlette.testclient import TestClient

from conftest import REPO, SERVE_CONTEXT as CONTEXT
from jaxllm import chat_template
from jaxllm.serve.api import Api, ApiOptions
from jaxllm.serve.engine import Engine, Request, prompt_bucket

openai = pytest.importorskip("openai")

TIMEOUT = httpx.Timeout(60.0)


@pytest.fixture(scope="module")
def workdir(serve_workdir) -> str:
  return serve_workdir


@pytest.fixture(scope="module")
def server(serve_server):
  return serve_server


@pytest.fixture(scope="module")
def client(server):
  return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", timeout=60, max_retries=0)


def _name(workdir: str) -> str:
  return os.path.basename(workdir)


def _health(server) -> dict:
  response = httpx.get(server.url + "/health", timeout=TIMEOUT)
  assert response.status_code == 200
  return response.json()


def test_openai_client_chat_streaming_and_not(server, client, workdir):
  assert [m.id for m in client.models.list().data] == [_name(workdir)]
  messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "what is 3 plus 6?"}]
  whole = client.chat.completions.create(model=_name(workdir), messages=messages, max_tokens=12, temperature=0)
  choice = whole.choices[0]
  assert choice.message.role == "assistant" and choice.finish_reason in ("stop", "length")
  prompt_len = len(chat_template.prompt_ids(server.engine.tokenizer, messages))
  assert whole.usage.prompt_tokens == prompt_len
  assert 1 <= whole.usage.completion_tokens <= 12
  assert whole.usage.total_tokens == prompt_len + whole.usage.completion_tokens

  chunks = list(client.chat.completions.create(model=_name(workdir), messages=messages, max_tokens=12,
                                               temperature=0, stream=True, stream_options={"include_usage": True}))
  assert chunks[0].choices[0].delta.role == "assistant"
  streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
  assert streamed == choice.message.content
  assert sum(1 for c in chunks if c.choices and c.choices[0].delta.content) >= 2  # token by token
  assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == [
      choice.finish_reason]
  assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens


def test_sampling_options_logprobs_n_seed_stop(server, client, workdir):
  name, messages = _name(workdir), [{"role": "user", "content": "hello, how are you"}]
  ask = lambda **kw: client.chat.completions.create(model=name, messages=messages, max_tokens=16,
                                                    extra_body={"ignore_eos": True}, **kw)
  seeded = [ask(temperature=1.0, top_p=0.9, seed=7, n=3) for _ in range(2)]
  texts = [[c.message.content for c in r.choices] for r in seeded]
  assert texts[0] == texts[1]  # a seed reproduces
  assert len(set(texts[0])) > 1  # the n choices differ
  assert seeded[0].usage.completion_tokens == 3 * 16

  greedy = ask(temperature=0, logprobs=True, top_logprobs=3)
  content = greedy.choices[0].logprobs.content
  assert len(content) == 16 and all(len(t.top_logprobs) == 3 for t in content)
  for token in content:  # greedy picks the most likely token: its logprob is the top one
    assert token.logprob == pytest.approx(token.top_logprobs[0].logprob, abs=1e-5)
    assert token.top_logprobs[0].logprob >= token.top_logprobs[1].logprob
  text = greedy.choices[0].message.content
  stop = text[4:7]
  cut = ask(temperature=0, stop=[stop])
  assert cut.choices[0].message.content == text[:text.index(stop)] and cut.choices[0].finish_reason == "stop"

  completion = client.completions.create(model=name, prompt="what is 2 plus", max_tokens=8, temperature=0,
                                         logprobs=2)
  assert completion.choices[0].finish_reason in ("stop", "length")
  assert len(completion.choices[0].logprobs.token_logprobs) == len(completion.choices[0].logprobs.tokens)
  streamed = "".join(c.choices[0].text for c in client.completions.create(
      model=name, prompt="what is 2 plus", max_tokens=8, temperature=0, stream=True))
  assert streamed == completion.choices[0].text


def test_prompt_buckets_pad_less_than_a_quarter_or_16_tokens():
  """1/8 of the next power of two, >= 16, capped at the context (a power-of-two bucket ran 70 tokens at 128)."""
  assert [prompt_bucket(n, 256) for n in (1, 16, 17, 70, 128, 129, 250)] == [16, 16, 32, 80, 128, 160, 256]
  assert all(0 <= prompt_bucket(n, 4096) - n < max(16, n / 4) for n in range(1, 4097))


def test_32_concurrent_requests_match_sequential(server, client, workdir):
  """Greedy output is the same alone and among 31 others; the batch really ran together."""
  prompts = [f"what is {i} plus {i % 7}? say it" + " please" * (i % 5) for i in range(32)]

  def ask(prompt: str) -> str:
    return client.completions.create(model=_name(workdir), prompt=prompt, max_tokens=16, temperature=0,
                                     extra_body={"ignore_eos": True}).choices[0].text

  sequential = [ask(p) for p in prompts]
  steps = server.engine.steps
  with concurrent.futures.ThreadPoolExecutor(32) as pool:
    together = list(pool.map(ask, prompts))
  assert together == sequential
  assert server.engine.steps - steps < 32 * 15 / 4  # at least ~4 requests per decode step on average
  assert _health(server)["running"] == 0


BAD = [  # (body or raw bytes, status, field named in the error)
    (b"{not json", 400, None),
    (b"[1, 2]", 400, None),
    ({"model": "M", "messages": [{"role": "user", "content": "hi"}], "temprature": 0.5}, 400, "temprature"),
    ({"model": "M", "messages": [{"role": "user", "content": "hi"}], "temperature": "hot"}, 400, "temperature"),
    ({"model": "M", "messages": [{"role": "user", "content": "hi"}], "temperature": 3}, 400, "temperature"),
    ({"model": "M", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1.5}, 400, "max_tokens"),
    ({"model": "M", "messages": [{"role": "user", "content": "hi"}], "n": True}, 400, "n"),
    ({"model": "M", "messages": [{"role": "user", "content": "hi"}], "max_tokens": CONTEXT}, 400, "max_tokens"),
    ({"model": "M", "messages": [{"role": "user", "content": "hi " * CONTEXT}]}, 400, "messages"),
    ({"model": "M", "messages": [{"role": "robot", "content": "hi"}]}, 400, "messages[0].role"),
    ({"model": "M", "messages": [{"role": "user", "content": 5}]}, 400, "messages[0].content"),
    ({"model": "M", "messages": []}, 400, "messages"),
    ({"messages": [{"role": "user", "content": "hi"}]}, 400, "model"),
    ({"model": "M", "messages": [{"role": "user", "content": "hi"}], "presence_penalty": 1.0}, 400,
     "presence_penalty"),
    ({"model": "M", "messages": [{"role": "user", "content": "hi"}], "top_logprobs": 2}, 400, "top_logprobs"),
    ({"model": "other", "messages": [{"role": "user", "content": "hi"}]}, 404, "model"),
]


@pytest.mark.parametrize("body, status, field", BAD, ids=[str(i) for i in range(len(BAD))])
def test_bad_request_gets_its_status_and_server_stays_up(server, workdir, body, status, field):
  if isinstance(body, dict) and body.get("model") == "M":
    body = {**body, "model": _name(workdir)}
  raw = body if isinstance(body, bytes) else json.dumps(body).encode()
  response = httpx.post(server.url + "/v1/chat/completions", content=raw, timeout=TIMEOUT,
                        headers={"Content-Type": "application/json"})
  assert response.status_code == status, response.text
  error = response.json()["error"]
  assert error["message"] and error["type"]
  if field is not None:
    assert error["param"] == field, error
  assert _health(server)["status"] == "ok"


def test_disconnect_mid_stream_frees_the_slot(server, workdir):
  body = {"model": _name(workdir), "prompt": "hello", "max_tokens": 240, "temperature": 0, "stream": True,
          "ignore_eos": True}
  steps = server.engine.steps
  with httpx.stream("POST", server.url + "/v1/completions", json=body, timeout=TIMEOUT) as response:
    for line in response.iter_lines():
      if line.startswith("data: "):
        break  # the first token arrived: hang up
  start = time.monotonic()
  while _health(server)["running"]:
    assert time.monotonic() - start < 5, "the slot of a disconnected client was not freed"
    time.sleep(0.02)
  assert server.engine.steps - steps < 220  # it stopped well before its 240 tokens
  assert httpx.post(server.url + "/v1/completions", json={**body, "stream": False, "max_tokens": 4},
                    timeout=TIMEOUT).status_code == 200


def test_queue_full_timeout_and_api_key(server, workdir):
  engine = server.engine
  name = _name(workdir)
  body = {"model": name, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 200, "ignore_eos": True}

  # an engine that is never started admits nobody: its one queue place fills, and the next request is refused
  idle = Engine(engine.model, engine.weights, engine.tokenizer, engine.options.__class__(
      max_batch=1, context=CONTEXT, max_queue=1))
  idle.submit(Request(prompt=[1], max_tokens=1, sink=lambda event: None))
  with TestClient(Api(idle, ApiOptions(model_name=name)).app()) as http:
    response = http.post("/v1/chat/completions", json=body)
  assert response.status_code == 429 and response.json()["error"]["code"] == "queue_full"

  # a deadline already past when the engine looks: it ends waiting, never admitted
  with TestClient(Api(engine, ApiOptions(model_name=name, request_timeout=1e-6)).app()) as http:
    response = http.post("/v1/chat/completions", json=body)
    assert response.status_code == 408 and response.json()["error"]["code"] == "timeout"

  with TestClient(Api(engine, ApiOptions(model_name=name, api_key="sesame")).app()) as http:
    assert http.get("/v1/models").status_code == 401
    assert http.get("/v1/models", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert http.get("/v1/models", headers={"Authorization": "Bearer sesame"}).status_code == 200
    assert http.get("/").status_code == 200  # the page itself is public; it asks for the key
  assert _health(server)["running"] == 0


@pytest.mark.slow
def test_run_py_serves_and_stops_on_sigterm(workdir):
  env = {**os.environ, "JAXLLM_TEST_KEY": "k1"}
  process = subprocess.Popen(
      [sys.executable, "run.py", "--config=configs/serve.py:tiny", f"--config.init_from={workdir}",
       "--config.serve.port=0", "--config.serve.api_key_env=JAXLLM_TEST_KEY",
       # the in-process server's shapes, so the compiled programs come from the session's compilation cache
       "--config.serve.max_batch=32", f"--config.serve.context={CONTEXT}"],
      cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  try:
    url = None
    for line in process.stdout:
      found = re.search(r"at (http://127\.0\.0\.1:\d+)", line)
      if found:
        url = found.group(1)
        break
    assert url, "the server never printed its URL"
    client = openai.OpenAI(base_url=url + "/v1", api_key="k1", timeout=60, max_retries=0)
    reply = client.chat.completions.create(model=_name(workdir), messages=[{"role": "user", "content": "hi"}],
                                           max_tokens=5, temperature=0)
    assert reply.usage.completion_tokens >= 1
    process.send_signal(signal.SIGTERM)
    out, _ = process.communicate(timeout=60)
  finally:
    process.kill()
  assert process.returncode == 0, out
  assert json.loads(out.strip().splitlines()[-1])["requests"] == 1
