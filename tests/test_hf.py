"""Hugging Face interop: tiny random transformers models (llama, qwen2, qwen3, mistral, gemma2, gemma3) import with the same
logits and greedy generations; jaxllm models export to folders transformers loads with the same logits; a
byte-level BPE tokenizer.json imports encoding identically; unsupported features fail by name. Other
tokenizer families and chat templates: tests/test_hf_chat.py."""
import dataclasses
import json
import os
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

from conftest import REPO  # noqa: E402
from hf_families import MULTILINGUAL as VARIED, QWEN2_PATTERN  # noqa: E402
from jaxllm import chat_template, hf  # noqa: E402
from jaxllm.model import ModelConfig, Transformer, llama3_inv_freq  # noqa: E402
from jaxllm.sampling import SamplingParams, generate  # noqa: E402
from jaxllm.tokenizer import train_bpe  # noqa: E402

SMALL = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, vocab_size=300, max_position_embeddings=128, rope_theta=5000.0,
             rms_norm_eps=1e-5)
ARCHS = {  # name -> (config class, overrides): GQA everywhere; tied/untied; qkv bias; qk-norm with odd head_dim
    "llama": ("LlamaConfig", {}),
    "llama_tied": ("LlamaConfig", {"tie_word_embeddings": True}),
    "qwen2": ("Qwen2Config", {}),
    "qwen3": ("Qwen3Config", {"head_dim": 24}),
    "mistral": ("MistralConfig", {"sliding_window": None}),
    "mistral_window": ("MistralConfig", {"sliding_window": 8}),  # TOKENS are 24 long: 3x past the window
    # local layer 0 (window 8), global layer 1; capped scores and logits; query_pre_attn_scalar != head_dim
    "gemma2": ("Gemma2Config", {"head_dim": 16, "sliding_window": 8, "query_pre_attn_scalar": 24,
                                "attn_logit_softcapping": 5.0, "final_logit_softcapping": 3.0}),
    # + q/k-norm, local layers at their own RoPE base, linear RoPE scaling on the global layer
    "gemma3": ("Gemma3TextConfig", {"head_dim": 16, "sliding_window": 8, "query_pre_attn_scalar": 16,
                                    "layer_types": ["sliding_attention", "full_attention"],
                                    "rope_local_base_freq": 100.0, "rope_theta": 1e4,
                                    "rope_scaling": {"rope_type": "linear", "factor": 2.0}}),
    "llama3_rope": ("LlamaConfig", {"rope_scaling": {  # Llama 3.1 long-context RoPE
        "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
        "original_max_position_embeddings": 16}}),
}
QWEN_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def _corpus() -> list[str]:
  rng = np.random.RandomState(0)
  words = "the of and to in is was for on that with as it by this be are from at or an have not".split()
  docs = []
  for i in range(400):
    docs.append(" ".join(rng.choice(words, 12)) + f" {rng.randint(10**6)}.")
    docs.append(VARIED[i % 7])
  return docs


def _hf_model(arch: str, folder, seed: int = 0, **save_kwargs):
  """A tiny random transformers model saved to `folder`. Every weight (biases, norm scales too) is random, so
  a swapped or missing tensor shows in the logits."""
  cls, overrides = ARCHS[arch]
  torch.manual_seed(seed)
  config = getattr(transformers, cls)(**{**SMALL, **overrides})
  model = transformers.AutoModelForCausalLM.from_config(config).eval()
  with torch.no_grad():
    for p in model.parameters():
      p.normal_(0.0, 0.3 if p.ndim == 2 else 0.5).add_(1.0 if p.ndim == 1 else 0.0)
  model.save_pretrained(str(folder), **save_kwargs)
  return model


def _torch_logits(model, tokens: np.ndarray) -> np.ndarray:
  with torch.no_grad():
    return model(torch.tensor(tokens)).logits.float().numpy()


def _jax_logits(cfg: dict | ModelConfig, weights, tokens: np.ndarray) -> np.ndarray:
  model = Transformer(cfg if isinstance(cfg, ModelConfig) else ModelConfig(**cfg))
  return np.asarray(jax.jit(model.apply)({"params": weights}, jnp.asarray(tokens)))  # one compile, not per op


