"""Serving throughput and latency under concurrent clients: jaxllm's continuously batched server vs
`transformers serve --continuous-batching` on the same exported model, and vs jaxllm serving one request at a time.

  python benchmarks/serve.py [--out=benchmarks/results/serve.json]   # d_model 512, 6 layers, vocab 1024: minutes
  python benchmarks/serve.py --smoke                                  # tiny sizes, 1 and 2 clients, seconds
  python benchmarks/serve.py --context=1024 --clients=32              # the same requests in longer slots

One random-weight model (decode.py's size, with a small BPE tokenizer so that every id is a real token) is
saved as a jaxllm workdir and exported with the export stage to a Hugging Face folder. Each server runs in its
own process on 127.0.0.1, one at a time:
  jaxllm        run.py --config=configs/serve.py, serve.max_batch=32 slots
  jaxllm_1      the same engine with serve.max_batch=1: requests served one at a time
  transformers  `transformers serve --continuous-batching --device cpu` on the exported folder, its paged KV
                cache holding one context per client as jaxllm's slots do
  jaxllm+K=V    a jaxllm server with config overrides, e.g. --servers=jaxllm,jaxllm+serve.steps_per_dispatch=1
For each number of clients in --clients, every client sends --requests chat requests one after another
(streaming, greedy; a fixed --prompt-token prompt, distinct per request; --answer tokens, kept from stopping
early by jaxllm's `ignore_eos` and transformers' generation_config min_new_tokens), all clients at once from
this process. Reported per server and client count: total output tokens/s (tokens received / wall time),
p50/p99 time to first token, p50/p99 per-token latency (a request's (last - first token time) / (tokens - 1)),
and the server's CPU seconds (its process and children) per 1,000 output tokens, which a machine shared with
other jobs disturbs far less than tokens/s.
Tokens are counted from the servers' usage reports. Each server gets one warm-up request first, so compilation
is not timed. `transformers serve` runs offline here (HF_HUB_OFFLINE=1); it needs fastapi, uvicorn, openai and
accelerate installed.
"""
import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import httpx  # noqa: E402
import numpy as np  # noqa: E402
import psutil  # noqa: E402

FULL = dict(d_model=512, n_layers=6, n_heads=8, n_kv_heads=4, head_dim=64, mlp_dim=1408)
SMOKE = dict(d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=16, mlp_dim=128)
CB_BLOCK = 32  # tokens per block of transformers' paged KV cache
WORDS = ("apple river stone cloud seven green market window silver engine orange garden paper yellow bridge "
         "number twelve planet coffee winter music doctor forest castle").split()


