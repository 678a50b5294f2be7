"""Small-memory fine-tuning: NF4/int8 round trips, QLoRA forward = forward of the dequantized model (with the
embedding and output head quantized too, tied or not, and the whole frozen tree <= 0.30x bf16's), LoRA+ gives
`b` its learning rate, DoRA's merged weight = its forward, GaLore at full rank = AdamW, and a QLoRA+DoRA+LoRA+
train step through train.init_state; frozen_matmul (the sliced product of a quantized or bf16 frozen base) equals
the plain product and keeps about one converted matrix in XLA's temporaries. Every check also runs once under an
8-device (data 2, fsdp 2, tensor 2) mesh, in one subprocess (the fake device count is fixed at jax import)."""
import dataclasses
import json
import os
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from jaxllm import frozen_matmul, galore, quant, sharding
from jaxllm import lora as lora_lib
from jaxllm.losses.common import hidden_logprobs
from jaxllm.model import ModelConfig, Transformer, matmul_2d
from jaxllm.state import make_optimizer

ALL = lora_lib.parse_targets("q,k,v,o,gate,up,down")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_CFG = ModelConfig(vocab_size=96, d_model=64, n_layers=1, n_heads=4, n_kv_heads=2, head_dim=16, mlp_dim=128,
                   max_seq_len=32, attn_bias=True, lora_scale=2.0)


def _qcfg(kind: str, block: int = 32, double_quant: bool = True, tables: bool = False):
  return ml_collections.ConfigDict(dict(quantize=kind, quant_block=block, double_quant=double_quant,
                                        targets="q,k,v,o,gate,up,down", quantize_embeddings=tables))


def _put(tree, mesh, shardings=None):
  """Place a host tree on the mesh (replicated unless shardings are given); identity without a mesh."""
  if mesh is None:
    return jax.tree.map(jnp.asarray, tree)
  return jax.device_put(tree, shardings if shardings is not None else NamedSharding(mesh, P()))


def _model_and_weights(mesh, seed: int = 0, cfg: ModelConfig = _CFG):
  """A tiny random model (weights at their logical shardings on `mesh`) and random adapters with b != 0."""
  model = Transformer(cfg)
  boxed = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 4), jnp.int32)))["params"]
  rng = np.random.default_rng(seed)
  base = jax.tree.map(lambda s: rng.normal(0.0, 0.1, s.shape).astype(np.float32), nn.meta.unbox(boxed))
  adapters = jax.eval_shape(lambda: lora_lib.init_lora(base, ALL, 4, jax.random.PRNGKey(1)))
  adapters = jax.tree.map(lambda s: rng.normal(0.0, 0.05, s.shape).astype(np.float32), adapters)
  weight_sh = sharding.logical_shardings(boxed, mesh) if mesh is not None else None
  return model, _put(base, mesh, weight_sh), weight_sh, _put(adapters, mesh)


def _quantized(base, weight_sh, kind, mesh, tables=False):
  lcfg = _qcfg(kind, tables=tables)
  return lora_lib.quantize_weights(base, lcfg, lora_lib.tensor_quantizer(lcfg, weight_sh, mesh))


def _dequantized(quantized_weights, shapes):
  """Full-precision weights rebuilt from a quantized tree (the reference the QLoRA forward must equal)."""
  def rebuild(path, proj):
    return {**proj, "w": quant.dequantize(proj["w"], lora_lib._lookup(shapes, path)["w"].shape)}
  out = lora_lib._rebuild(quantized_weights, rebuild)
  for name in lora_lib.TABLES:
    if quant.is_quantized(out.get(name)):
      out[name] = lora_lib.dequantize_table(out[name], name)
  return out


# ------------------------------------------------------------------------------------------------ checks