TOKENS = np.random.RandomState(1).randint(0, 300, (2, 24))


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_import_matches_transformers_logits(arch, tmp_path):
  shard = {"max_shard_size": "60KB"} if arch == "llama" else {}  # one case goes through the sharded index
  model = _hf_model(arch, tmp_path, **shard)
  assert hf.is_hf_folder(str(tmp_path))
  assert os.path.exists(tmp_path / "model.safetensors.index.json") == bool(shard)
  cfg, weights = hf.load(str(tmp_path))
  assert cfg["tie_embeddings"] == (arch in ("llama_tied", "gemma2", "gemma3"))
  assert ("lm_head" in weights) != cfg["tie_embeddings"]
  assert cfg["attn_bias"] == (arch == "qwen2") and cfg["qk_norm"] == (arch in ("qwen3", "gemma3"))
  np.testing.assert_allclose(_jax_logits(cfg, weights, TOKENS), _torch_logits(model, TOKENS), atol=1e-4, rtol=0)


# Runs in a fresh process with 8 fake CPU devices (XLA_FLAGS must be set before jax starts).
_SHARDED_LOAD = """
import sys, jax, numpy as np
from jaxllm import hf, sharding
from jaxllm.model import ModelConfig, Transformer
path, tokens, expected = sys.argv[1], np.load(sys.argv[2]), np.load(sys.argv[3])
cfg = hf.model_config_from_hf(hf.read_hf_config(path))
model = Transformer(ModelConfig(**cfg))
mesh = jax.sharding.Mesh(np.asarray(jax.devices()).reshape(2, 2, 2), sharding.MESH_AXES)
shardings = sharding.logical_shardings(
    jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), tokens)["params"]), mesh)
_, weights = hf.load(path, shardings=shardings)
jax.tree.map(lambda leaf, want: None if leaf.sharding == want else sys.exit(f"{leaf.sharding} != {want}"),
             weights, shardings)
q = weights["layers_0"]["attn"]["q"]["w"]
assert q.sharding == shardings["layers_0"]["attn"]["q"]["w"] and not q.sharding.is_fully_replicated, q.sharding
np.testing.assert_allclose(np.asarray(jax.jit(model.apply)({"params": weights}, tokens)), expected, atol=1e-4, rtol=0)
"""


@pytest.mark.slow
def test_import_into_shardings(tmp_path):
  """On a 2x2x2 mesh of fake CPU devices the leaves land directly in their NamedShardings, same logits."""
  model = _hf_model("qwen2", tmp_path / "model")
  np.save(tmp_path / "tokens.npy", TOKENS)
  np.save(tmp_path / "expected.npy", _torch_logits(model, TOKENS))
  env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8", "JAX_PLATFORMS": "cpu"}
  proc = subprocess.run([sys.executable, "-c", _SHARDED_LOAD, str(tmp_path / "model"), str(tmp_path / "tokens.npy"),
                         str(tmp_path / "expected.npy")], cwd=REPO, env=env, capture_output=True, text=True,
                        timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]


def test_import_in_bf16(tmp_path):
  """bf16 leaves are exactly the f32 import rounded to bf16 (the checkpoint is f32 here)."""
  _hf_model("qwen2", tmp_path)
  _, f32 = hf.load(str(tmp_path))
  _, bf16 = hf.load(str(tmp_path), dtype="bfloat16")
  assert {x.dtype for x in jax.tree.leaves(bf16)} == {jnp.dtype(jnp.bfloat16)}
  jax.tree.map(lambda a, b: np.testing.assert_array_equal(a, b.astype(jnp.bfloat16)), bf16, f32)


@pytest.mark.parametrize("arch", ["qwen2", "mistral_window", "gemma2", "gemma3"])
def test_greedy_generation_matches_transformers(arch, tmp_path):
  """32 greedy tokens; with a window of 8 the KV-cached decode runs far past it."""
  model = _hf_model(arch, tmp_path, seed=3)
  cfg, weights = hf.load(str(tmp_path))
  prompt = [5, 17, 250, 3, 99, 7, 8, 9, 10, 11]
  ours = generate(Transformer(ModelConfig(**cfg)), weights, [prompt], SamplingParams(max_new_tokens=32),
                  jax.random.PRNGKey(0))
  model.generation_config.eos_token_id = None
  with torch.no_grad():
    theirs = model.generate(torch.tensor([prompt]), max_new_tokens=32, do_sample=False, pad_token_id=0)
  assert ours.tokens[0].tolist() == theirs[0, len(prompt):].tolist()


