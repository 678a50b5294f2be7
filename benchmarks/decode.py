"""Decode throughput (new tokens/s): the KV-cache engine vs naive no-cache generation vs transformers `generate`.

  python benchmarks/decode.py [--out=decode.json]        # d_model 512, 6 layers, GQA 8/4, vocab 8192: minutes
  python benchmarks/decode.py --skip_naive --batches=32,128   # the two target ratios only
  python benchmarks/decode.py --smoke                    # tiny sizes, seconds (tests/test_benchmarks_smoke.py)

Greedy decoding of `--new` tokens after random `--prompt`-token prompts (no stop token, so every row runs to
the end), at each batch size in `--batches`, on the same random weights in all three:
  engine        jaxllm.sampling.generate: one compiled call, prefill + lax.while_loop over a static KV cache
  naive         no cache: a jitted full forward over the whole sequence for every new token (padded to a
                multiple of 64 so it compiles once per bucket; the vocab head only at the last position)
  transformers  LlamaForCausalLM.generate (torch, CPU, its own KV cache) with the weights copied across
  lookahead     the engine with n-gram speculation (`--lookahead` drafted tokens a step, jaxllm/speculative.py):
                the same tokens (checked); its speed depends on how often the text repeats itself, and this
                random-weight model's greedy text falls into loops, which flatters it at batch 1
Times include prefill, exclude compilation (one warm-up call each), and take the best of `--repeats`. A real
naive run takes minutes per run at batch 1 and most of an hour at batch 32 on 2 cores, so its time is the sum
over the decode steps of the measured time of one forward at that step's bucket (an estimate that leaves out
the loop's host overhead, i.e. flatters naive). The sanity lines report how many greedy tokens the engine
shares with transformers, and at batch 1 with the first 32 tokens of a real naive loop. The last lines compare
the engine / transformers ratio with its target at the batch sizes that have one (TARGETS: 2x at 32, 2.5x at 128).
"""
import argparse
import json
import os
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from jaxllm.model import ModelConfig, Transformer  # noqa: E402
from jaxllm.sampling import SamplingParams, generate  # noqa: E402

FULL = ModelConfig(vocab_size=8192, d_model=512, n_layers=6, n_heads=8, n_kv_heads=4, head_dim=64, mlp_dim=1408,
                   max_seq_len=512)
SMOKE = ModelConfig(vocab_size=256, d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=16, mlp_dim=128,
                    max_seq_len=64)
NAIVE_BUCKET = 64
TARGETS = {32: 2.0, 128: 2.5}  # batch -> engine / transformers tokens/s the engine should reach


def _best(fn, repeats: int) -> tuple[float, object]:
  """(best wall seconds, last result) of `repeats` calls after one warm-up call."""
  fn()
  best, out = float("inf"), None
  for _ in range(repeats):
    start = time.perf_counter()
    out = fn()
    best = min(best, time.perf_counter() - start)
  return best, out


def bench_engine(model, weights, prompts: np.ndarray, new: int, repeats: int,
                 lookahead: int = 0) -> tuple[float, np.ndarray]:
  params = SamplingParams(max_new_tokens=new, lookahead=lookahead)
  rows = prompts.tolist()
  seconds, out = _best(lambda: generate(model, weights, rows, params, jax.random.PRNGKey(0)), repeats)
  return seconds, out.tokens


def _naive_step(model):
  @jax.jit
  def step(weights, tokens_BL, last):  # greedy next token after column `last`, no cache
    hidden_BLD = model.apply({"params": weights}, tokens_BL, return_hidden=True)
    last_B1D = jax.lax.dynamic_slice_in_dim(hidden_BLD, last, 1, axis=1)
    return jnp.argmax(model.apply({"params": weights}, last_B1D, method=Transformer.head)[:, 0], axis=-1)
  return step


