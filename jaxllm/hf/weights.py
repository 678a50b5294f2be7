"""Hugging Face checkpoints in: `config.json` -> jaxllm `model.*` keys, safetensors -> the params pytree, read
tensor by tensor straight into the target shardings (see the package docstring for layouts and memory)."""
from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
from typing import Any

import jax
import ml_dtypes
import numpy as np
from safetensors import safe_open

from jaxllm import hf_gemma
from jaxllm.errors import UserError
from jaxllm.model import ModelConfig

SUPPORTED_MODEL_TYPES = ("llama", "mistral", "qwen2", "qwen3", *hf_gemma.GEMMA_TYPES)
ACTIVATIONS = {"silu": "silu", "gelu_pytorch_tanh": "gelu_tanh"}  # HF hidden_act -> model.mlp_act
DTYPES = {"float32": np.dtype(np.float32), "bfloat16": np.dtype(ml_dtypes.bfloat16), "float16": np.dtype(np.float16)}
INDEX = "model.safetensors.index.json"
# Buffers some old checkpoints carry that are recomputed, never learned.
_IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)


# ----------------------------------------------------------------------------------------------- config

# model.* key -> config.json key, read by import and export alike; the other ARCHITECTURE_KEYS are switches
# (qk_norm, attn_bias: by model_type) or llama3 rope scaling (HF_ROPE_NAMES, inside rope_scaling)
HF_NAMES = {"vocab_size": "vocab_size", "d_model": "hidden_size", "n_layers": "num_hidden_layers",
            "n_heads": "num_attention_heads", "n_kv_heads": "num_key_value_heads", "head_dim": "head_dim",
            "mlp_dim": "intermediate_size", "max_seq_len": "max_position_embeddings", "norm_eps": "rms_norm_eps",
            "rope_theta": "rope_theta", "tie_embeddings": "tie_word_embeddings"}
HF_ROPE_NAMES = {"rope_scaling": "rope_type", "rope_factor": "factor", "rope_low_freq_factor": "low_freq_factor",
                 "rope_high_freq_factor": "high_freq_factor",
                 "rope_original_max_len": "original_max_position_embeddings"}
_TYPES = {f.name: type(f.default) for f in dataclasses.fields(ModelConfig)}


def _rope_parameters(hf: dict) -> dict:
  """transformers 4.x (`rope_theta` + `rope_scaling`) and 5.x (`rope_parameters`) spellings, merged."""
  params = {"rope_theta": hf.get("rope_theta", 10000.0),
            "partial_rotary_factor": hf.get("partial_rotary_factor", 1.0)}
  params.update(hf.get("rope_scaling") or {})
  params.update(hf.get("rope_parameters") or {})
  if "type" in params and "rope_type" not in params:
    params["rope_type"] = params["type"]
  params.setdefault("rope_type", "default")
  return params


def _sliding_window(hf: dict) -> int:
  """The window every layer uses (0: none). Mistral windows all layers; Qwen2/3 with use_sliding_window only
  layers from max_window_layers on (or as `layer_types` says): supported when that is all layers or none."""
  window = hf.get("sliding_window") or 0
  n = hf["num_hidden_layers"]
  if hf["model_type"] in ("qwen2", "qwen3"):
    if not hf.get("use_sliding_window", False):
      return 0
    kinds = hf.get("layer_types") or ["sliding_attention" if i >= hf.get("max_window_layers", 28) else
                                      "full_attention" for i in range(n)]
  else:
    kinds = hf.get("layer_types") or ["sliding_attention" if window else "full_attention"] * n
  if not window or "sliding_attention" not in kinds:
    return 0
  if len(set(kinds)) > 1:
    raise ValueError(f"sliding window on some layers only ({kinds.count('sliding_attention')} of {n}: layer_types "
                     f"/ max_window_layers) is not supported for {hf['model_type']}; supported: every layer or none")
  return int(window)


def _rope_config(hf: dict) -> dict:
  rope = _rope_parameters(hf)
  if rope.get("partial_rotary_factor", 1.0) != 1.0:
    raise ValueError(f"partial_rotary_factor={rope['partial_rotary_factor']} is not supported (jaxllm rotates "
                     "the whole head)")
  kind = rope["rope_type"]
  out = {"rope_theta": float(rope["rope_theta"])}
  if kind == "default":
    return out
  if kind == "linear":
    return {**out, "rope_scaling": "linear", "rope_factor": float(rope["factor"])}
  if kind != "llama3":
    raise ValueError(f"rope_scaling type {kind!r} is not supported (supported: none, 'llama3', 'linear')")
  return {**out, **{ours: _TYPES[ours](rope[theirs]) for ours, theirs in HF_ROPE_NAMES.items()}}