def _random_jaxllm(cfg: ModelConfig, seed: int = 0):
  """Random weights of jaxllm's layout, every leaf (biases, norm scales too) random; numpy, so nothing compiles."""
  rng = np.random.RandomState(seed)
  shapes = jax.eval_shape(lambda: nn.meta.unbox(Transformer(cfg).init(jax.random.PRNGKey(0), TOKENS)["params"]))
  return jax.tree.map(lambda x: jnp.asarray(rng.normal(0.0, 0.3, x.shape).astype(np.float32)), shapes)


@pytest.fixture(scope="module")
def jaxllm_tokenizer():
  return train_bpe(_corpus(), 296, name="rt")  # 292 ranks + 4 specials, under the models' 300


GEMMA2 = dict(post_norms=True, norm_plus_one=True, embed_scale=True, mlp_act="gelu_tanh", tie_embeddings=True,
              sliding_window=8, global_every=2, attn_softcap=5.0, final_softcap=3.0, query_pre_attn_scalar=24.0)


@pytest.mark.parametrize("features, arch", [
    ({}, "LlamaForCausalLM"),
    ({"attn_bias": True, "tie_embeddings": True}, "Qwen2ForCausalLM"),
    ({"qk_norm": True, "attn_bias": True, "head_dim": 24}, "Qwen3ForCausalLM"),  # zero o_proj bias
    ({"sliding_window": 8}, "MistralForCausalLM"),
    ({"sliding_window": 8, "attn_bias": True}, "Qwen2ForCausalLM"),
    (GEMMA2, "Gemma2ForCausalLM"),
    ({**GEMMA2, "attn_softcap": 0.0, "final_softcap": 0.0, "qk_norm": True, "rope_local_theta": 100.0,
      "rope_scaling": "linear", "rope_factor": 2.0, "query_pre_attn_scalar": 16.0}, "Gemma3ForCausalLM"),
])
def test_export_round_trip(features, arch, tmp_path, jaxllm_tokenizer):
  base = dict(vocab_size=300, d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=16, mlp_dim=128,
              max_seq_len=128, rope_theta=5000.0, norm_eps=1e-5)
  cfg = ModelConfig(**{**base, **features})
  weights = _random_jaxllm(cfg)
  model_cfg = {k: v for k, v in dataclasses.asdict(cfg).items()}
  files = hf.export(str(tmp_path), model_cfg, weights, jaxllm_tokenizer, max_shard_bytes=100_000)
  assert "model.safetensors.index.json" in files
  hf_model = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path)).eval()
  assert type(hf_model).__name__ == arch
  np.testing.assert_allclose(_torch_logits(hf_model, TOKENS), _jax_logits(cfg, weights, TOKENS), atol=1e-4, rtol=0)
  back_cfg, back = hf.load(str(tmp_path))  # and back: bit-identical weights, same model keys
  assert back_cfg == {k: model_cfg[k] for k in back_cfg}
  jax.tree.map(np.testing.assert_array_equal, back, weights)


def test_exported_tokenizer_loads_in_transformers(tmp_path, jaxllm_tokenizer):
  tok = jaxllm_tokenizer
  cfg = dict(vocab_size=300, d_model=32, n_layers=1, n_heads=2, n_kv_heads=1, head_dim=16, mlp_dim=64,
             max_seq_len=64, rope_theta=1e4, norm_eps=1e-6, qk_norm=False, attn_bias=False, tie_embeddings=True)
  hf.export(str(tmp_path), cfg, _random_jaxllm(ModelConfig(**cfg)), tok)
  theirs = transformers.AutoTokenizer.from_pretrained(str(tmp_path))
  for text in VARIED:
    assert theirs.encode(text, add_special_tokens=False) == tok.encode(text), text
    assert theirs.decode(tok.encode(text)) == text
  messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2 + 2 = ? 你好"}]
  ids = theirs.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
  ids = ids["input_ids"] if not isinstance(ids, list) else ids
  assert list(ids) == chat_template.prompt_ids(tok, messages)
  assert theirs.eos_token_id == tok.im_end_id and theirs.pad_token_id == tok.pad_id
  generation = json.loads((tmp_path / "generation_config.json").read_text())
  assert generation["eos_token_id"] == [tok.im_end_id, tok.eot_id]
  # and imported back (through `tokenizers`, its ChatML template now the model's own): the same ids
  again = hf.load_tokenizer(str(tmp_path))
  assert again.chat_template and all(again.encode(text) == tok.encode(text) for text in VARIED)
  assert (again.eot_id, again.im_start_id, again.im_end_id, again.pad_id) == \
      (tok.eot_id, tok.im_start_id, tok.im_end_id, tok.pad_id)
  assert chat_template.prompt_ids(again, messages) == chat_template.prompt_ids(tok, messages)
  assert set(chat_template.stop_ids(again)) == set(chat_template.stop_ids(tok))