def make_workdir(path: str, sizes: dict, context: int, vocab: int, seed: int) -> None:
  """A jaxllm workdir with random weights: config.json, tokenizer/, one orbax checkpoint."""
  import flax.linen as nn
  import jax
  import jax.numpy as jnp

  from configs import base
  from jaxllm.checkpoint import Checkpointer
  from jaxllm.model import ModelConfig, Transformer
  from jaxllm.state import TrainState
  from jaxllm.tokenizer import train_bpe

  rng = np.random.default_rng(seed)
  texts = [" ".join(rng.choice(WORDS, 40)) + f" {i} {i * 7 % 1000}" for i in range(3000)]
  tokenizer = train_bpe(texts, vocab_size=vocab)
  tokenizer.save(os.path.join(path, "tokenizer"))
  config = base.get_config()
  config.workdir = path
  config.model.update(vocab_size=-(-tokenizer.n_vocab // 64) * 64, max_seq_len=context, **sizes)
  with open(os.path.join(path, "config.json"), "w") as f:
    json.dump(config.to_dict(), f)
  model = Transformer(ModelConfig.from_config(config))
  weights = nn.meta.unbox(model.init(jax.random.PRNGKey(seed), jnp.zeros((1, 4), jnp.int32))["params"])
  state = TrainState(step=jnp.array(1), params={"model": weights}, frozen={}, opt_state={},
                     rng=jax.random.PRNGKey(seed), skipped=jnp.array(0))
  checkpointer = Checkpointer(path, keep=1)
  checkpointer.save(state, {})
  checkpointer.close()


def export(workdir: str, path: str) -> None:
  from configs import export as export_config
  from jaxllm.stages import export as export_stage

  config = export_config.get_config()
  config.init_from, config.export.path = workdir, path
  export_stage.run(config)


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def prompt_text(tokenizer, n_tokens: int, index: int) -> str:
  """A user message of exactly n_tokens tokens (plain text; distinct per index)."""
  ids = tokenizer.encode(f"request {index}: " + " ".join(WORDS[(index + i) % len(WORDS)] for i in range(n_tokens)))
  return tokenizer.decode(ids[:n_tokens])


class ServerProcess:
  """A server command in its own process, up once /health answers; stopped with SIGTERM."""

  def __init__(self, name: str, command: list[str], port: int, env: dict, log_path: str):
    self.name, self.port = name, port
    self.log = open(log_path, "w")
    self.process = subprocess.Popen(command, cwd=REPO, env=env, stdout=self.log, stderr=subprocess.STDOUT)

  def wait_ready(self, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
      if self.process.poll() is not None:
        raise RuntimeError(f"{self.name} exited with {self.process.returncode}; see {self.log.name}")
      try:
        if httpx.get(f"http://127.0.0.1:{self.port}/health", timeout=2).status_code == 200:
          return
      except httpx.HTTPError:
        pass
      time.sleep(0.5)
    raise RuntimeError(f"{self.name} did not answer /health in {timeout}s; see {self.log.name}")

  def cpu_seconds(self) -> float:
    """User + system CPU time of the server process and its children so far."""
    processes = [psutil.Process(self.process.pid)]
    processes += processes[0].children(recursive=True)
    return sum(sum(p.cpu_times()[:2]) for p in processes if p.is_running())

  def stop(self) -> None:
    self.process.terminate()
    try:
      self.process.wait(30)
    except subprocess.TimeoutExpired:
      self.process.kill()
    self.log.close()


async def one_request(client: httpx.AsyncClient, url: str, body: dict) -> dict:
  start = time.perf_counter()
  first = last = None
  usage = None
  chunks = 0
  async with client.stream("POST", url, json=body) as response:
    if response.status_code != 200:
      raise RuntimeError(f"{url}: HTTP {response.status_code}: {(await response.aread())[:300]!r}")
    async for line in response.aiter_lines():
      if not line.startswith("data: ") or line == "data: [DONE]":
        continue
      chunk = json.loads(line[6:])
      if chunk.get("usage"):
        usage = chunk["usage"]
      if chunk.get("choices") and chunk["choices"][0].get("delta", {}).get("content"):
        now = time.perf_counter()
        first = first or now
        last = now
        chunks += 1
  tokens = usage["completion_tokens"] if usage else chunks
  return {"ttft": first - start, "tokens": tokens,
          "per_token": (last - first) / (tokens - 1) if tokens > 1 else None, "end": last}


async def load(url: str, model: str, clients: int, requests: int, prompts: list[str], answer: int,
               extra: dict) -> dict:
  """`clients` concurrent clients, each sending `requests` streamed chat requests back to back."""
  limits = httpx.Limits(max_connections=clients + 4, max_keepalive_connections=clients + 4)
  async with httpx.AsyncClient(timeout=httpx.Timeout(3600.0), limits=limits) as client:

    async def run_client(c: int) -> list[dict]:
      results = []
      for r in range(requests):
        body = {"model": model, "stream": True, "stream_options": {"include_usage": True}, "temperature": 0,
                "max_tokens": answer, "messages": [{"role": "user", "content": prompts[(c * requests + r) %
                                                                                       len(prompts)]}], **extra}
        results.append(await one_request(client, url, body))
      return results

    start = time.perf_counter()
    per_client = await asyncio.gather(*(run_client(c) for c in range(clients)))
    wall = time.perf_counter() - start
  results = [r for rs in per_client for r in rs]
  ttft = np.array([r["ttft"] for r in results])
  per_token = np.array([r["per_token"] for r in results if r["per_token"] is not None])
  tokens = sum(r["tokens"] for r in results)
  return {"clients": clients, "requests": len(results), "tokens": tokens, "wall_s": wall,
          "tokens_per_s": tokens / wall, "ttft_p50_s": float(np.percentile(ttft, 50)),
          "ttft_p99_s": float(np.percentile(ttft, 99)),
          "per_token_p50_s": float(np.percentile(per_token, 50)) if per_token.size else None,
          "per_token_p99_s": float(np.percentile(per_token, 99)) if per_token.size else None,
          "mean_tokens_per_request": tokens / len(results)}


def servers(args, workdir: str, hf_dir: str, context: int) -> dict[str, tuple[list[str], str, dict]]:
  """name -> (command with {port}, the model id to request, extra request fields)."""
  # its own run directory (the default runs/serve is locked by any other server started from this checkout)
  run_dir = os.path.join(os.path.dirname(workdir), "serve_run")
  jaxllm = [sys.executable, "run.py", "--config=configs/serve.py", f"--config.init_from={workdir}",
            f"--config.workdir={run_dir}", "--config.serve.port={port}", f"--config.serve.context={context}", f"--config.seed={args.seed}"]
  name = os.path.basename(workdir)
  # Its paged KV cache sized like jaxllm's slots (one context per client): left to itself it sizes the cache
  # from the free memory and its model process was OOM-killed on a shared 23 GB machine.
  blocks = -(-max(args.clients) * context // CB_BLOCK)
  transformers = ["transformers", "serve", hf_dir, "--continuous-batching", "--device", "cpu", "--dtype",
                  "float32", "--host", "127.0.0.1", "--port", "{port}", "--max-model-len", str(context),
                  "--cb-block-size", str(CB_BLOCK), "--cb-num-blocks", str(blocks)]
  return {"jaxllm": (jaxllm + [f"--config.serve.max_batch={max(args.clients)}"], name, {"ignore_eos": True}),
          "jaxllm_1": (jaxllm + ["--config.serve.max_batch=1"], name, {"ignore_eos": True}),
          # its requests take a JSON `generation_config`: min_new_tokens keeps it from stopping early, as ignore_eos
          "transformers": (transformers, hf_dir, {"generation_config": json.dumps({"min_new_tokens": args.answer})})}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--clients", default="1,8,32")
  parser.add_argument("--requests", type=int, default=2, help="requests per client, back to back")
  parser.add_argument("--prompt", type=int, default=64, help="prompt tokens (user message)")
  parser.add_argument("--answer", type=int, default=64, help="tokens per reply")
  parser.add_argument("--servers", default="jaxllm,transformers,jaxllm_1")
  parser.add_argument("--context", type=int, default=256, help="the model's max_seq_len and every server's context")
  parser.add_argument("--torch_threads", type=int, default=0, help="OMP threads of transformers; 0 = its default")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--smoke", action="store_true", help="tiny model, 1 and 2 clients, few tokens")
  parser.add_argument("--out", default=os.path.join(REPO, "benchmarks", "results", "serve.json"))
  args = parser.parse_args()
  if args.smoke:
    args.clients, args.requests, args.prompt, args.answer = "1,2", 1, 12, 8
  args.clients = [int(c) for c in args.clients.split(",")]
  sizes = SMOKE if args.smoke else FULL
  context = 64 if args.smoke else args.context
  env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
  if args.torch_threads:
    env["OMP_NUM_THREADS"] = str(args.torch_threads)
  from jaxllm.tokenizer import Tokenizer

  with tempfile.TemporaryDirectory(prefix="jaxllm-serve-bench-") as tmp:
    workdir, hf_dir = os.path.join(tmp, "model"), os.path.join(tmp, "model_hf")
    make_workdir(workdir, sizes, context, vocab=512 if args.smoke else 1024, seed=args.seed)
    export(workdir, hf_dir)
    tokenizer = Tokenizer.load(os.path.join(workdir, "tokenizer"))
    prompts = [prompt_text(tokenizer, args.prompt, i) for i in range(max(args.clients) * args.requests)]
    results = {}
    for name in args.servers.split(","):
      # "jaxllm+serve.steps_per_dispatch=4": the jaxllm server with config overrides (settings side by side)
      base_name, *overrides = name.split("+")
      command, model, extra = servers(args, workdir, hf_dir, context)[base_name]
      command = command + [f"--config.{override}" for override in overrides]
      port = free_port()
      server = ServerProcess(name, [part.replace("{port}", str(port)) for part in command], port, env,
                             os.path.join(tmp, f"{name}.log"))
      try:
        server.wait_ready(timeout=600)
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        asyncio.run(load(url, model, 1, 1, prompts, args.answer, extra))  # warm-up: compile / load
        results[name] = []
        for clients in args.clients:
          cpu_before = server.cpu_seconds()
          row = asyncio.run(load(url, model, clients, args.requests, prompts, args.answer, extra))
          # the server's own CPU cost per token: far steadier than tokens/s on a machine others load too
          row["server_cpu_s_per_1k_tokens"] = 1000 * (server.cpu_seconds() - cpu_before) / row["tokens"]
          results[name].append(row)
          print(f"{name:>12} clients={clients:>2}: {row['tokens_per_s']:8.1f} tok/s  ttft p50 "
                f"{row['ttft_p50_s'] * 1e3:7.0f} ms p99 {row['ttft_p99_s'] * 1e3:7.0f} ms  per-token p50 "
                f"{(row['per_token_p50_s'] or 0) * 1e3:6.1f} ms p99 {(row['per_token_p99_s'] or 0) * 1e3:6.1f} ms "
                f"({row['mean_tokens_per_request']:.1f} tokens/request; server CPU "
                f"{row['server_cpu_s_per_1k_tokens']:.2f} s per 1k tokens)", flush=True)
      except Exception as e:  # one server failing must not hide the others' numbers
        print(f"{name}: failed: {e}", flush=True)
        with open(server.log.name) as f:
          print(f.read()[-3000:], flush=True)
        results[name] = {"error": str(e)}
      finally:
        server.stop()

  table = ["| clients | " + " | ".join(f"{n} tok/s" for n in results) + " | jaxllm / transformers | "
           "jaxllm / jaxllm_1 |", "|---" * (len(results) + 3) + "|"]
  for i, clients in enumerate(args.clients):
    cell = lambda n: results[n][i]["tokens_per_s"] if isinstance(results.get(n), list) else None
    ratio = lambda a, b: f"{cell(a) / cell(b):.2f}x" if cell(a) and cell(b) else "–"
    table.append(f"| {clients} | " + " | ".join(f"{cell(n):.1f}" if cell(n) else "–" for n in results)
                 + f" | {ratio('jaxllm', 'transformers')} | {ratio('jaxllm', 'jaxllm_1')} |")
  print("\n".join(table))
  record = {"command": " ".join(sys.argv), "model": sizes, "context": context, "prompt_tokens": args.prompt,
            "answer_tokens": args.answer, "requests_per_client": args.requests, "date": time.strftime("%Y-%m-%d"),
            "cpus": os.cpu_count(), "servers": results}
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  with open(args.out, "w") as f:
    json.dump(record, f, indent=2)
  print(f"wrote {args.out}")


if __name__ == "__main__":
  main()