def check_nf4_and_int8_round_trip(mesh=None):
  w = np.random.default_rng(0).normal(0.0, 0.02, (256, 128)).astype(np.float32)
  w[:64, 0] = 0.0  # an all-zero block dequantizes to exact zeros
  w_dev = _put(w, mesh)
  absmax = np.abs(w.reshape(4, 64, 128)).max(axis=1)
  normed = w / np.repeat(np.where(absmax > 0, absmax, 1.0), 64, axis=0)
  nearest = np.abs(normed[..., None] - quant.NF4_LEVELS).argmin(-1)
  # Without double quantization each value is its nearest NF4 level times its block's absmax: the error is at
  # most half the gap to the neighbouring level (<= 0.139 x absmax), exactly the format's known bound.
  q = jax.jit(lambda x: quant.quantize(x, "nf4", 1, 64, double_quant=False))(w_dev)
  back = np.asarray(jax.jit(lambda q: quant.dequantize(q, w.shape))(q))
  np.testing.assert_allclose(back, quant.NF4_LEVELS[nearest] * np.repeat(absmax, 64, axis=0), rtol=1e-6, atol=0)
  assert np.all(back[:64, 0] == 0)
  assert np.abs(back - w).max() <= 0.1386 * absmax.max()
  rel_rms = np.sqrt(np.mean((back - w) ** 2) / np.mean(w ** 2))
  assert 0.05 < rel_rms < 0.12, rel_rms  # NF4 on normal weights: ~9% relative RMS error (QLoRA's regime)
  # Double-quantized scales add their own (small) error; int8 is ~20x tighter.
  q_dq = jax.jit(lambda x: quant.quantize(x, "nf4", 1, 64, double_quant=True))(w_dev)
  back_dq = np.asarray(jax.jit(lambda q: quant.dequantize(q, w.shape))(q_dq))
  assert np.abs(back_dq - back).max() <= 0.01 * absmax.max()
  q8 = jax.jit(lambda x: quant.quantize(x, "int8", 1, 64, double_quant=False))(w_dev)
  back8 = np.asarray(jax.jit(lambda q: quant.dequantize(q, w.shape))(q8))
  assert np.abs(back8 - w).max() <= np.repeat(absmax, 64, axis=0).max() / 254 * 1.0001
  # Storage: NF4 + DQ is 0.5 + 1/64 + 4/(64*128) bytes a weight here, ~0.26 x bf16's 2 bytes.
  assert quant.nbytes(q_dq) / (w.size * 2) < 0.27


def check_qlora_forward_equals_dequantized_model(mesh=None):
  model, base, weight_sh, adapters = _model_and_weights(mesh)
  tokens = _put(np.random.default_rng(3).integers(0, 96, (2, 16)).astype(np.int32), mesh)
  apply = jax.jit(lambda w, lr, t: model.apply({"params": w}, t, lora=lr))
  shapes = jax.eval_shape(lambda: base)
  for kind in ("nf4", "int8"):
    rest, quantized = lora_lib.split_quantized(_quantized(base, weight_sh, kind, mesh))
    assert not any("w" in proj for proj in _projections(rest))  # no full-precision copy of a quantized weight
    got = np.asarray(apply(rest, lora_lib.with_base(adapters, quantized), tokens))
    reference_weights = jax.jit(_dequantized)(_quantized(base, weight_sh, kind, mesh), shapes)
    want = np.asarray(apply(reference_weights, adapters, tokens))
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
    # Merging (export) dequantizes: the merged model is the one the adapters were trained against.
    merged = jax.jit(lambda b, a: lora_lib.merge(b, a, _CFG.lora_scale, _qcfg(kind)))(base, adapters)
    np.testing.assert_allclose(np.asarray(apply(merged, None, tokens)), want, atol=1e-5, rtol=0)
    assert np.abs(np.asarray(apply(base, adapters, tokens)) - want).max() > 1e-4  # quantization is visible