def _hf_tokenizer(folder, vocab_size: int, specials=tuple(QWEN_SPECIALS), eos="<|im_end|>",
                  pad="<|endoftext|>"):
  """A Qwen2-style tokenizer.json trained with `tokenizers`, saved through transformers."""
  from tokenizers import Regex, decoders, models, normalizers, pre_tokenizers, trainers

  tok = tokenizers.Tokenizer(models.BPE())
  tok.normalizer = normalizers.NFC()
  tok.pre_tokenizer = pre_tokenizers.Sequence([
      pre_tokenizers.Split(Regex(QWEN2_PATTERN), behavior="isolated", invert=False),
      pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
  tok.decoder = decoders.ByteLevel()
  tok.train_from_iterator(_corpus(), trainers.BpeTrainer(
      vocab_size=vocab_size, show_progress=False, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
  tok.add_special_tokens(list(specials))
  fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=eos, pad_token=pad)
  fast.save_pretrained(str(folder))
  return tok


def test_imported_tokenizer_encodes_like_tokenizers(tmp_path):
  theirs = _hf_tokenizer(tmp_path, 800)
  ours = hf.load_tokenizer(str(tmp_path))
  for text in VARIED + ["\n".join(VARIED), " ".join(_corpus()[:50])]:
    assert ours.encode(text) == theirs.encode(text, add_special_tokens=False).ids, text
    assert ours.decode(ours.encode(text)) == text
  marked = "<|im_start|>user\nhi 你好<|im_end|>\n<|endoftext|>"
  assert ours.special_id("<|im_end|>") not in ours.encode(marked)  # typed specials are text
  assert ours.eot_id == theirs.token_to_id("<|endoftext|>")
  assert (ours.im_start_id, ours.im_end_id) == tuple(theirs.token_to_id(t) for t in QWEN_SPECIALS[1:])
  assert chat_template.prompt_ids(ours, [{"role": "user", "content": "hi"}])[0] == ours.im_start_id


def test_tokenizer_without_chatml_markers_fails_at_chat_time(tmp_path):
  _hf_tokenizer(tmp_path, 400, specials=("<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>"),
                eos="<|end_of_text|>", pad="<|end_of_text|>")
  ours = hf.load_tokenizer(str(tmp_path))
  assert ours.chat_template is None
  with pytest.raises(ValueError, match="im_start"):
    chat_template.prompt_ids(ours, [{"role": "user", "content": "hi"}])
  assert ours.eot_id == ours.pad_id == ours.special_id("<|end_of_text|>")


def test_export_stage_from_hf_folder(tmp_path):
  """`run.py --config=configs/export.py` with an HF folder as init_from: bf16 re-export, transformers loads it."""
  from configs import export as export_config
  from jaxllm.stages import export as export_stage

  src, out = tmp_path / "src", tmp_path / "out"
  model = _hf_model("qwen3", src)
  _hf_tokenizer(src, 297)
  config = export_config.get_config()
  config.init_from, config.export.path, config.export.dtype = str(src), str(out), "bfloat16"
  export_stage.run(config)
  reloaded = transformers.AutoModelForCausalLM.from_pretrained(str(out), dtype=torch.float32).eval()
  assert json.loads((out / "config.json").read_text())["torch_dtype"] == "bfloat16"
  np.testing.assert_allclose(_torch_logits(reloaded, TOKENS), _torch_logits(model, TOKENS), atol=0.5, rtol=0)
  assert transformers.AutoTokenizer.from_pretrained(str(out)).encode(VARIED[0], add_special_tokens=False) == \
      hf.load_tokenizer(str(src)).encode(VARIED[0])


def _fake_workdir(folder, params: dict, model_cfg: dict, tokenizer, lora: dict, init_from: str = "") -> str:
  """What a finished jaxllm run leaves: config.json, tokenizer/, an orbax checkpoint of the state's params."""
  import orbax.checkpoint as ocp

  os.makedirs(folder)
  config = {"model": model_cfg, "lora": lora, "init_from": init_from, "stage": "sft"}
  (folder / "config.json").write_text(json.dumps(config))
  tokenizer.save(str(folder / "tokenizer"))
  with ocp.CheckpointManager(str(folder / "checkpoints")) as manager:
    manager.save(3, args=ocp.args.Composite(state=ocp.args.StandardSave({"step": 3, "params": params})))
    manager.wait_until_finished()
  return str(folder)


def test_export_stage_merges_lora_of_a_jaxllm_run(tmp_path, jaxllm_tokenizer):
  """init_from = a LoRA run over a full run: the exported model computes base + adapters (merged)."""
  from configs import export as export_config
  from jaxllm import lora as lora_lib
  from jaxllm.stages import export as export_stage

  model_cfg = dict(vocab_size=300, d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=16, mlp_dim=128,
                   max_seq_len=128, rope_theta=1e4, norm_eps=1e-6, qk_norm=False, attn_bias=True,
                   tie_embeddings=False)
  base = _random_jaxllm(ModelConfig(**model_cfg))
  adapters = lora_lib.init_lora(base, ("q", "o", "down"), 4, jax.random.PRNGKey(0))
  adapters = jax.tree.map(lambda x: x + 0.1, adapters)  # b starts at zero: make the adapters matter
  full = _fake_workdir(tmp_path / "full", {"model": base}, model_cfg, jaxllm_tokenizer, {"rank": 0})
  tuned = _fake_workdir(tmp_path / "lora", {"lora": adapters}, model_cfg, jaxllm_tokenizer,
                        {"rank": 4, "alpha": 8.0}, init_from=full)
  config = export_config.get_config()
  config.init_from, config.export.path = tuned, str(tmp_path / "out")
  export_stage.run(config)
  reloaded = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path / "out")).eval()
  model = Transformer(ModelConfig(**model_cfg, lora_scale=2.0))
  ours = jax.jit(lambda w, a: model.apply({"params": w}, jnp.asarray(TOKENS), lora=a))(base, adapters)
  np.testing.assert_allclose(_torch_logits(reloaded, TOKENS), np.asarray(ours), atol=1e-4, rtol=0)
  assert not np.allclose(np.asarray(ours), _jax_logits(model_cfg, base, TOKENS), atol=1e-2)


def test_llama3_rope_scaling_frequencies_match_transformers():
  from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

  scaling = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
             "original_max_position_embeddings": 64}
  config = transformers.LlamaConfig(**{**SMALL, "head_dim": 64, "rope_scaling": scaling, "rope_theta": 5e5})
  theirs = ROPE_INIT_FUNCTIONS["llama3"](config, "cpu")[0].numpy()
  base = 1.0 / (5e5 ** (np.arange(0, 64, 2, dtype=np.float32) / 64))
  ours = llama3_inv_freq(base, 8.0, 1.0, 4.0, 64)
  assert not np.allclose(ours, base)  # the case exercises all three bands
  np.testing.assert_allclose(ours, theirs, rtol=1e-6)
  hf_cfg = {**SMALL, "model_type": "llama", "rope_scaling": scaling}
  assert hf.model_config_from_hf(hf_cfg)["rope_scaling"] == "llama3"