def model_config_from_hf(hf: dict) -> dict:
  """A Hugging Face config.json (as a dict) -> jaxllm `model.*` keys; ValueError naming what is unsupported."""
  model_type = hf.get("model_type")
  if model_type not in SUPPORTED_MODEL_TYPES:
    extra = " (a multimodal gemma3 folder: only its text model, gemma3_text, is)" if model_type == "gemma3" else ""
    raise ValueError(f"model_type {model_type!r} is not supported (supported: {', '.join(SUPPORTED_MODEL_TYPES)})"
                     f"{extra}")
  act = hf.get("hidden_activation") or hf.get("hidden_act", "silu")
  if act not in ACTIVATIONS:
    raise ValueError(f"hidden_act {act!r} is not supported (supported: {', '.join(ACTIVATIONS)})")
  if hf.get("mlp_bias"):
    raise ValueError("mlp_bias=True is not supported (jaxllm's MLP projections have no bias)")
  d, heads = hf["hidden_size"], hf["num_attention_heads"]
  optional = {"num_key_value_heads": heads, "head_dim": d // heads, "max_position_embeddings": 2048,
              "rms_norm_eps": 1e-6,  # absent or null in config.json
              "tie_word_embeddings": model_type in hf_gemma.GEMMA_TYPES,  # Gemma ties by default
              "rope_theta": 10000.0}  # _rope_config reads it from either transformers spelling
  cfg = {ours: _TYPES[ours](hf[theirs] if theirs not in optional or hf.get(theirs) is not None else optional[theirs])
         for ours, theirs in HF_NAMES.items()}
  gemma = hf_gemma.model_config(hf) if model_type in hf_gemma.GEMMA_TYPES else {}
  return {
      **cfg, **_rope_config(hf), "qk_norm": model_type == "qwen3",
      # qwen2 always has q/k/v biases; llama/mistral/qwen3 `attention_bias` also adds an o_proj bias, which
      # jaxllm lacks: it is accepted only when all zero (checked by `load`, as exported by `export`).
      "attn_bias": model_type == "qwen2" or bool(hf.get("attention_bias", False)),
      "sliding_window": 0 if gemma else _sliding_window(hf), "mlp_act": ACTIVATIONS[act], **gemma,
  }


def is_hf_folder(path: str) -> bool:
  """A folder with a transformers config.json and safetensors weights (single file or sharded index)."""
  config = os.path.join(path, "config.json")
  if not os.path.isfile(config):
    return False
  try:
    with open(config) as f:
      hf = json.load(f)
  except (OSError, ValueError):
    return False
  if not isinstance(hf, dict) or not ("model_type" in hf or "architectures" in hf):
    return False
  return any(os.path.isfile(os.path.join(path, n)) for n in ("model.safetensors", INDEX))


def read_hf_config(path: str) -> dict:
  file = os.path.join(path, "config.json")
  try:
    with open(file) as f:
      return json.load(f)
  except ValueError as e:
    raise UserError(f"{file}: not valid JSON ({e})") from None


# ----------------------------------------------------------------------------------------------- tensors