def check_frozen_matmul_equals_the_plain_product(mesh=None):
  """frozen_matmul (the converted-slice-by-slice product of a quantized or bf16 frozen base) gives the plain
  product's output and input gradient, and a float base its weight gradient, over one and two input dims."""
  rng = np.random.default_rng(21)
  for in_shape, out_shape in (((128,), (96,)), ((4, 32), (64,))):
    k, n = int(np.prod(in_shape)), int(np.prod(out_shape))
    w = rng.normal(0.0, 0.1, in_shape + out_shape).astype(np.float32)
    x = _put(rng.normal(size=(2, 5) + in_shape).astype(np.float32), mesh)
    r = _put(rng.normal(size=(2, 5) + out_shape).astype(np.float32), mesh)
    bases = {kind: jax.jit(lambda w, kind=kind: quant.quantize(w, kind, len(in_shape), 32, True))(_put(w, mesh))
             for kind in ("nf4", "int8")}
    bases["bfloat16"] = _put(w.astype(jnp.bfloat16), mesh)
    for name, b in bases.items():
      if quant.is_quantized(b):
        assert frozen_matmul.row_parts(b) >= 2 and frozen_matmul.column_parts(b) >= 2
      w32 = quant.dequantize(b, in_shape + out_shape) if quant.is_quantized(b) else b.astype(jnp.float32)
      loss = lambda x, b: jnp.sum(frozen_matmul.frozen_matmul(x, b, len(in_shape), out_shape, jnp.float32) * r)
      plain = lambda x, w: jnp.sum(matmul_2d(x, w, len(in_shape)) * r)
      argnums = (0,) if quant.is_quantized(b) else (0, 1)
      got, got_grads = jax.jit(jax.value_and_grad(loss, argnums))(x, b)
      want, want_grads = jax.jit(jax.value_and_grad(plain, argnums))(x, w32)
      np.testing.assert_allclose(float(got), float(want), rtol=1e-5, err_msg=name)
      np.testing.assert_allclose(np.asarray(got_grads[0]), np.asarray(want_grads[0]), atol=1e-5, err_msg=name)
      if len(argnums) == 2:
        np.testing.assert_allclose(np.asarray(got_grads[1], np.float32),
                                   np.asarray(want_grads[1].astype(jnp.bfloat16), np.float32), rtol=1e-2, atol=1e-3)


def check_quantized_embedding_and_head(mesh=None):
  """lora.quantize_embeddings: logits, chunked log-probs (the last vocabulary slice shorter) and their gradient
  equal the dequantized model's; the whole frozen tree is <= 0.30x its bf16 bytes; merging dequantizes; a tied
  head reads the one quantized embedding."""
  tokens = _put(np.random.default_rng(9).integers(0, 96, (2, 16)).astype(np.int32), mesh)
  targets = _put(np.random.default_rng(10).integers(0, 96, (2, 16)).astype(np.int32), mesh)
  for tie in (False, True):
    cfg = dataclasses.replace(_CFG, tie_embeddings=tie)
    model, base, weight_sh, adapters = _model_and_weights(mesh, seed=11, cfg=cfg)
    quantized_weights = _quantized(base, weight_sh, "nf4", mesh, tables=True)
    rest, quantized = lora_lib.split_quantized(quantized_weights)
    assert not set(rest) & {"embedding", "lm_head"}
    assert set(quantized) == {"layers_0", "embedding"} | (set() if tie else {"lm_head"})
    bf16_bytes = sum(x.size for x in jax.tree.leaves(base)) * 2
    assert (quant.nbytes(rest) + quant.nbytes(quantized)) / bf16_bytes <= 0.30
    reference = jax.jit(_dequantized)(quantized_weights, jax.eval_shape(lambda: base))
    apply = jax.jit(lambda w, lr: model.apply({"params": w}, tokens, lora=lr))
    want = np.asarray(apply(reference, adapters))
    np.testing.assert_allclose(np.asarray(apply(rest, lora_lib.with_base(adapters, quantized))), want, atol=1e-5,
                               rtol=0)
    if tie:
      continue

    def logprobs_and_grad(weights, lora, chunk):
      hidden = model.apply({"params": weights}, tokens, lora=lora, return_hidden=True)
      logp = lambda h: hidden_logprobs(model, weights, h, targets, chunk, lora)[0]
      return logp(hidden), jax.grad(lambda h: logp(h).sum())(hidden)

    got = jax.jit(logprobs_and_grad, static_argnums=2)(rest, lora_lib.with_base(adapters, quantized), 40)
    for g, w in zip(got, jax.jit(logprobs_and_grad, static_argnums=2)(reference, adapters, 0)):
      np.testing.assert_allclose(np.asarray(g), np.asarray(w), atol=1e-5, rtol=0)
    merged = jax.jit(lambda b, a: lora_lib.merge(b, a, cfg.lora_scale, _qcfg("nf4", tables=True)))(base, adapters)
    np.testing.assert_allclose(np.asarray(apply(merged, None)), want, atol=1e-5, rtol=0)