@pytest.mark.parametrize("change, match", [
    ({"model_type": "gpt2"}, "model_type 'gpt2'"),
    ({"rope_scaling": {"rope_type": "yarn", "factor": 4.0}}, "rope_scaling type 'yarn'"),
    ({"rope_parameters": {"rope_type": "dynamic", "rope_theta": 1e4, "factor": 2.0}}, "rope_scaling type 'dynamic'"),
    ({"hidden_act": "gelu"}, "hidden_act 'gelu'"),
    ({"mlp_bias": True}, "mlp_bias"),
    ({"partial_rotary_factor": 0.5}, "partial_rotary_factor"),
])
def test_unsupported_config_features_are_named(change, match):
  with pytest.raises(ValueError, match=match):
    hf.model_config_from_hf({**SMALL, "model_type": "llama", **change})


def test_sliding_window_config():
  """Imported as model.sliding_window with max_seq_len kept; Qwen's per-layer windows only when all or none."""
  mistral = hf.model_config_from_hf({**SMALL, "model_type": "mistral", "sliding_window": 32})
  assert (mistral["sliding_window"], mistral["max_seq_len"]) == (32, 128)
  qwen = {**SMALL, "model_type": "qwen2", "sliding_window": 32}
  assert hf.model_config_from_hf({**qwen, "use_sliding_window": False})["sliding_window"] == 0
  assert hf.model_config_from_hf({**qwen, "use_sliding_window": True, "max_window_layers": 0})["sliding_window"] == 32
  with pytest.raises(ValueError, match="sliding window on some layers only \\(1 of 2"):
    hf.model_config_from_hf({**qwen, "use_sliding_window": True, "max_window_layers": 1})
  assert hf.hf_config({**mistral, "head_dim": 16})["model_type"] == "mistral"


