"""Train-step speed, MFU and peak memory: jaxllm side by side with the same model in PyTorch and transformers.

  python benchmarks/train_step.py [--out=train_step.json]     # default size on CPU: ~8 minutes on 2 cores
  python benchmarks/train_step.py --size=medium              # larger presets: medium, gpu350m
  python benchmarks/train_step.py --size=pipeline            # the quickstart pipeline's 3.2M-param model
  python benchmarks/train_step.py --smoke                    # tiny, < 60 s (tests/test_benchmarks_smoke.py)
  python benchmarks/train_step.py --rows=jax_full,torch_eager --remat=dots --chunk_size=4096   # experiments

Rows, each in its own subprocess (so peak memories never mix) and timed round-robin (every row runs
`--steps` steps in each of `--rounds` rounds, so load changes on a shared machine hit all rows alike):
  jax_full       jaxllm pretrain / SFT step: `train.make_train_step` jitted exactly as `train.fit` does it
                 (state shardings, donation), loss `lm`, AdamW + clipping, batch from `pipelines.lm_batch`
                 (packed documents, segment ids) put on device every step as in `fit`
  jax_lora       the same with LoRA rank 16 on q,k,v,o,gate,up,down (base weights frozen)
  jax_reward     reward-model step: loss `reward` (trunk + scalar head, Bradley-Terry, + the chosen answers'
                 NLL), B pairs, each one row of L tokens (a prompt of L/4 shared by both answers)
  jax_full_v32k  jax_full with a 32768-token vocab (memory: the logits must not dominate)
  torch_eager    the same architecture hand-written in PyTorch (RMSNorm, half-split RoPE, GQA through
                 F.scaled_dot_product_attention(is_causal, enable_gqa), SwiGLU, untied head), AdamW with the
                 same betas/eps/decay mask + grad clipping, f32
  torch_compile  torch_eager with torch.compile on the forward + loss (inductor; backward via AOTAutograd)
  hf_eager       transformers LlamaForCausalLM with the same config (sdpa attention), same optimizer
then (not interleaved) a GRPO step split: rollout (sampling.generate, temperature 1, no stop token), one
reference log-prob pass over the rollout (rl's jitted log-prob function), and one `grpo` update step, both over
the rollout's shared-prompt layout (`rl.prompt_layout`: each prompt once, its completions as rows behind it;
their tokens/s count those slots).

Model FLOPs per token (the MFU numerator), with N = matmul parameters: q,k,v,o,gate,up,down of every layer
plus the untied output head (the input embedding is a lookup and not counted; norms are negligible):
  full / references   6 N + 12 n_layers L (n_heads head_dim)       (PaLM, appendix B; attention over the
                                                                   full L x L, i.e. causal masking not halved)
  LoRA                4 N + 6 N_lora + 12 n_layers L (n_heads head_dim)   (no weight gradients of N)
  reward              as full (the LM head runs over every row for the NLL and log-likelihood terms)
MFU = FLOPs per step / median step time / peak, the peak being the best of 5 timed [n, n] @ [n, n] matmuls, taken in
every round in the row's own turn (n = 2048; jnp.dot in jax processes, torch.mm in torch ones), same process and dtype. Peak memory:
host peak RSS (VmHWM) during the timed steps — reset after compilation and warm-up via /proc/self/clear_refs —
on CPU; `peak_bytes_in_use` of the device on GPU.

Measured results, and which optimisations paid: docs/performance.md.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

SIZES = {  # vocab, d_model, layers, heads, kv heads, mlp, seq, batch, dtype
    "smoke": dict(vocab=512, d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, mlp=176, seq=64, batch=4),
    "pipeline": dict(vocab=576, d_model=256, n_layers=4, n_heads=8, n_kv_heads=4, mlp=704, seq=128, batch=16),
    "default": dict(vocab=8192, d_model=512, n_layers=6, n_heads=8, n_kv_heads=4, mlp=1408, seq=256, batch=8),
    "medium": dict(vocab=32768, d_model=768, n_layers=12, n_heads=12, n_kv_heads=4, mlp=2048, seq=512, batch=8),
    "gpu350m": dict(vocab=32768, d_model=1024, n_layers=24, n_heads=16, n_kv_heads=8, mlp=3072, seq=2048, batch=8,
                    dtype="bfloat16"),
}
DEFAULT_ROWS = ("jax_full", "jax_lora", "jax_reward", "jax_full_v32k", "torch_eager", "torch_compile", "hf_eager")
SMOKE_ROWS = ("jax_full", "jax_lora", "jax_reward", "torch_eager", "hf_eager")  # torch.compile alone takes > 60 s
GPU_ROWS = ("jax_full", "jax_lora", "jax_reward")  # the torch references are f32 CPU ones
LORA_RANK = 16
MARK = "@@bench "  # prefix of the protocol lines a worker prints (libraries may print other lines)


# ----------------------------------------------------------------------------------------------- FLOPs

def matmul_params(s: dict) -> int:
  d, h, k, f, dh = s["d_model"], s["n_heads"], s["n_kv_heads"], s["mlp"], s["d_model"] // s["n_heads"]
  per_layer = 2 * d * h * dh + 2 * d * k * dh + 3 * d * f
  return s["n_layers"] * per_layer + d * s["vocab"]


def lora_params(s: dict, rank: int) -> int:
  d, h, k, f, dh = s["d_model"], s["n_heads"], s["n_kv_heads"], s["mlp"], s["d_model"] // s["n_heads"]
  ins_outs = [(d, h * dh), (d, k * dh), (d, k * dh), (h * dh, d), (d, f), (d, f), (f, d)]
  return s["n_layers"] * rank * sum(i + o for i, o in ins_outs)


def flops_per_token(s: dict, row: str) -> float:
  attn = 12 * s["n_layers"] * s["seq"] * s["n_heads"] * (s["d_model"] // s["n_heads"])
  if row == "jax_lora":
    return 4 * matmul_params(s) + 6 * lora_params(s, LORA_RANK) + attn
  return 6 * matmul_params(s) + attn


def total_params(s: dict) -> int:
  d = s["d_model"]
  return matmul_params(s) + d * s["vocab"] + (2 * s["n_layers"] + 1) * d


# ----------------------------------------------------------------------------------------------- memory

def reset_peak_rss() -> bool:
  """Reset VmHWM to the current RSS (Linux >= 4.0); False where not possible."""
  try:
    with open("/proc/self/clear_refs", "w") as f:
      f.write("5")
    return True
  except OSError:
    return False


def peak_rss_mb() -> float:
  with open("/proc/self/status") as f:
    for line in f:
      if line.startswith("VmHWM:"):
        return int(line.split()[1]) / 1024
  import resource
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ----------------------------------------------------------------------------------------------- jax rows

def _jax_env(s: dict, args, stage: str, vocab: int | None = None, lora: bool = False, rl: dict | None = None,
             new_tokens: int = 0):
  """An `Env` as runtime.prepare builds it, minus tokenizer and workdir (the train step reads neither)."""
  import jax
  from configs import base, grpo, reward
  from jaxllm import sharding
  from jaxllm.config import validate
  from jaxllm.model import ModelConfig, Transformer
  from jaxllm.runtime import Env

  c = {"reward": reward, "grpo": grpo}.get(stage, base).get_config()
  c.model.update(vocab_size=vocab or s["vocab"], d_model=s["d_model"], n_layers=s["n_layers"], n_heads=s["n_heads"],
                 n_kv_heads=s["n_kv_heads"], head_dim=s["d_model"] // s["n_heads"], mlp_dim=s["mlp"],
                 max_seq_len=s["seq"], dtype=args.dtype or s.get("dtype", "float32"), remat=args.remat)
  c.data.update(batch_size=s["batch"], seq_len=s["seq"])
  c.loss.chunk_size = args.chunk_size
  c.mesh.data = -1
  c.steps = 1000
  if lora:
    c.lora.update(rank=LORA_RANK, alpha=2.0 * LORA_RANK)
  if rl:
    c.rl.update(**rl)
  # The sampling budget must fit the model's context even where nothing is sampled (validate checks it).
  c.sampling.max_new_tokens = new_tokens or min(c.sampling.max_new_tokens, s["seq"] // 2)
  validate(c, jax.device_count())
  cfg = ModelConfig.from_config(c)
  return Env(config=c, mesh=sharding.make_mesh(c.mesh), tokenizer=None, model_cfg=cfg,
             model=Transformer(cfg, deterministic=True),
             train_model=Transformer(cfg, deterministic=c.lora.dropout == 0.0), pretrained=None)


class _NoBatches:  # train.init_state reads only Task.loss (and the objective's entry)
  def next(self, state): raise NotImplementedError

  def get_state(self): return {}

  def set_state(self, state): pass


def jax_step(env, loss: str):
  """(state, step) exactly as train.fit builds them."""
  import jax
  from jaxllm import sharding, train
  from jaxllm.state import learning_rate_schedule, make_optimizer

  c = env.config
  tx = make_optimizer(c.optim, c.steps)
  task = train.Task(loss=loss, batches=_NoBatches())
  state, state_sh = train.init_state(env, task, tx)
  step_fn = jax.jit(train.make_train_step(env, loss, tx, learning_rate_schedule(c.optim, c.steps)),
                    in_shardings=(state_sh, sharding.batch_sharding(env.mesh)),
                    out_shardings=(state_sh, sharding.replicated(env.mesh)), donate_argnums=0)
  return state, step_fn


def lm_batches(s: dict, vocab: int, n: int, seed: int = 0):
  """Packed pretraining batches from the real pipeline function (documents of 20-300 tokens, eot = 0)."""
  import numpy as np
  from jaxllm.data import pipelines

  rng = np.random.default_rng(seed)
  out = []
  for _ in range(n):
    flat = rng.integers(1, vocab, s["batch"] * s["seq"] + 1).astype(np.int32)
    flat[np.cumsum(rng.integers(20, 300, s["batch"] * s["seq"] // 20))[:-1] % flat.size] = 0
    out.append(pipelines.lm_batch(flat, np.arange(s["batch"]), s["seq"], 0))
  return out


def reward_batches(s: dict, n: int, seed: int = 0):
  import numpy as np
  from jaxllm.data import preference

  rng = np.random.default_rng(seed)
  b, l = s["batch"], s["seq"]
  p = l // 4
  most = (l - p - 1) // 2  # the longest answers that fit: prompt + 1 + both answers <= l
  out = []
  for _ in range(n):
    lengths = p + rng.integers(most // 2, most + 1, (b, 2))
    ids = rng.integers(1, s["vocab"], (b, 2, l)).astype(np.int32) * (np.arange(l) < lengths[..., None])
    ids[:, 1, :p] = ids[:, 0, :p]  # one prompt per pair
    pairs = preference.Pairs(ids, lengths.astype(np.int32), np.full(b, p, np.int32))
    out.append(preference.make_batch(pairs, np.arange(b)))
  return out


def jax_matmul_peak(dtype: str, n: int, repeats: int = 5) -> float:
  """FLOP/s of the best of `repeats` [n, n] @ [n, n] products in `dtype`."""
  import jax
  import jax.numpy as jnp

  a = jnp.ones((n, n), dtype)
  f = jax.jit(lambda x: x @ x)
  f(a).block_until_ready()
  best = float("inf")
  for _ in range(repeats):
    t = time.perf_counter()
    f(a).block_until_ready()
    best = min(best, time.perf_counter() - t)
  return 2 * n ** 3 / best


def jax_memory_mb(reset: bool) -> float:
  import jax
  dev = jax.devices()[0]
  if dev.platform != "cpu":
    stats = dev.memory_stats() or {}
    return stats.get("peak_bytes_in_use", 0) / 2 ** 20
  return peak_rss_mb()


def make_jax_row(row: str, s: dict, args):
  """-> (run(n_steps) -> seconds, info, last loss) for a jax row (compiled by its first run)."""
  import jax

  stage = {"jax_reward": "reward"}.get(row, "pretrain")
  vocab = 32768 if row == "jax_full_v32k" else None
  env = _jax_env(s, args, stage, vocab=vocab, lora=row == "jax_lora")
  if row == "jax_reward":
    env.config.reward.update(head_init=0.02, loglik_init=0.0)  # a plain scalar head
    state, step_fn = jax_step(env, "reward")
    host_batches = reward_batches(s, 4)
  else:
    state, step_fn = jax_step(env, "pretrain")
    host_batches = lm_batches(s, env.config.model.vocab_size, 4)
  info = {"params": sum(x.size for x in jax.tree.leaves(state.params)),
          "device": f"{jax.devices()[0].platform}:{jax.devices()[0].device_kind}", "jax": jax.__version__}
  run, last_loss = step_loop(env, state, step_fn, host_batches)
  return run, info, last_loss


def step_loop(env, state, step_fn, host_batches: list):
  """(run(n) -> seconds of n steps, last loss): steps taken as train.fit takes them (host batch -> device, step;
  no host sync until the end), cycling through `host_batches`."""
  import jax
  from jaxllm import sharding

  box = {"state": state, "i": 0}

  def run(n: int) -> float:
    start = time.perf_counter()
    metrics = None
    with env.mesh_context():
      for _ in range(n):
        batch = sharding.put_batch(host_batches[box["i"] % len(host_batches)], env.mesh)
        box["state"], metrics = step_fn(box["state"], batch)
        box["i"] += 1
    jax.block_until_ready(metrics)
    box["loss"] = float(metrics["loss"])
    return time.perf_counter() - start

  return run, lambda: box["loss"]


# ----------------------------------------------------------------------------------------------- workers

def _say(obj: dict) -> None:
  print(MARK + json.dumps(obj), flush=True)


def worker(row: str, args) -> None:
  """Build the row, warm up, then serve `run N` / `end` commands from stdin (one JSON reply each)."""
  s = SIZES[args.size]
  t0 = time.perf_counter()
  if row.startswith("jax"):
    import jax
    run, info, last_loss = make_jax_row(row, s, args)
    peak_n = args.peak_n or (2048 if jax.devices()[0].platform == "cpu" else 8192)
    peak = lambda: jax_matmul_peak(args.dtype or s.get("dtype", "float32"), peak_n)
  else:
    import torch
    torch.set_num_threads(args.torch_threads)
    from train_step_torch import make_torch_row, torch_matmul_peak  # noqa: E402 (torch only in torch workers)
    run, info, last_loss = make_torch_row(row, s, args, lm_batches(s, s["vocab"], 4))
    peak = lambda: torch_matmul_peak(args.peak_n or 2048)
  run(args.warmup)  # compilation + first steps
  setup_s = time.perf_counter() - t0
  can_reset = reset_peak_rss()
  _say({"ready": True, "setup_s": setup_s, "first_loss": last_loss(), **info})
  for line in sys.stdin:
    cmd = line.split()
    if cmd[0] == "run":
      steps = int(cmd[1])
      cpu = time.process_time()
      _say({"seconds": run(steps), "cpu_seconds": time.process_time() - cpu, "steps": steps})
    elif cmd[0] == "peak":  # asked in this row's turn, like `run`, so no other worker competes for the cores
      _say({"matmul_peak_flops": peak()})
    elif cmd[0] == "end":
      mem = jax_memory_mb(can_reset) if row.startswith("jax") else peak_rss_mb()
      _say({"peak_mem_mb": mem, "mem_kind": "rss_steps" if can_reset else "rss_process",
            "last_loss": last_loss()})
      return


class Worker:
  def __init__(self, row: str, argv: list[str]):
    self.row = row
    self.proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), f"--worker={row}"] + argv,
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=REPO)

  def read(self) -> dict:
    for line in self.proc.stdout:
      if line.startswith(MARK):
        return json.loads(line[len(MARK):])
    raise RuntimeError(f"worker {self.row} exited with code {self.proc.wait()} (its stderr is above)")

  def ask(self, command: str) -> dict:
    self.proc.stdin.write(command + "\n")
    self.proc.stdin.flush()
    return self.read()


def load_average() -> float:
  try:
    return os.getloadavg()[0]
  except OSError:
    return float("nan")


def grpo_split(s: dict, args) -> dict:
  """Seconds and tokens/s of one GRPO step's parts at the size's model: P prompts x G samples."""
  import jax
  import numpy as np
  from jaxllm import rl, sampling, sharding

  prompts_n, group, prompt_len, new = (2, 2, 8, 8) if args.size == "smoke" else (4, 8, s["seq"] // 2, s["seq"] // 2)
  rows = prompts_n * group
  grpo_s = {**s, "batch": rows, "seq": prompt_len + new}
  env = _jax_env(grpo_s, args, "grpo", rl=dict(group_size=group, prompts_per_step=prompts_n,
                                                 max_prompt_len=prompt_len), new_tokens=new)
  state, step_fn = jax_step(env, "grpo")
  weights = state.params["model"]
  rng = np.random.default_rng(0)
  prompts = [list(rng.integers(1, s["vocab"], rng.integers(prompt_len // 2, prompt_len + 1))) for _ in range(prompts_n)]
  params = sampling.SamplingParams(max_new_tokens=new, temperature=1.0)

  def timed(fn, repeats=1):  # each part runs for seconds: one timed call after the compiling one
    fn()  # compile
    best = float("inf")
    for _ in range(repeats):
      t = time.perf_counter()
      out = fn()
      best = min(best, time.perf_counter() - t)
    return best, out

  sample_s, gen = timed(lambda: sampling.generate(env.model, weights, prompts, params, jax.random.PRNGKey(0),
                                                  samples_per_prompt=group))
  completions = [gen.tokens[i, :gen.lengths[i]] for i in range(rows)]
  batch = rl.prompt_layout([tuple(p) for p in prompts], completions, group, prompt_len, new, 0)
  ref_s, ref_lp = timed(lambda: rl._logprobs(env, state.frozen["model"], None, batch, prompts_n))
  batch["sampler_logprobs"] = batch["ref_logprobs"] = ref_lp  # one step per rollout: no old_logprobs
  batch["advantages"] = rng.normal(size=rows).astype(np.float32)
  box = {"state": state}

  def update():
    with env.mesh_context():
      box["state"], m = step_fn(box["state"], sharding.put_batch(batch, env.mesh))
    return jax.block_until_ready(m)

  update_s, _ = timed(update)
  n_tok = batch["tokens"].size + batch["prompt_tokens"].size  # token slots the model runs over: prompts once
  return {"prompts": prompts_n, "group": group, "prompt_len": prompt_len, "new_tokens": new,
          "row_len": batch["tokens"].shape[1] + batch["prompt_tokens"].shape[1],
          "rollout_s": sample_s, "rollout_tok_s": rows * new / sample_s,
          "ref_logprobs_s": ref_s, "ref_logprobs_tok_s": n_tok / ref_s,
          "update_s": update_s, "update_tok_s": n_tok / update_s}


# ----------------------------------------------------------------------------------------------- main

LABELS = {"jax_full": "jaxllm pretrain/SFT (full)", "jax_lora": f"jaxllm LoRA r{LORA_RANK}",
          "jax_reward": "jaxllm reward model", "jax_full_v32k": "jaxllm full, vocab 32768",
          "torch_eager": "PyTorch (eager)", "torch_compile": "PyTorch (torch.compile)",
          "hf_eager": "transformers Llama (eager)"}


def table(results: dict, reference_rows: list[str]) -> str:
  refs = [r for r in reference_rows if r in results]
  head = "| row | step ms | tokens/s | MFU | peak mem MB |" + "".join(f" / {LABELS[r]} |" for r in refs)
  lines = [head, "|---" * (5 + len(refs)) + "|"]
  for row, r in results.items():
    ratios = "".join(f" {r['tokens_s'] / results[ref]['tokens_s']:.2f}x |" for ref in refs)
    lines.append(f"| {LABELS[row]} | {1000 * r['step_s']:.0f} | {r['tokens_s']:.0f} | {100 * r['mfu']:.0f}% | "
                 f"{r['peak_mem_mb']:.0f} |{ratios}")
  return "\n".join(lines)


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--size", default="default", choices=sorted(SIZES))
  parser.add_argument("--smoke", action="store_true", help="--size=smoke, 1 round of 1 step: seconds")
  parser.add_argument("--rows", default="", help="comma-separated rows (see the docstring); '' = all")
  parser.add_argument("--grpo", type=int, default=1, help="also time the GRPO split (0 = skip)")
  parser.add_argument("--rounds", type=int, default=3)
  parser.add_argument("--steps", type=int, default=3, help="timed steps per row per round")
  parser.add_argument("--warmup", type=int, default=2, help="untimed steps (compilation included)")
  parser.add_argument("--dtype", default="", help="jax compute dtype ('' = the size's: f32, bf16 for gpu350m)")
  parser.add_argument("--remat", default="none", help="config.model.remat of the jax rows")
  parser.add_argument("--chunk_size", type=int, default=0, help="config.loss.chunk_size of the jax rows")
  parser.add_argument("--xla_flags", default="", help="XLA_FLAGS for the jax rows (experiments only)")
  parser.add_argument("--torch_threads", type=int, default=len(os.sched_getaffinity(0)),
                      help="default: the cores jax uses")
  parser.add_argument("--torch_fused", type=int, default=0, help="AdamW(fused=True) in the torch rows")
  parser.add_argument("--peak_n", type=int, default=0, help="size of the matmul timed for the peak (0: 2048 on CPU, "
                      "8192 on GPU)")
  parser.add_argument("--out", default="", help="write the results as JSON here")
  parser.add_argument("--worker", default="", help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  if args.smoke:
    args.size, args.rounds, args.steps, args.warmup, args.peak_n = "smoke", 1, 1, 1, 256
  if args.worker:
    if args.xla_flags:
      os.environ["XLA_FLAGS"] = args.xla_flags
    if args.worker == "grpo":
      _say(grpo_split(SIZES[args.size], args))
    else:
      worker(args.worker, args)
    return {}

  s = SIZES[args.size]
  default_rows = SMOKE_ROWS if args.smoke else GPU_ROWS if s.get("dtype") == "bfloat16" else DEFAULT_ROWS
  rows = [r for r in (args.rows or ",".join(default_rows)).split(",") if r]
  unknown = set(rows) - set(LABELS)
  if unknown:
    parser.error(f"--rows: unknown {sorted(unknown)}; choose from {sorted(LABELS)}")
  forward = [f"--{k}={v}" for k, v in vars(args).items() if k not in ("rows", "out", "worker", "smoke", "grpo")]
  load_start = load_average()
  workers, ready = {}, {}
  for row in rows:  # started together: compilation is mostly single-threaded; timing starts once all are ready
    workers[row] = Worker(row, forward)
  for row in rows:
    ready[row] = workers[row].read()
    print(f"{row}: ready in {ready[row]['setup_s']:.1f}s (first loss {ready[row]['first_loss']:.3f})", flush=True)
  times, cpu_times = {row: [] for row in rows}, {row: [] for row in rows}
  peaks = {row: 0.0 for row in rows}  # best matmul FLOP/s of each process over the rounds
  for i in range(args.rounds):
    for row in rows:
      r = workers[row].ask(f"run {args.steps}")
      times[row].append(r["seconds"] / r["steps"])
      cpu_times[row].append(r["cpu_seconds"] / r["steps"])
      peaks[row] = max(peaks[row], workers[row].ask("peak")["matmul_peak_flops"])
    print(f"round {i + 1}/{args.rounds}: " + ", ".join(f"{row} {1000 * times[row][-1]:.0f}ms" for row in rows),
          flush=True)
  ends = {row: workers[row].ask("end") for row in rows}
  for w in workers.values():
    w.proc.wait()
  load_end = load_average()

  results = {}
  for row in rows:
    step_s = statistics.median(times[row])
    rs = {**s, "vocab": 32768} if row == "jax_full_v32k" else s
    tokens = rs["batch"] * rs["seq"]
    flops = flops_per_token(rs, row) * tokens
    results[row] = {"step_s": step_s, "step_s_all": times[row], "cpu_s_per_step": statistics.median(cpu_times[row]),
                    "tokens_s": tokens / step_s,
                    "model_flops_per_step": flops, "achieved_flops": flops / step_s,
                    "matmul_peak_flops": peaks[row], "mfu": flops / step_s / peaks[row],
                    "peak_mem_mb": ends[row]["peak_mem_mb"], "mem_kind": ends[row]["mem_kind"],
                    "first_loss": ready[row]["first_loss"], "last_loss": ends[row]["last_loss"],
                    "setup_s": ready[row]["setup_s"],
                    **{k: v for k, v in ready[row].items() if k not in ("ready", "setup_s", "first_loss")}}
  grpo = None
  if args.grpo:
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--worker=grpo"] + forward, cwd=REPO,
                          capture_output=True, text=True)
    lines = [l for l in proc.stdout.splitlines() if l.startswith(MARK)]
    if proc.returncode or not lines:
      raise RuntimeError(f"grpo worker failed:\n{proc.stderr[-3000:]}")
    grpo = json.loads(lines[-1][len(MARK):])

  refs = [r for r in ("torch_eager", "torch_compile", "hf_eager") if r in results]
  print(f"\nsize {args.size}: d_model {s['d_model']}, {s['n_layers']} layers, heads {s['n_heads']}/{s['n_kv_heads']} kv, "
        f"mlp {s['mlp']}, vocab {s['vocab']}, seq {s['seq']}, batch {s['batch']} ({total_params(s) / 1e6:.1f}M params); "
        f"{args.rounds} rounds x {args.steps} steps, median; load average {load_start:.1f} -> {load_end:.1f}; "
        f"{os.cpu_count()} cpus, torch threads {args.torch_threads}")
  print(table(results, refs))
  print("matmul peaks (GFLOP/s, per process, best over the rounds): "
        + ", ".join(f"{row} {r['matmul_peak_flops'] / 1e9:.0f}" for row, r in results.items()))
  if "jax_full" in results and "jax_full_v32k" in results:
    ratio = results["jax_full_v32k"]["peak_mem_mb"] / results["jax_full"]["peak_mem_mb"]
    print(f"peak memory vocab 32768 / 8192: {ratio:.2f}x (target <= 1.3x; loss.chunk_size={args.chunk_size})")
  if grpo:
    print(f"\nGRPO step ({grpo['prompts']} prompts x {grpo['group']} samples, prompt <= {grpo['prompt_len']}, "
          f"{grpo['new_tokens']} new tokens):\n| part | seconds | tokens/s |\n|---|---:|---:|")
    for part, label in (("rollout", "rollout (sampling)"), ("ref_logprobs", "reference log-probs"),
                        ("update", "update (one step)")):
      print(f"| {label} | {grpo[part + '_s']:.2f} | {grpo[part + '_tok_s']:.0f} |")
  result = {"size": args.size, "model": s, "args": {k: v for k, v in vars(args).items() if k != "worker"},
            "load_average": [load_start, load_end], "cpus": os.cpu_count(), "rows": results, "grpo": grpo}
  if args.out:
    with open(args.out, "w") as f:
      json.dump(result, f, indent=2)
  return result


if __name__ == "__main__":
  main()
