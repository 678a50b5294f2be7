"""LoRA: merged weights give base+adapter logits, a step trains only the adapters, the optimizer state and the
checkpoints hold only adapters, and loading a LoRA run gives the merged model."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
import pytest

from conftest import tiny_config
from jaxllm import lora as lora_lib
from jaxllm import runtime, train
from jaxllm.checkpoint import load_pretrained
from jaxllm.data import sft as sft_data
from jaxllm.data import synthetic
from jaxllm.model import ModelConfig, Transformer
from jaxllm.stages import sft as sft_stage
from jaxllm.state import make_optimizer

ALL = lora_lib.parse_targets("q,k,v,o,gate,up,down")


def _random_tree(shapes, seed: int, std: float):
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda s: rng.normal(0.0, std, s.shape).astype(np.float32), shapes)


def test_merge_gives_the_same_logits_as_base_plus_adapters():
  cfg = ModelConfig(vocab_size=96, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=8, mlp_dim=48,
                    max_seq_len=32, attn_bias=True, lora_scale=16.0 / 4)
  model = Transformer(cfg)
  shapes = jax.eval_shape(lambda: nn.meta.unbox(model.init(jax.random.PRNGKey(0), jnp.zeros((1, 4), jnp.int32))))
  base = _random_tree(shapes["params"], 0, 0.1)
  # Adapters with b != 0 (a fresh adapter has b = 0 and changes nothing), drawn into init_lora's structure.
  adapters = _random_tree(jax.eval_shape(lambda: lora_lib.init_lora(base, ALL, 4, jax.random.PRNGKey(1))), 2, 0.05)
  assert all(float(jnp.abs(x["b"]).max()) > 0 for x in _projections(adapters))  # b != 0: adapters do something
  tokens = np.random.default_rng(3).integers(0, 96, (2, 16)).astype(np.int32)
  apply = jax.jit(lambda w, lr, t: model.apply({"params": w}, t, lora=lr))
  with_adapters = np.asarray(apply(base, adapters, tokens))
  merged_weights = jax.jit(lora_lib.merge, static_argnums=2)(base, adapters, cfg.lora_scale)
  merged = np.asarray(apply(merged_weights, None, tokens))
  plain = np.asarray(apply(base, None, tokens))
  np.testing.assert_allclose(merged, with_adapters, atol=1e-5, rtol=0)
  assert np.abs(plain - with_adapters).max() > 1e-3  # the comparison can fail


def _projections(tree):
  if isinstance(tree, dict) and "a" in tree and "b" in tree:
    return [tree]
  return [p for sub in tree.values() for p in _projections(sub)]


def test_targets_choose_the_adapted_projections():
  base = {"layers_0": {"attn": {"q": {"w": jnp.zeros((8, 2, 4))}, "o": {"w": jnp.zeros((2, 4, 8))}},
                       "mlp": {"up": {"w": jnp.zeros((8, 16))}}}}
  adapters = jax.eval_shape(lambda: lora_lib.init_lora(base, ("q", "o"), 3, jax.random.PRNGKey(0)))
  assert set(adapters["layers_0"]) == {"attn"}
  q, o = adapters["layers_0"]["attn"]["q"], adapters["layers_0"]["attn"]["o"]
  assert q["a"].shape == (8, 3) and q["b"].shape == (3, 2, 4)  # rank between the input and the output dims
  assert o["a"].shape == (2, 4, 3) and o["b"].shape == (3, 8)
  with pytest.raises(ValueError, match="lora.targets"):
    lora_lib.parse_targets("q,qq")


# ------------------------------------------------------------------------------------------ LoRA in training

@pytest.fixture(scope="module")
def lora_env(tmp_path_factory, initial_pretrain_workdir):
  config = tiny_config("sft_lora", tmp_path_factory.mktemp("lora_env"), "", init_from=initial_pretrain_workdir)
  return runtime.prepare(config)


def _bytes(tree) -> int:
  return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(tree))


def test_a_lora_step_updates_only_the_adapters(lora_env):
  env = lora_env
  optim = ml_collections.ConfigDict(env.config.optim.to_dict())
  optim.warmup_steps = 0  # the first step must move b already (at init b = 0, so a's gradient is 0)
  tx = make_optimizer(optim, 10)
  state, _ = train.init_state(env, train.Task(loss="sft", batches=None), tx)
  assert set(state.params) == {"lora"} and set(state.frozen) == {"model"}

  # The optimizer state is the adapters' and nothing else: Adam's two moments mirror the adapter tree.
  big = [x for x in jax.tree.leaves(state.opt_state) if x.ndim > 0]
  assert len(big) == 2 * len(jax.tree.leaves(state.params))
  assert _bytes(big) == 2 * _bytes(state.params)
  assert _bytes(state.params) < _bytes(state.frozen) / 4
  assert not {x.shape for x in big} & {x.shape for x in jax.tree.leaves(state.frozen)}

  chats = [{"messages": m, "tools": ""} for m in synthetic.sft_examples(0, "train", 24)]
  examples, stats = sft_data.encode(env.tokenizer, chats, env.config.data.seq_len)
  batch = sft_data.train_batches(examples, stats, env.config.data.seq_len, env.config.data.batch_size, 0,
                                 env.tokenizer.pad_id).next()
  before = jax.device_get((state.params, state.frozen))
  step = jax.jit(train.make_train_step(env, "sft", tx, lambda s: 1e-2))
  with env.mesh_context():
    for _ in range(2):  # the first step moves only b, the second also a
      state, metrics = step(state, batch)
  params, frozen = jax.device_get((state.params, state.frozen))
  jax.tree.map(np.testing.assert_array_equal, frozen, before[1])  # the base is untouched, bitwise
  changed = jax.tree.map(lambda a, b: not np.array_equal(a, b), params, before[0])
  assert all(jax.tree.leaves(changed)), "every adapter matrix should move"
  assert np.isfinite(float(metrics["loss"]))


def test_lora_run_checkpoints_only_adapters_and_loads_merged(tmp_path, initial_pretrain_workdir):
  config = tiny_config("sft_lora", tmp_path, "", init_from=initial_pretrain_workdir, steps=3,
                       **{"eval.every": 3, "sample.num": 0, "sft.eval_examples": 0, "optim.warmup_steps": 1})
  summary = sft_stage.run(config)
  assert summary["step"] == 3

  manager = ocp.CheckpointManager(str(tmp_path / "checkpoints"))
  saved = manager.restore(3, args=ocp.args.Composite(state=ocp.args.StandardRestore()))["state"]
  manager.close()
  assert set(saved["params"]) == {"lora"}
  assert "frozen" not in saved
  base = load_pretrained(initial_pretrain_workdir).weights
  adapter_leaves = len(jax.tree.leaves(saved["params"]))
  assert len([x for x in jax.tree.leaves(saved["opt_state"]) if np.ndim(x) > 0]) == 2 * adapter_leaves
  assert _bytes(saved["params"]) + _bytes(saved["opt_state"]) < _bytes(base)  # no base weights in there

  loaded = load_pretrained(str(tmp_path)).weights
  merged = lora_lib.merge(base, saved["params"]["lora"], config.lora.alpha / config.lora.rank)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), loaded, merged)
  assert any(jax.tree.leaves(jax.tree.map(lambda a, b: not np.allclose(a, b), loaded, base)))