def test_missing_weights_and_nonzero_o_bias_fail(tmp_path):
  (tmp_path / "config.json").write_text(json.dumps({**SMALL, "model_type": "llama"}))
  assert not hf.is_hf_folder(str(tmp_path))
  with pytest.raises(FileNotFoundError, match="model.safetensors"):
    hf.load(str(tmp_path))
  sharded = tmp_path / "sharded"
  _hf_model("llama", sharded, max_shard_size="60KB")
  os.remove(sorted(sharded.glob("model-*.safetensors"))[-1])
  with pytest.raises(FileNotFoundError, match="missing"):
    hf.load(str(sharded))
  biased = tmp_path / "biased"
  cls, _ = ARCHS["llama"]
  torch.manual_seed(0)
  model = transformers.AutoModelForCausalLM.from_config(getattr(transformers, cls)(**SMALL, attention_bias=True))
  with torch.no_grad():
    for p in model.parameters():
      p.normal_()
  model.save_pretrained(str(biased))
  with pytest.raises(ValueError, match="o_proj"):
    hf.load(str(biased))


def test_a_stage_trains_from_an_hf_folder(tmp_path, tokenizer_dir):
  """init_from=<HF folder>: architecture, tokenizer and weights come from the folder; training runs."""
  from conftest import tiny_config
  from jaxllm.stages import pretrain

  from jaxllm.runtime import ARCHITECTURE_KEYS
  from jaxllm.tokenizer import Tokenizer

  tok = Tokenizer.load(tokenizer_dir)
  cfg = ModelConfig(vocab_size=-(-tok.n_vocab // 64) * 64, d_model=64, n_layers=2, n_heads=4, n_kv_heads=2,
                    head_dim=16, mlp_dim=128, max_seq_len=128, attn_bias=True)
  folder = tmp_path / "hf"
  hf.export(str(folder), {k: getattr(cfg, k) for k in ARCHITECTURE_KEYS}, _random_jaxllm(cfg), tok)
  config = tiny_config("pretrain", tmp_path / "run", "", steps=3, **{"init_from": str(folder), "sample.num": 0})
  config.tokenizer.path = ""
  summary = pretrain.run(config)
  assert summary["step"] == 3
  saved = json.load(open(tmp_path / "run" / "config.json"))
  assert saved["model"]["attn_bias"] is True and saved["model"]["d_model"] == 64
  assert Tokenizer.load(str(tmp_path / "run")).encode("Mia has 7 apples.") == tok.encode("Mia has 7 apples.")


def test_every_architecture_key_has_a_hugging_face_counterpart():
  from jaxllm.model import ARCHITECTURE_KEYS
  switches = {"qk_norm", "attn_bias"}  # model_type (and attention_bias) on the HF side
  switches |= {"sliding_window", "mlp_act"}  # sliding_window / layer_types per model_type; hidden_act
  switches |= {"global_every", "rope_local_theta", "norm_plus_one", "embed_scale", "post_norms", "attn_softcap",
               "final_softcap", "query_pre_attn_scalar"}  # Gemma's, both ways in hf_gemma.py
  assert set(hf.weights.HF_NAMES) | set(hf.weights.HF_ROPE_NAMES) | switches == set(ARCHITECTURE_KEYS)
