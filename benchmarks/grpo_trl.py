"""GRPO step speed: jaxllm side by side with TRL's `GRPOTrainer` on the same model, prompts and rollout shape.

  python benchmarks/grpo_trl.py [--out=grpo_trl.json]   # pipeline-size model, 8 prompts x 8 samples x 64 tokens
  python benchmarks/grpo_trl.py --smoke                 # tiny sizes, seconds (tests/test_benchmarks_smoke.py)
  python benchmarks/grpo_trl.py --sides=jaxllm,jaxllm_group   # jaxllm's layout against one branch row per group

One shared setup, then each side in its own subprocess (so torch's and XLA's thread pools never compete),
side by side in one run, in `--rounds` rounds whose order alternates (load changes on a shared machine hit both):
  setup   a byte-level BPE tokenizer trained on the built-in world (the pipeline's vocabulary size), a random
          init of the pipeline's model (d_model 256, 4 layers, 8/4 heads, SwiGLU 704, vocab 576) exported as a
          transformers folder (jaxllm.hf.save.export: Llama architecture, ChatML template), and the built-in
          world's RL prompts (a system turn and a question, ~50 tokens each)
  jaxllm  `init_from` = that folder, configs/grpo.py with rl.prompts_per_step / group_size / kl_beta and
          sampling.max_new_tokens set; each step is what `train.fit` does: `RolloutSource.next` (rollout,
          rewards, reference log-probs) then the jitted train step
  trl     `GRPOTrainer` on the same folder (`AutoModelForCausalLM`, `AutoTokenizer`), `model.generate` path
          (no vLLM), the same conversational prompts (TRL applies the folder's chat template: the same ids),
          the same rewards (jaxllm.rewards: exact_answer + format), num_generations = G, one optimizer step per
          generation batch, the same beta, learning rate and temperature 1, on CPU
Both sample from the same weights at temperature 1 with the same stop token, so completion lengths agree in
distribution (each side's mean length is reported). Steps: `--warmup` untimed (compilation, torch's first
calls) then `--steps` timed; a side's step time is the median. Each step's split:
  sampling   jaxllm: `sampling.generate` (rollout stats `sample_sec`); TRL: `GRPOTrainer._generate`
  reference  the rest of the rollout: rewards, advantages, batch layout and the reference log-probs (jaxllm:
             `rollout_sec - sample_sec`; TRL: `_generate_and_score_completions` minus `_generate`)
  update     the optimizer step on the rollout (jaxllm: the jitted train step, waited for; TRL: the rest of
             the trainer's step: forward, backward, AdamW)
Measured results: docs/performance.md.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

SIZES = {
    # configs/pipeline.py's tokenizer (1024 asked, ~530 learnt: vocab 576 once rounded up to 64) and model
    "pipeline": dict(tokenizer_vocab=1024, tokenizer_docs=20000, d_model=256, n_layers=4, n_heads=8, n_kv_heads=4,
                     mlp=704, prompts=8, group=8, new_tokens=64, max_prompt=64),
    "smoke": dict(tokenizer_vocab=512, tokenizer_docs=2000, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, mlp=64,
                  prompts=2, group=2, new_tokens=8, max_prompt=64),
}
MARK = "GRPO_TRL_RESULT "
PARTS = ("sampling", "reference", "update")
SIDES = ("jaxllm", "trl", "jaxllm_group", "jaxllm_plain")


def build_setup(folder: str, s: dict, args) -> dict:
  """The shared model folder and prompt records (folder/prompts.json); returns what describes them."""
  import flax.linen as nn
  import jax
  import jax.numpy as jnp

  from configs import base
  from jaxllm.data import synthetic
  from jaxllm.data.corpus import train_tokenizer
  from jaxllm.hf import save
  from jaxllm.model import ModelConfig, Transformer

  c = base.get_config()
  c.seed = args.seed
  c.tokenizer.update(train_docs=s["tokenizer_docs"], vocab_size=s["tokenizer_vocab"])
  tokenizer = train_tokenizer(c)  # the tokenizer stage's: the built-in world's prose and chat turns
  c.model.update(vocab_size=-(-tokenizer.n_vocab // 64) * 64, d_model=s["d_model"], n_layers=s["n_layers"],
                 n_heads=s["n_heads"], n_kv_heads=s["n_kv_heads"], mlp_dim=s["mlp"],
                 max_seq_len=s["max_prompt"] + s["new_tokens"])
  model_config = c.model.to_dict()
  model = Transformer(ModelConfig.from_config(c))
  weights = nn.meta.unbox(model.init(jax.random.PRNGKey(args.seed), jnp.zeros((1, 4), jnp.int32))["params"])
  save.export(os.path.join(folder, "model"), model_config, weights, tokenizer)
  records = synthetic.rl_prompts(args.seed, "train", s["prompts"] * (args.warmup + args.steps))
  with open(os.path.join(folder, "prompts.json"), "w") as f:
    json.dump(records, f)
  return {"vocab_size": model_config["vocab_size"], "tokenizer_vocab": tokenizer.n_vocab,
          "params": int(sum(x.size for x in jax.tree.leaves(weights)))}


def _records(folder: str) -> list[dict]:
  with open(os.path.join(folder, "prompts.json")) as f:
    return json.load(f)


# ------------------------------------------------------------------------------------------------ jaxllm side

def run_jaxllm(folder: str, s: dict, args, layout: str = "shared") -> dict:
  import jax
  import numpy as np

  from configs import grpo
  from jaxllm import rewards, rl, runtime, sharding, train
  from jaxllm.state import learning_rate_schedule, make_optimizer

  steps = args.warmup + args.steps
  c = grpo.get_config()
  c.init_from = os.path.join(folder, "model")
  c.workdir = os.path.join(folder, "jaxllm_run")
  c.seed = args.seed
  c.steps = steps
  c.checkpoint.every = steps
  c.rl.update(prompts_per_step=s["prompts"], group_size=s["group"], kl_beta=args.beta, eval_prompts=0,
              group_rows=layout != "plain",
                max_prompt_len=s["max_prompt"])
  c.sampling.max_new_tokens = s["new_tokens"]
  env = runtime.prepare(c)
  prompts, dropped = rl.encode_prompts(env.tokenizer, _records(folder), env.config.rl.max_prompt_len)
  if dropped:
    raise ValueError(f"{dropped} prompts longer than rl.max_prompt_len")
  # the stage's layout (shared), or for comparison one branch row per group (group) or a row per sample (plain)
  source = rl.RolloutSource(env, prompts, rewards.build(env.config.rl), shared_prompt=layout == "shared")
  source._prompt_at = lambda position: prompts[position]  # both sides walk the prompts in file order

  config = env.config
  tx = make_optimizer(config.optim, config.steps, config.lora.plus_ratio, config.seed)
  task = train.Task(loss=config.stage, batches=source)
  state, state_sh = train.init_state(env, task, tx)
  step_fn = jax.jit(train.make_train_step(env, task.loss, tx, learning_rate_schedule(config.optim, config.steps)),
                    in_shardings=(state_sh, sharding.batch_sharding(env.mesh)),
                    out_shardings=(state_sh, sharding.replicated(env.mesh)), donate_argnums=0)
  rows = []
  with env.mesh_context():
    for _ in range(steps):
      t0 = time.perf_counter()
      batch = source.next(state)
      t1 = time.perf_counter()
      state, metrics = step_fn(state, sharding.put_batch(batch, env.mesh))
      metrics = jax.device_get(metrics)
      t2 = time.perf_counter()
      stats = source.last_stats
      rows.append({"step_s": t2 - t0, "sampling": stats["sample_sec"],
                   "reference": (t1 - t0) - stats["sample_sec"], "update": t2 - t1,
                   "completion_len": stats["completion_len"], "row_len": stats["row_len"],
                   "trained_tokens": float(np.asarray(batch["loss_mask"]).sum()), "loss": float(metrics["loss"]),
                   "kl": float(metrics["kl"])})
  return {"steps": rows[args.warmup:], "prompt_lens": [len(p.ids) for p in prompts[:s["prompts"]]]}


# ------------------------------------------------------------------------------------------------ TRL side

def run_trl(folder: str, s: dict, args) -> dict:
  import torch
  from datasets import Dataset
  from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
  from trl import GRPOConfig, GRPOTrainer

  from configs import grpo
  from jaxllm import rewards

  torch.set_num_threads(args.torch_threads)
  records = _records(folder)
  model_dir = os.path.join(folder, "model")
  tokenizer = AutoTokenizer.from_pretrained(model_dir)
  model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
  rl_config = grpo.get_config().rl
  combined = rewards.build(rl_config)

  def reward(prompts, completions, answer, **kwargs):  # jaxllm's rewards (exact_answer + format) on the text
    texts = [c[0]["content"] if isinstance(c, list) else c for c in completions]
    eos = tokenizer.eos_token
    refs = [{"answer": a, "truncated": not t.endswith(eos) if eos else False} for a, t in zip(answer, texts)]
    return combined([t.removesuffix(eos) if eos else t for t in texts], refs)[0].tolist()

  timings = {"generate": [], "generate_and_score": [], "step": []}
  prompt_lens, completion_lens = [], []

  class Timed(GRPOTrainer):
    def _generate(self, prompts):
      t = time.perf_counter()
      out = super()._generate(prompts)
      timings["generate"].append(time.perf_counter() - t)
      return out

    def _generate_and_score_completions(self, inputs):
      t = time.perf_counter()
      out = super()._generate_and_score_completions(inputs)
      timings["generate_and_score"].append(time.perf_counter() - t)
      prompt_lens.extend(out["prompt_mask"].sum(1).tolist())
      completion_lens.extend(out["completion_mask"].sum(1).tolist())
      return out

  class StepClock(TrainerCallback):
    def on_step_begin(self, *a, **k):
      self.t = time.perf_counter()

    def on_step_end(self, *a, **k):
      timings["step"].append(time.perf_counter() - self.t)

  steps = args.warmup + args.steps
  config = GRPOConfig(
      output_dir=os.path.join(folder, "trl_run"), use_cpu=True, seed=args.seed, report_to="none",
      save_strategy="no", logging_steps=1, disable_tqdm=True, max_steps=steps, shuffle_dataset=False,
      per_device_train_batch_size=s["prompts"] * s["group"], num_generations=s["group"], steps_per_generation=1,
      gradient_accumulation_steps=1, max_completion_length=s["new_tokens"], temperature=1.0, beta=args.beta,
      learning_rate=2e-5, dataloader_num_workers=0)
  dataset = Dataset.from_list([{"prompt": r["messages"], "answer": r["answer"]} for r in records])
  trainer = Timed(model=model, reward_funcs=reward, args=config, train_dataset=dataset, processing_class=tokenizer,
                  callbacks=[StepClock()])
  trainer.train()
  rows = []
  for gen, gen_score, step in zip(timings["generate"], timings["generate_and_score"], timings["step"]):
    rows.append({"step_s": step, "sampling": gen, "reference": gen_score - gen, "update": step - gen_score})
  n = s["prompts"] * s["group"]
  for i, row in enumerate(rows):
    row["completion_len"] = float(sum(completion_lens[i * n:(i + 1) * n]) / n)
  first_prompts = prompt_lens[:s["prompts"] * s["group"]:s["group"]]  # the warm-up step's prompts, as jaxllm's
  return {"steps": rows[args.warmup:], "prompt_lens": [int(x) for x in first_prompts],
          "trl_version": __import__("trl").__version__}


# ------------------------------------------------------------------------------------------------ main

def summarize(result: dict) -> dict:
  steps = result["steps"]
  out = {"step_s": statistics.median(r["step_s"] for r in steps)}
  for part in PARTS:
    out[f"{part}_s"] = statistics.median(r[part] for r in steps)
  out["completion_len"] = statistics.mean(r["completion_len"] for r in steps)
  out["steps_per_s"] = 1.0 / out["step_s"]
  return out


def _worker(side: str, folder: str, args) -> dict:
  forward = [f"--{k}={v}" for k, v in vars(args).items() if k not in ("worker", "folder", "out", "smoke")]
  proc = subprocess.run([sys.executable, os.path.abspath(__file__), f"--worker={side}", f"--folder={folder}"]
                        + forward, cwd=REPO, capture_output=True, text=True)
  lines = [line for line in proc.stdout.splitlines() if line.startswith(MARK)]
  if proc.returncode or not lines:
    raise RuntimeError(f"{side} worker failed:\n{proc.stderr[-4000:]}")
  return json.loads(lines[-1][len(MARK):])


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--size", default="pipeline", choices=sorted(SIZES))
  parser.add_argument("--smoke", action="store_true", help="--size=smoke, 1 warm-up + 1 timed step: seconds")
  parser.add_argument("--steps", type=int, default=3, help="timed steps per side per round")
  parser.add_argument("--warmup", type=int, default=1, help="untimed steps first (compilation)")
  parser.add_argument("--rounds", type=int, default=1, help="rounds, each side once per round, order alternating")
  parser.add_argument("--beta", type=float, default=0.04, help="KL coefficient (rl.kl_beta / GRPOConfig.beta)")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--torch_threads", type=int, default=os.cpu_count(), help="torch.set_num_threads for TRL")
  parser.add_argument("--sides", default="jaxllm,trl",
                      help="sides run, of jaxllm, trl, and for comparison jaxllm_group / jaxllm_plain (jaxllm's "
                           "rollouts in one branch row per group / a row per sample instead of its shared-prompt "
                           "layout)")
  parser.add_argument("--out", default="", help="write the results as JSON here")
  parser.add_argument("--worker", default="", help=argparse.SUPPRESS)
  parser.add_argument("--folder", default="", help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  if args.smoke:
    args.size, args.steps, args.warmup = "smoke", 1, 1
  s = SIZES[args.size]
  if args.worker:
    side, _, layout = args.worker.partition("_")
    result = run_trl(args.folder, s, args) if side == "trl" else run_jaxllm(args.folder, s, args, layout or "shared")
    print(MARK + json.dumps(result), flush=True)
    return result

  with tempfile.TemporaryDirectory(prefix="grpo_trl_") as folder:
    setup = build_setup(folder, s, args)
    load_start = os.getloadavg()[0]
    order = args.sides.split(",")
    if set(order) - set(SIDES):
      raise SystemExit(f"--sides: {','.join(sorted(set(order) - set(SIDES)))} not in {','.join(SIDES)}")
    runs = {side: [] for side in order}
    for r in range(args.rounds):
      for side in (order if r % 2 == 0 else order[::-1]):
        runs[side].append(_worker(side, folder, args))
    load_end = os.getloadavg()[0]
  sides = {side: summarize({"steps": [row for run in rs for row in run["steps"]]}) for side, rs in runs.items()}
  prompt_lens = {side: rs[0]["prompt_lens"] for side, rs in runs.items()}
  ratio = sides["jaxllm"]["steps_per_s"] / sides["trl"]["steps_per_s"] if {"jaxllm", "trl"} <= set(sides) else None
  trl = f"TRL {runs['trl'][0]['trl_version']}, " if "trl" in runs else ""
  print(f"GRPO step: {s['prompts']} prompts x {s['group']} samples, <= {s['new_tokens']} new tokens, beta {args.beta}, "
        f"{setup['params'] / 1e6:.2f}M params (vocab {setup['vocab_size']}); {trl}"
        f"{args.rounds} round(s) x {args.steps} timed steps, load average {load_start:.1f} -> {load_end:.1f}")
  print("| side | step s | steps/s | sampling s | reference s | update s | mean completion |\n"
        "|---|---:|---:|---:|---:|---:|---:|")
  for side, r in sides.items():
    print(f"| {side} | {r['step_s']:.2f} | {r['steps_per_s']:.3f} | {r['sampling_s']:.2f} | {r['reference_s']:.2f} | "
          f"{r['update_s']:.2f} | {r['completion_len']:.1f} |")
  if ratio is not None:
    print(f"jaxllm / TRL steps/s: {ratio:.2f}x")
  if ratio is not None and prompt_lens["jaxllm"] != prompt_lens["trl"]:
    print(f"note: prompt lengths differ: jaxllm {prompt_lens['jaxllm']} vs TRL {prompt_lens['trl']}")
  result = {"size": args.size, "shape": s, "beta": args.beta, "setup": setup, "rounds": args.rounds,
            "steps": args.steps, "load_average": [load_start, load_end], "cpus": os.cpu_count(),
            "sides": sides, "ratio_steps_per_s": ratio, "prompt_lens": prompt_lens, "runs": runs}
  if args.out:
    with open(args.out, "w") as f:
      json.dump(result, f, indent=1)
  return result


if __name__ == "__main__":
  main()