def _projections(tree):
  if isinstance(tree, dict) and any(k in tree for k in ("w", "a", "quant")) and not isinstance(tree.get("w"), dict):
    return [tree]
  return [p for sub in tree.values() if isinstance(sub, dict) for p in _projections(sub)]


def check_dora_merged_weight_equals_forward(mesh=None):
  model, base, weight_sh, adapters = _model_and_weights(mesh, seed=5)
  tokens = _put(np.random.default_rng(4).integers(0, 96, (2, 16)).astype(np.int32), mesh)
  apply = jax.jit(lambda w, lr, t: model.apply({"params": w}, t, lora=lr))
  shapes = jax.eval_shape(lambda: base)
  magnitudes = jax.jit(lambda w: lora_lib.init_magnitudes(w, shapes, ALL))(base)
  fresh = jax.tree.map(lambda ab, m: {"a": ab["a"], "b": jnp.zeros_like(ab["b"]), **m}, adapters, magnitudes,
                       is_leaf=lambda x: isinstance(x, dict) and "a" in x)
  plain = np.asarray(apply(base, None, tokens))
  np.testing.assert_allclose(np.asarray(apply(base, fresh, tokens)), plain, atol=1e-5, rtol=0)  # m = ||W||
  rng = np.random.default_rng(6)
  dora = jax.tree.map(lambda ab, m: {**ab, "m": m["m"] * (1 + 0.2 * rng.standard_normal(m["m"].shape))},
                      adapters, magnitudes, is_leaf=lambda x: isinstance(x, dict) and "a" in x)
  dora = _put(jax.device_get(dora), mesh)
  forward = np.asarray(apply(base, dora, tokens))
  merged = jax.jit(lambda b, a: lora_lib.merge(b, a, _CFG.lora_scale))(base, dora)
  np.testing.assert_allclose(np.asarray(apply(merged, None, tokens)), forward, atol=1e-5, rtol=0)
  assert np.abs(forward - np.asarray(apply(base, adapters, tokens))).max() > 1e-3  # the magnitude matters


def check_lora_plus_gives_b_its_learning_rate(mesh=None):
  optim = ml_collections.ConfigDict(dict(lr=1e-2, warmup_steps=0, min_lr_ratio=1.0, decay_steps=0,
                                         weight_decay=0.0, decay_embeddings=False, b1=0.9, b2=0.95, eps=1e-8,
                                         grad_clip=0.0, mu_dtype="", name="adamw"))
  rng = np.random.default_rng(7)
  params = _put({"lora": {"q": {"a": rng.normal(size=(8, 4)).astype(np.float32),
                                "b": rng.normal(size=(4, 8)).astype(np.float32)}}}, mesh)
  grads = jax.tree.map(lambda x: x * 0.3 + 0.1, params)
  updates = {}
  for ratio in (1.0, 16.0):
    tx = make_optimizer(optim, 10, ratio)
    updates[ratio], _ = jax.jit(tx.update)(grads, jax.jit(tx.init)(params), params)
  a1, b1 = (np.asarray(updates[1.0]["lora"]["q"][k]) for k in "ab")
  a16, b16 = (np.asarray(updates[16.0]["lora"]["q"][k]) for k in "ab")
  np.testing.assert_allclose(a16, a1, rtol=1e-6)  # A keeps the base learning rate
  np.testing.assert_allclose(b16, 16.0 * b1, rtol=1e-6)  # B's is 16 x A's
  np.testing.assert_allclose(np.abs(a1), 1e-2, rtol=1e-3)  # Adam's first step: lr x sign(g)