def tensor_map(cfg: dict, o_bias: bool) -> dict[str, tuple[tuple[str, ...], Any]]:
  """HF tensor name -> (jaxllm param path, layout): ((in...), (out...)) for a Linear weight or bias, or None
  for a tensor copied as is, or "zero" for an o_proj bias that must be all zeros."""
  d, h, k, dh, f, v = (cfg[n] for n in ("d_model", "n_heads", "n_kv_heads", "head_dim", "mlp_dim", "vocab_size"))
  out: dict[str, tuple[tuple[str, ...], Any]] = {
      "model.embed_tokens.weight": (("embedding",), None),
      "model.norm.weight": (("final_norm", "scale"), None),
  }
  if not cfg["tie_embeddings"]:
    out["lm_head.weight"] = (("lm_head",), ((d,), (v,)))
  for i in range(cfg["n_layers"]):
    hp, jp = f"model.layers.{i}.", f"layers_{i}"
    norms = hf_gemma.NORMS if cfg.get("post_norms") else (("input_layernorm", "attn_norm"),
                                                           ("post_attention_layernorm", "mlp_norm"))
    for hf_name, name in norms:
      out[hp + f"{hf_name}.weight"] = ((jp, name, "scale"), None)
    for name, shape in (("q", (h, dh)), ("k", (k, dh)), ("v", (k, dh))):
      out[hp + f"self_attn.{name}_proj.weight"] = ((jp, "attn", name, "w"), ((d,), shape))
      if cfg["attn_bias"]:
        out[hp + f"self_attn.{name}_proj.bias"] = ((jp, "attn", name, "b"), ((), shape))
    out[hp + "self_attn.o_proj.weight"] = ((jp, "attn", "o", "w"), ((h, dh), (d,)))
    if o_bias:
      out[hp + "self_attn.o_proj.bias"] = ((jp, "attn", "o", "b"), "zero")
    if cfg["qk_norm"]:
      out[hp + "self_attn.q_norm.weight"] = ((jp, "attn", "q_norm", "scale"), None)
      out[hp + "self_attn.k_norm.weight"] = ((jp, "attn", "k_norm", "scale"), None)
    for name, shape in (("gate", ((d,), (f,))), ("up", ((d,), (f,))), ("down", ((f,), (d,)))):
      out[hp + f"mlp.{name}_proj.weight"] = ((jp, "mlp", name, "w"), shape)
  return out


def hf_shape(cfg: dict, path: tuple[str, ...], layout: Any) -> tuple[int, ...]:
  """The shape the tensor has in the HF checkpoint."""
  if layout == "zero":
    return (cfg["d_model"],)
  if layout is not None:
    n_in, n_out = (math.prod(s) for s in layout)
    return (n_out, n_in) if layout[0] else (n_out,)
  if path == ("embedding",):
    return (cfg["vocab_size"], cfg["d_model"])
  return (cfg["head_dim"],) if path[-2] in ("q_norm", "k_norm") else (cfg["d_model"],)


def to_hf(x: np.ndarray, layout: Any) -> np.ndarray:
  if layout is None:
    return x
  n_in, n_out = (math.prod(s) for s in layout)
  return x.reshape(n_out) if not layout[0] else x.reshape(n_in, n_out).T


def _weight_files(path: str) -> dict[str, str]:
  """Tensor name -> safetensors file, from model.safetensors or a sharded index."""
  index = os.path.join(path, INDEX)
  if os.path.isfile(index):
    with open(index) as f:
      weight_map = json.load(f)["weight_map"]
    files = {name: os.path.join(path, file) for name, file in weight_map.items()}
    for file in sorted(set(files.values())):
      if not os.path.isfile(file):
        raise FileNotFoundError(f"{index} names {os.path.basename(file)}, which is missing")
    return files
  single = os.path.join(path, "model.safetensors")
  if not os.path.isfile(single):
    found = sorted(n for n in os.listdir(path) if n.endswith((".safetensors", ".bin", ".pt", ".pth")))
    raise FileNotFoundError(f"{path}: no model.safetensors or {INDEX} (found: {found or 'no weight files'}; "
                            "only safetensors checkpoints are supported)")
  with _open(single) as f:
    return {name: single for name in f.keys()}


@contextlib.contextmanager
def _open(file: str):
  """safe_open, with a damaged file named in the error (safetensors' own message does not say which)."""
  try:
    with safe_open(file, framework="np") as f:
      yield f
  except Exception as e:  # noqa: BLE001 -- safetensors raises its own SafetensorError (no importable base)
    if type(e).__name__ == "SafetensorError" or isinstance(e, OSError):
      raise UserError(f"{file}: not a readable safetensors file ({type(e).__name__}: {e})") from e
    raise


def _flat_range(index: tuple[slice, ...], dims: tuple[int, ...]) -> tuple[slice, tuple[int, ...], tuple]:
  """Dims `dims` flattened into one HF dim: the contiguous range of it that covers `index` (whole dims after
  the first), the shape that range unflattens to, and the index still to apply inside it. Shard indices split
  heads, never head_dim, so nothing outside `index` is read in practice."""
  start, stop, step = index[0].indices(dims[0])
  if step != 1:
    raise ValueError(f"strided index {index} (shards are contiguous blocks)")
  rest = math.prod(dims[1:])
  return slice(start * rest, stop * rest), (stop - start,) + tuple(dims[1:]), (slice(None),) + tuple(index[1:])