def _bucket(n: int) -> int:
  return -(-n // NAIVE_BUCKET) * NAIVE_BUCKET


def bench_naive(model, weights, prompts: np.ndarray, new: int, repeats: int,
                check: int) -> tuple[float, np.ndarray]:
  """(estimated seconds for `new` tokens, the first `check` greedy tokens of a real naive loop).

  A real loop at 128 + 256 tokens takes minutes per run even at batch 1, so its time is the sum over the
  decode steps of the best measured forward at that step's bucket; the real loop would only add host overhead.
  """
  step = _naive_step(model)
  b, p = prompts.shape
  seq = np.zeros((b, _bucket(p + new)), np.int32)
  seq[:, :p] = prompts
  per_bucket = {}
  for width in sorted({_bucket(p + t) for t in range(new)}):
    per_bucket[width], _ = _best(lambda: step(weights, seq[:, :width], width - 1).block_until_ready(), repeats)
  seconds = sum(per_bucket[_bucket(p + t)] for t in range(new))
  for t in range(check):  # the naive loop itself, for the sanity check
    n = p + t
    seq[:, n] = np.asarray(step(weights, seq[:, :_bucket(n)], n - 1))
  return seconds, seq[:, p:p + check]


def to_transformers(cfg: ModelConfig, weights):
  """LlamaForCausalLM with the same architecture and the jaxllm weights copied in."""
  import torch
  from transformers import LlamaConfig, LlamaForCausalLM

  hf_cfg = LlamaConfig(vocab_size=cfg.vocab_size, hidden_size=cfg.d_model, intermediate_size=cfg.mlp_dim,
                       num_hidden_layers=cfg.n_layers, num_attention_heads=cfg.n_heads,
                       num_key_value_heads=cfg.n_kv_heads, head_dim=cfg.head_dim,
                       max_position_embeddings=cfg.max_seq_len, rms_norm_eps=cfg.norm_eps,
                       rope_theta=cfg.rope_theta, tie_word_embeddings=False, attention_bias=False)
  w = jax.tree.map(np.asarray, weights)

  def linear(x, n_in):  # ours: [in dims..., out dims...]; torch Linear: [out, in]
    x = x.reshape(int(np.prod(x.shape[:n_in])), -1)
    return x.T

  state = {"model.embed_tokens.weight": w["embedding"], "lm_head.weight": w["lm_head"].T,
           "model.norm.weight": w["final_norm"]["scale"]}
  for i in range(cfg.n_layers):
    layer, pre = w[f"layers_{i}"], f"model.layers.{i}."
    state[pre + "input_layernorm.weight"] = layer["attn_norm"]["scale"]
    state[pre + "post_attention_layernorm.weight"] = layer["mlp_norm"]["scale"]
    for name in ("q", "k", "v"):
      state[pre + f"self_attn.{name}_proj.weight"] = linear(layer["attn"][name]["w"], 1)
    state[pre + "self_attn.o_proj.weight"] = linear(layer["attn"]["o"]["w"], 2)
    for name in ("gate", "up", "down"):
      state[pre + f"mlp.{name}_proj.weight"] = linear(layer["mlp"][name]["w"], 1)
  model = LlamaForCausalLM(hf_cfg).eval()
  missing, unexpected = model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in state.items()},
                                              strict=False)
  if unexpected or [k for k in missing if "rotary" not in k]:
    raise ValueError(f"weight copy: missing {missing}, unexpected {unexpected}")
  return model


def bench_transformers(model, prompts: np.ndarray, new: int, repeats: int) -> tuple[float, np.ndarray]:
  import torch

  ids = torch.from_numpy(prompts.astype(np.int64))

  def run():
    with torch.inference_mode():
      out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=new,
                           min_new_tokens=new, do_sample=False, eos_token_id=None, pad_token_id=0,
                           bos_token_id=None)
    return out[:, prompts.shape[1]:].numpy()

  return _best(run, repeats)