def check_galore_full_rank_is_adamw_and_low_rank_projects(mesh=None):
  rng = np.random.default_rng(8)
  params = _put({"w": rng.normal(size=(16, 24)).astype(np.float32), "o": rng.normal(size=(4, 4, 16)).astype(np.float32),
                 "scale": np.ones(16, np.float32)}, mesh)
  grads = [jax.tree.map(lambda x, i=i: jnp.asarray(np.random.default_rng(20 + i).normal(size=x.shape),
                                                    jnp.float32), params) for i in range(3)]
  input_dims = lambda path, leaf: 2 if path[-1].key == "o" else 1
  mask = lambda p: jax.tree.map(lambda x: x.ndim >= 2, p)

  def run(tx):
    state, p = jax.jit(tx.init)(params), params
    step = jax.jit(lambda g, s, p: (lambda u, s: (optax.apply_updates(p, u), s))(*tx.update(g, s, p)))
    for g in grads:
      p, state = step(g, state, p)
    return p, state

  kw = dict(b1=0.9, b2=0.95, eps=1e-8, weight_decay=0.1, mask=mask)
  full, _ = run(galore.galore_adamw(1e-2, rank=16, update_every=2, scale=0.25, input_dims=input_dims, **kw))
  adamw, _ = run(optax.adamw(1e-2, **kw))
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7), full, adamw)

  # Rank 2: moments are [2, 24] / [16, 2]-sized, and the first step lies in the span of the gradient's top-2
  # singular vectors (refreshed at step 0), scaled by `scale`.
  tx = galore.scale_by_galore_adam(2, 100, scale=0.25, b1=0.9, b2=0.95, eps=1e-8, input_dims=input_dims)
  state = jax.jit(tx.init)(params)
  assert state.mu["w"].shape == (2, 24) and state.mu["o"].shape == (2, 16) and state.proj["o"].shape == (16, 2)
  assert state.mu["scale"].shape == (16,)
  # A gradient with two dominant directions: the randomized SVD must find exactly their span.
  u0, _, vt0 = np.linalg.svd(np.random.default_rng(9).normal(size=(16, 24)), full_matrices=False)
  g = (u0 * np.array([10.0, 6.0] + [0.5] * 14)) @ vt0
  update, state = jax.jit(tx.update)({**grads[0], "w": _put(g.astype(np.float32), mesh)}, state)
  top = u0[:, :2]
  step = np.asarray(update["w"])
  np.testing.assert_allclose(top @ (top.T @ step), step, atol=1e-5)  # inside the rank-2 subspace
  r = top.T @ g  # Adam's first step in the projected space is sign(r) (up to the basis' signs), times scale
  np.testing.assert_allclose(np.abs(top.T @ step), 0.25 * np.abs(r) / (np.abs(r) + 1e-8), atol=1e-4)


def test_hf_import_quantizes_each_tensor_as_it_is_read(tmp_path):
  from test_hf import _hf_model
  from jaxllm import hf

  _hf_model("llama", tmp_path)
  _, full = hf.load(str(tmp_path))
  lcfg = _qcfg("nf4", block=16)
  calls = []
  convert = lora_lib.tensor_quantizer(lcfg)
  _, read = hf.load(str(tmp_path), convert=lambda path, x: calls.append(path) or convert(path, x))
  assert len(calls) == len(jax.tree.leaves(full))  # one call per tensor, as each is read
  want = lora_lib.quantize_weights(full, lcfg)
  assert quant.is_quantized(read["layers_0"]["mlp"]["down"]["w"]) and not quant.is_quantized(read["embedding"])
  jax.tree.map(np.testing.assert_array_equal, read, want)


# ------------------------------------------------------------------------------- wired through train.fit's state