def _read_block(tensor: Any, layout: Any, index: tuple[slice, ...]) -> np.ndarray:
  """`x[index]` of the tensor in jaxllm's layout, reading only the HF rows/columns it covers (`tensor` is a
  safetensors slice handle)."""
  if layout is None:
    return tensor[index]
  n_in = len(layout[0])
  rows, rows_shape, rows_inner = _flat_range(index[n_in:], tuple(layout[1]))
  if not n_in:  # a bias [out] -> [out...]
    return tensor[rows].reshape(rows_shape)[rows_inner]
  cols, cols_shape, cols_inner = _flat_range(index[:n_in], tuple(layout[0]))
  return tensor[rows, cols].T.reshape(cols_shape + rows_shape)[cols_inner + rows_inner]


def _load_tensor(tensor: Any, layout: Any, shape: tuple[int, ...], np_dtype: np.dtype, sharding: Any) -> jax.Array:
  """One weight placed into `sharding`, each device's block read from the file on its own, so a process reads
  (and holds) only what its devices hold; without a sharding, whole on the default device."""
  def block(index: tuple[slice, ...]) -> np.ndarray:
    return np.ascontiguousarray(_read_block(tensor, layout, index).astype(np_dtype, copy=False))

  if sharding is None:
    return jax.device_put(block(tuple(slice(None) for _ in shape)))
  blocks: dict = {}  # devices of this process holding the same block (replicas) share one read

  def cached(index: tuple[slice, ...]) -> np.ndarray:
    key = tuple(s.indices(n)[:2] for s, n in zip(index, shape))
    if key not in blocks:
      blocks[key] = block(index)
    return blocks[key]

  return jax.make_array_from_callback(shape, sharding, cached)


def get(tree: Any, path: tuple[str, ...]) -> Any:
  for key in path:
    tree = tree[key]
  return tree


def _set(tree: dict, path: tuple[str, ...], value: Any) -> None:
  for key in path[:-1]:
    tree = tree.setdefault(key, {})
  tree[path[-1]] = value


def load(path: str, dtype: str = "float32", shardings: Any = None, convert: Any = None) -> tuple[dict, dict]:
  """(model.* config dict, weights pytree) of an HF model folder; each leaf placed as soon as it is read,
  into its sharding when `shardings` (a pytree shaped like the weights) is given, each process reading only the
  blocks its devices hold; then passed through `convert(jax_path, array)` when given (QLoRA quantizes there,
  tensor by tensor: lora.tensor_quantizer)."""
  hf = read_hf_config(path)
  cfg = model_config_from_hf(hf)
  np_dtype = DTYPES[dtype]
  files = _weight_files(path)
  tied = cfg["tie_embeddings"]
  o_bias = cfg["attn_bias"] and hf["model_type"] != "qwen2"
  spec = tensor_map(cfg, o_bias)
  ignored = {n for n in files if n.endswith(_IGNORED_SUFFIXES) or (tied and n == "lm_head.weight")}
  unexpected = sorted(set(files) - set(spec) - ignored)
  missing = sorted(set(spec) - set(files))
  if unexpected or missing:
    raise ValueError(f"{path}: the checkpoint does not match its config.json ({hf['model_type']}): "
                     f"unexpected tensors {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}, "
                     f"missing tensors {missing[:5]}{'...' if len(missing) > 5 else ''}")
  weights: dict = {}
  for name in sorted(spec, key=lambda n: (files[n], n)):  # file by file
    jax_path, layout = spec[name]
    # Opened per tensor on purpose: safe_open maps the whole file, and pages read through a mapping stay
    # resident (and count as this process's memory) until it is closed.
    with _open(files[name]) as f:
      tensor = f.get_slice(name)
      want = hf_shape(cfg, jax_path, layout)
      if tuple(tensor.get_shape()) != want:
        raise ValueError(f"{name}: shape {tuple(tensor.get_shape())} in the checkpoint, {want} expected from "
                         "config.json")
      if layout == "zero":
        if np.any(tensor[:] != 0):
          raise ValueError(f"{name}: nonzero o_proj bias (attention_bias=True on the output projection) is not "
                           "supported: jaxllm's attention output has no bias")
        continue
      shape = want if layout is None else tuple(layout[0]) + tuple(layout[1])
      sharding = None if shardings is None else get(shardings, jax_path)
      leaf = _load_tensor(tensor, layout, shape, np_dtype, sharding)
    _set(weights, jax_path, leaf if convert is None else convert(jax_path, leaf))
  return cfg, weights