def _agreement(a: np.ndarray, b: np.ndarray) -> dict:
  """Share of identical tokens, rows identical throughout, and the mean length of the common prefix."""
  same = a == b
  prefix = np.where(same.all(1), a.shape[1], np.argmin(same, axis=1))
  return {"tokens": float(same.mean()), "rows": int(same.all(1).sum()), "of_rows": len(a),
          "mean_common_prefix": float(prefix.mean()), "length": a.shape[1]}


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--smoke", action="store_true", help="tiny model and lengths (a test runs this)")
  parser.add_argument("--batches", default="")
  parser.add_argument("--prompt", type=int, default=0)
  parser.add_argument("--new", type=int, default=0)
  parser.add_argument("--repeats", type=int, default=2)
  parser.add_argument("--torch_threads", type=int, default=0, help="0 = torch's default (one per core)")
  parser.add_argument("--skip_naive", action="store_true", help="engine vs transformers only (naive is slow)")
  parser.add_argument("--lookahead", type=int, default=4,
                      help="also time the engine with n-gram speculation of this many tokens a step; 0 = skip")
  parser.add_argument("--out", default="", help="write the results as JSON here")
  args = parser.parse_args(argv)
  cfg = SMOKE if args.smoke else FULL
  batches = [int(b) for b in (args.batches or ("1,2" if args.smoke else "1,32,128")).split(",")]
  prompt_len = args.prompt or (8 if args.smoke else 128)
  new = args.new or (8 if args.smoke else 256)
  repeats = 1 if args.smoke else args.repeats

  import torch
  if args.torch_threads:
    torch.set_num_threads(args.torch_threads)
  model = Transformer(cfg)
  weights = nn.meta.unbox(jax.jit(model.init)(jax.random.PRNGKey(0), jnp.zeros((1, 8), jnp.int32))["params"])
  hf_model = to_transformers(cfg, weights)
  print(f"model: d_model {cfg.d_model}, {cfg.n_layers} layers, heads {cfg.n_heads}/{cfg.n_kv_heads} kv, "
        f"mlp {cfg.mlp_dim}, vocab {cfg.vocab_size}; prompt {prompt_len}, {new} new tokens, greedy; "
        f"jax {jax.__version__} on {jax.devices()[0].platform}, torch {torch.__version__} with "
        f"{torch.get_num_threads()} threads, {os.cpu_count()} cpus, load average {os.getloadavg()[0]:.1f}",
        flush=True)
  load_before = os.getloadavg()[0]
  rows = []
  for b in batches:
    prompts = np.random.default_rng(b).integers(0, cfg.vocab_size, (b, prompt_len)).astype(np.int32)
    engine_s, engine_tokens = bench_engine(model, weights, prompts, new, repeats)
    check = min(new, 32) if b == 1 else 0
    naive_s, naive_tokens = (None, None) if args.skip_naive else bench_naive(
        model, weights, prompts, new, repeats, check)
    hf_s, hf_tokens = bench_transformers(hf_model, prompts, new, repeats)
    row = {"batch": b, "engine_tok_s": b * new / engine_s, "naive_tok_s": None if naive_s is None else b * new / naive_s,
           "transformers_tok_s": b * new / hf_s, "engine_s": engine_s, "naive_s": naive_s, "transformers_s": hf_s,
           "agree_transformers": _agreement(engine_tokens, hf_tokens)}
    if args.lookahead:
      spec_s, spec_tokens = bench_engine(model, weights, prompts, new, repeats, args.lookahead)
      row.update(lookahead=args.lookahead, lookahead_tok_s=b * new / spec_s, lookahead_s=spec_s,
                 agree_lookahead=_agreement(spec_tokens, engine_tokens))
    if check and naive_tokens is not None:
      row["agree_naive"] = _agreement(engine_tokens[:, :check], naive_tokens)
    rows.append(row)
    naive = "skipped" if naive_s is None else f"{naive_s:.2f}s (est)"
    print(f"batch {b}: engine {engine_s:.2f}s, naive {naive}, transformers {hf_s:.2f}s", flush=True)

  print(f"\n| batch | engine tok/s | naive tok/s | transformers tok/s | engine / naive | engine / transformers | "
        f"lookahead {args.lookahead} tok/s | lookahead / transformers |")
  print("|---:|---:|---:|---:|---:|---:|---:|---:|")
  for r in rows:
    engine, naive = r["engine_tok_s"], r["naive_tok_s"]  # naive: None with --skip_naive
    naive_col, ratio_col = ("–", "–") if naive is None else (f"{naive:.1f}", f"{engine / naive:.1f}x")
    spec_cols = (f"{r['lookahead_tok_s']:.0f} | {r['lookahead_tok_s'] / r['transformers_tok_s']:.2f}x"
                 if "lookahead_tok_s" in r else "– | –")
    print(f"| {r['batch']} | {engine:.0f} | {naive_col} | {r['transformers_tok_s']:.0f} | {ratio_col} | "
          f"{engine / r['transformers_tok_s']:.2f}x | {spec_cols} |")
  for r in rows:
    for other in ("transformers", "naive", "lookahead"):
      if f"agree_{other}" in r:
        a = r[f"agree_{other}"]
        print(f"sanity, batch {r['batch']}: greedy tokens engine == {other}: {a['tokens']:.1%} of tokens, "
              f"{a['rows']}/{a['of_rows']} rows identical, mean common prefix {a['mean_common_prefix']:.0f}/"
              f"{a['length']}")
  for r in rows:
    if r["batch"] in TARGETS:
      ratio, target = r["engine_tok_s"] / r["transformers_tok_s"], TARGETS[r["batch"]]
      r["target_ratio"] = target
      print(f"target, batch {r['batch']}: engine / transformers {ratio:.2f}x, target >= {target}x: "
            f"{'met' if ratio >= target else 'NOT met'}")
      if "lookahead_tok_s" in r:
        ratio = r["lookahead_tok_s"] / r["transformers_tok_s"]
        print(f"target, batch {r['batch']}: engine with lookahead {args.lookahead} / transformers {ratio:.2f}x, "
              f"target >= {target}x: {'met' if ratio >= target else 'NOT met'}")
  result = {"config": {"model": cfg.__dict__, "prompt": prompt_len, "new_tokens": new, "repeats": repeats,
                       "jax": jax.__version__, "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
                       "cpus": os.cpu_count(), "load_average": [load_before, os.getloadavg()[0]]},
            "rows": rows}
  if args.out:
    with open(args.out, "w") as f:
      json.dump(result, f, indent=2)
  return result


if __name__ == "__main__":
  main()