@pytest.mark.parametrize("overrides", [
    {"lora.quantize": "nf4", "lora.dora": True, "lora.plus_ratio": 4.0, "lora.rslora": True},
    {"lora.rank": 0, "optim.name": "galore", "optim.galore_rank": 8, "optim.galore_update_every": 2},
], ids=["qlora_dora_plus", "galore"])
def test_a_train_step_with_the_small_memory_options(tmp_path, initial_pretrain_workdir, overrides):
  from conftest import tiny_config
  from jaxllm import runtime, train
  from jaxllm.data import sft as sft_data
  from jaxllm.data import synthetic

  config = tiny_config("sft_lora", tmp_path, "", init_from=initial_pretrain_workdir,
                       **{"optim.warmup_steps": 0, **overrides})
  env = runtime.prepare(config)
  c = env.config
  tx = make_optimizer(c.optim, 10, c.lora.plus_ratio)
  state, state_sh = train.init_state(env, train.Task(loss="sft", batches=None), tx)
  if c.lora.rank:  # the targeted base and the tables are held only quantized: codes + scales, no f32 copy beside
    assert set(state.frozen) == {"model", "quant"} and not lora_lib._walk(state.frozen["model"], lambda p, w: w)
    assert not set(state.frozen["model"]) & {"embedding", "lm_head"} and "embedding" in state.frozen["quant"]
    assert all(set(proj) == {"a", "b", "m"} for proj in _projections(state.params["lora"]))
    f32_bytes = quant.nbytes(runtime.load_pretrained(initial_pretrain_workdir).weights)
    assert quant.nbytes(state.frozen) < 0.15 * f32_bytes  # <= 0.30x of the bf16 base
  else:
    projected = [x for x in jax.tree.leaves(state.opt_state) if x.ndim == 2 and 8 in x.shape]
    assert projected  # GaLore's rank-8 moments / bases
  chats = [{"messages": m, "tools": ""} for m in synthetic.sft_examples(0, "train", 24)]
  examples, stats = sft_data.encode(env.tokenizer, chats, c.data.seq_len)
  batch = sft_data.train_batches(examples, stats, c.data.seq_len, c.data.batch_size, 0, env.tokenizer.pad_id).next()
  before = jax.device_get(state)
  step = jax.jit(train.make_train_step(env, "sft", tx, lambda s: 1e-2), out_shardings=(state_sh, None))
  with env.mesh_context():
    for _ in range(2):
      state, metrics = step(state, batch)
  after = jax.device_get(state)
  assert np.isfinite(float(metrics["loss"])) and int(after.skipped) == 0
  jax.tree.map(np.testing.assert_array_equal, after.frozen, before.frozen)
  assert all(jax.tree.leaves(jax.tree.map(lambda a, b: not np.array_equal(a, b), after.params, before.params)))


CHECKS = [check_nf4_and_int8_round_trip, check_qlora_forward_equals_dequantized_model,
          check_frozen_matmul_equals_the_plain_product, check_quantized_embedding_and_head, check_dora_merged_weight_equals_forward, check_lora_plus_gives_b_its_learning_rate,
          check_galore_full_rank_is_adamw_and_low_rank_projects]


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__[6:])
def test_one_device(check):
  check()


def test_frozen_bases_are_converted_one_slice_at_a_time():
  """XLA's temporaries of a forward + input gradient through 8 frozen [512, 512] layers hold about one converted
  matrix, not all 8 (1 MiB each in f32): the backward pass converts its slices again instead of keeping the
  forward's, and no layer's conversion is scheduled before its input exists. jax.checkpoint around a whole
  dequantize-and-multiply (the code before frozen_matmul) kept all 8 alive on XLA:CPU."""
  rng = np.random.default_rng(0)
  ws = [rng.normal(0.0, 0.05, (512, 512)).astype(np.float32) for _ in range(8)]
  bases = {"nf4": [quant.quantize(jnp.asarray(w), "nf4", 1) for w in ws],
           "bfloat16": [jnp.asarray(w, jnp.bfloat16) for w in ws]}
  for name, layers in bases.items():
    def loss(x_TD, layers):
      for b in layers:
        x_TD = jnp.tanh(frozen_matmul.frozen_matmul(x_TD, b, 1, (512,), jnp.float32))
      return x_TD.sum()
    compiled = jax.jit(jax.grad(loss)).lower(jnp.ones((8, 512)), layers).compile()
    temp_mib = compiled.memory_analysis().temp_size_in_bytes / 2 ** 20
    assert temp_mib < 3.0, f"{name}: {temp_mib:.1f} MiB of temporaries (8 converted layers would be 8 MiB)"


_SHARDED = """
import json, sys
sys.path.insert(0, {tests!r}); sys.path.insert(0, {repo!r})
import jax, ml_collections
from jaxllm import sharding
import test_qlora
assert jax.device_count() == 8
mesh = sharding.make_mesh(ml_collections.ConfigDict(dict(data=2, fsdp=2, tensor=2)))
with jax.set_mesh(mesh):
  for check in test_qlora.CHECKS:
    check(mesh)
print(json.dumps({{"passed": [c.__name__ for c in test_qlora.CHECKS]}}))
"""


@pytest.mark.slow
def test_all_checks_under_an_8_device_mesh():
  env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8", "JAX_PLATFORMS": "cpu"}
  script = _SHARDED.format(tests=os.path.join(REPO, "tests"), repo=REPO)
  proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert len(json.loads(proc.stdout.strip().splitlines()[-1])["passed"]) == len(CHECKS)
