"""Hugging Face interoperability: `config.json` + safetensors (+ a byte-level BPE `tokenizer.json`) in and out.

  cfg, weights = hf.load("Qwen2.5-0.5B/", dtype="bfloat16")       # model.* keys and the params pytree
  tokenizer = hf.load_tokenizer("Qwen2.5-0.5B/")                  # a jaxllm Tokenizer (tiktoken inside)
  hf.export("out/", cfg, weights, tokenizer)                      # transformers.from_pretrained("out/") loads it

The four supported layouts are jaxllm's one architecture (RMSNorm, rotate_half RoPE, GQA, SwiGLU) with different
switches: llama and mistral (plain), qwen2 (q/k/v biases), qwen3 (per-head q/k RMSNorm, explicit head_dim).
Anything else (another model_type or activation, MLP biases, a nonzero o_proj bias, an unsupported rope
scaling, partial rotary) is a ValueError that names it, never a silently wrong model.

Conversions: an HF Linear weight is [out, in]; jaxllm's `w` is [in..., out...] with heads split out (q/k/v
[D, H, Dh], o [H, Dh, D]). Both use the rotate_half RoPE layout, so q/k need no permutation.

Sliding-window attention (Mistral v0.1, Qwen with use_sliding_window) is not implemented; a window W only
changes attention for sequences longer than W, so such a model imports with max_seq_len = min(max positions,
W) and is exact for every sequence jaxllm will then feed it.

Memory: `load` reads one tensor at a time (each file opened only for that read, so no mapped file pages
accumulate) and places it straight into its device/sharding. Given shardings, each device's block is read on its
own (`get_slice`, only the HF rows/columns it covers), so on any number of processes a process reads and holds
only its devices' share plus one block in flight; without, one full copy on the default device. A
Qwen2-0.5B-shaped bf16 checkpoint peaks at 1.2x its size on one device, interpreter included; on 2 processes x
4 devices a process adds 1.05x its shard (benchmarks/hf_import_memory.py). `export` streams one tensor at a
time too.
"""
from __future__ import annotations

import json
import math
import os
import struct
from typing import Any

import jax
import ml_collections
import ml_dtypes
import numpy as np
import tokenizers
from safetensors import safe_open

from jaxllm.checkpoint import Pretrained
from jaxllm.tokenizer import Tokenizer, _unicode_to_byte

SUPPORTED_MODEL_TYPES = ("llama", "mistral", "qwen2", "qwen3")
_DTYPES = {"float32": np.dtype(np.float32), "bfloat16": np.dtype(ml_dtypes.bfloat16),
           "float16": np.dtype(np.float16)}
_SAFETENSORS_DTYPES = {"float32": "F32", "bfloat16": "BF16", "float16": "F16"}
_INDEX = "model.safetensors.index.json"
# Buffers some old checkpoints carry that are recomputed, never learned.
_IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)


# ----------------------------------------------------------------------------------------------- config

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


def _sliding_window(hf: dict) -> int | None:
  if hf["model_type"] in ("qwen2", "qwen3") and not hf.get("use_sliding_window", False):
    return None
  return hf.get("sliding_window")


def _rope_config(hf: dict) -> dict:
  rope = _rope_parameters(hf)
  if rope.get("partial_rotary_factor", 1.0) != 1.0:
    raise ValueError(f"partial_rotary_factor={rope['partial_rotary_factor']} is not supported (jaxllm rotates "
                     "the whole head)")
  kind = rope["rope_type"]
  out = {"rope_theta": float(rope["rope_theta"])}
  if kind == "default":
    return out
  if kind != "llama3":
    raise ValueError(f"rope_scaling type {kind!r} is not supported (supported: none, 'llama3')")
  return {**out, "rope_scaling": "llama3", "rope_factor": float(rope["factor"]),
          "rope_low_freq_factor": float(rope["low_freq_factor"]),
          "rope_high_freq_factor": float(rope["high_freq_factor"]),
          "rope_original_max_len": int(rope["original_max_position_embeddings"])}


def model_config_from_hf(hf: dict) -> dict:
  """A Hugging Face config.json (as a dict) -> jaxllm `model.*` keys; ValueError naming what is unsupported."""
  model_type = hf.get("model_type")
  if model_type not in SUPPORTED_MODEL_TYPES:
    raise ValueError(f"model_type {model_type!r} is not supported (supported: {', '.join(SUPPORTED_MODEL_TYPES)})")
  if hf.get("hidden_act", "silu") != "silu":
    raise ValueError(f"hidden_act {hf['hidden_act']!r} is not supported (jaxllm's MLP is SwiGLU: 'silu')")
  if hf.get("mlp_bias"):
    raise ValueError("mlp_bias=True is not supported (jaxllm's MLP projections have no bias)")
  d, heads = hf["hidden_size"], hf["num_attention_heads"]
  max_len = hf.get("max_position_embeddings", 2048)
  window = _sliding_window(hf)
  if window:
    max_len = min(max_len, window)  # exact up to the window; see the module docstring
  return {
      "vocab_size": hf["vocab_size"], "d_model": d, "n_layers": hf["num_hidden_layers"], "n_heads": heads,
      "n_kv_heads": hf.get("num_key_value_heads") or heads, "head_dim": hf.get("head_dim") or d // heads,
      "mlp_dim": hf["intermediate_size"], "max_seq_len": max_len, **_rope_config(hf),
      "norm_eps": float(hf.get("rms_norm_eps", 1e-6)), "qk_norm": model_type == "qwen3",
      # qwen2 always has q/k/v biases; llama/mistral/qwen3 `attention_bias` also adds an o_proj bias, which
      # jaxllm lacks: it is accepted only when all zero (checked by `load`, as exported by `export`).
      "attn_bias": model_type == "qwen2" or bool(hf.get("attention_bias", False)),
      "tie_embeddings": bool(hf.get("tie_word_embeddings", False)),
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
  return any(os.path.isfile(os.path.join(path, n)) for n in ("model.safetensors", _INDEX))


def read_hf_config(path: str) -> dict:
  with open(os.path.join(path, "config.json")) as f:
    return json.load(f)


# ----------------------------------------------------------------------------------------------- tensors

def _tensor_map(cfg: dict, o_bias: bool) -> dict[str, tuple[tuple[str, ...], Any]]:
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
    out[hp + "input_layernorm.weight"] = ((jp, "attn_norm", "scale"), None)
    out[hp + "post_attention_layernorm.weight"] = ((jp, "mlp_norm", "scale"), None)
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


def _hf_shape(cfg: dict, path: tuple[str, ...], layout: Any) -> tuple[int, ...]:
  """The shape the tensor has in the HF checkpoint."""
  if layout == "zero":
    return (cfg["d_model"],)
  if layout is not None:
    n_in, n_out = (math.prod(s) for s in layout)
    return (n_out, n_in) if layout[0] else (n_out,)
  if path == ("embedding",):
    return (cfg["vocab_size"], cfg["d_model"])
  return (cfg["head_dim"],) if path[-2] in ("q_norm", "k_norm") else (cfg["d_model"],)


def _to_hf(x: np.ndarray, layout: Any) -> np.ndarray:
  if layout is None:
    return x
  n_in, n_out = (math.prod(s) for s in layout)
  return x.reshape(n_out) if not layout[0] else x.reshape(n_in, n_out).T


def _weight_files(path: str) -> dict[str, str]:
  """Tensor name -> safetensors file, from model.safetensors or a sharded index."""
  index = os.path.join(path, _INDEX)
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
    raise FileNotFoundError(f"{path}: no model.safetensors or {_INDEX} (found: {found or 'no weight files'}; "
                            "only safetensors checkpoints are supported)")
  with safe_open(single, framework="np") as f:
    return {name: single for name in f.keys()}


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


def _get(tree: Any, path: tuple[str, ...]) -> Any:
  for key in path:
    tree = tree[key]
  return tree


def _set(tree: dict, path: tuple[str, ...], value: Any) -> None:
  for key in path[:-1]:
    tree = tree.setdefault(key, {})
  tree[path[-1]] = value


def load(path: str, dtype: str = "float32", shardings: Any = None) -> tuple[dict, dict]:
  """(model.* config dict, weights pytree) of an HF model folder; each leaf placed as soon as it is read,
  into its sharding when `shardings` (a pytree shaped like the weights) is given, each process reading only the
  blocks its devices hold."""
  hf = read_hf_config(path)
  cfg = model_config_from_hf(hf)
  np_dtype = _DTYPES[dtype]
  files = _weight_files(path)
  tied = cfg["tie_embeddings"]
  o_bias = cfg["attn_bias"] and hf["model_type"] != "qwen2"
  spec = _tensor_map(cfg, o_bias)
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
    with safe_open(files[name], framework="np") as f:
      tensor = f.get_slice(name)
      want = _hf_shape(cfg, jax_path, layout)
      if tuple(tensor.get_shape()) != want:
        raise ValueError(f"{name}: shape {tuple(tensor.get_shape())} in the checkpoint, {want} expected from "
                         "config.json")
      if layout == "zero":
        if np.any(tensor[:] != 0):
          raise ValueError(f"{name}: nonzero o_proj bias (attention_bias=True on the output projection) is not "
                           "supported: jaxllm's attention output has no bias")
        continue
      shape = want if layout is None else tuple(layout[0]) + tuple(layout[1])
      sharding = None if shardings is None else _get(shardings, jax_path)
      _set(weights, jax_path, _load_tensor(tensor, layout, shape, np_dtype, sharding))
  return cfg, weights


def pretrained(path: str, dtype: str = "float32", shardings: Any = None) -> Pretrained:
  """An HF folder as a `checkpoint.Pretrained` (config holds only `model`), for init_from."""
  cfg, weights = load(path, dtype, shardings)
  return Pretrained(config=ml_collections.ConfigDict({"model": cfg}), weights=weights,
                    workdir=os.path.abspath(path), extras={})


# --------------------------------------------------------------------------------------------- tokenizer

# tokenizers' ByteLevel pre-tokenizer with use_regex=True splits with GPT-2's pattern.
_GPT2_PAT_STR = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
# jaxllm's marker spellings -> the spellings other model families use for the same role, in preference order.
_MARKERS = {"<|endoftext|>": ("<|endoftext|>", "<|end_of_text|>"), "<|im_start|>": ("<|im_start|>",),
            "<|im_end|>": ("<|im_end|>",), "<|pad|>": ("<|pad|>",)}
_CHATML = ("{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + "
           "'<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}"
           "{% endif %}")


def _pat_str(pre: dict | None) -> str:
  """The single regex a byte-level pre-tokenizer splits with, as tiktoken's pat_str."""
  pre = pre or {}
  steps = pre.get("pretokenizers", []) if pre.get("type") == "Sequence" else [pre]
  kinds = [step.get("type") for step in steps]
  if kinds == ["ByteLevel"] and steps[0].get("use_regex", True) and not steps[0].get("add_prefix_space"):
    return _GPT2_PAT_STR
  if kinds == ["Split", "ByteLevel"]:
    split, byte_level = steps
    if (split.get("behavior") == "Isolated" and not split.get("invert") and "Regex" in split.get("pattern", {})
        and not byte_level.get("use_regex", True) and not byte_level.get("add_prefix_space")):
      return split["pattern"]["Regex"]
  raise ValueError(f"pre_tokenizer {kinds} is not supported: expected byte-level BPE splitting with one regex "
                   "(Split(Regex, Isolated) + ByteLevel(use_regex=False), or ByteLevel alone), no prefix space")


def _token_bytes(token: str, table: dict[str, int]) -> bytes:
  try:
    return bytes(table[c] for c in token)
  except KeyError:
    raise ValueError(f"vocab entry {token!r} is not a byte-level token (not GPT-2 bytes_to_unicode)") from None


def _check_merge_order(merges: list, ranks: dict[bytes, int], table: dict[str, int]) -> None:
  """tiktoken merges by the rank (= id) of the merged token; HF by position in `merges`. They agree when ids
  grow along the merge list and each merge's parts rank below its result: true of tiktoken conversions (Qwen2,
  Llama-3) and of tokenizers trained by `tokenizers`. A later merge repeating an earlier result ("a"+"bc" after
  "ab"+"c") is skipped, as jaxllm's own trainer does (tokenizer.mergeable_ranks)."""
  previous, seen = -1, set()
  for merge in merges:
    left, right = merge.split(" ", 1) if isinstance(merge, str) else merge
    a, b = _token_bytes(left, table), _token_bytes(right, table)
    if a + b in seen:
      continue
    rank = ranks.get(a + b)
    if rank is None or rank < previous or ranks.get(a, rank) >= rank or ranks.get(b, rank) >= rank:
      raise ValueError(f"merge {left!r} + {right!r}: merges are not in token-id order, so tiktoken cannot "
                       "reproduce this BPE")
    previous = rank
    seen.add(a + b)


def _special_spelling(value: Any) -> str | None:
  return value.get("content") if isinstance(value, dict) else value


def _aliases(specials: dict[str, int], tokenizer_config: dict) -> dict[str, str]:
  """jaxllm marker -> the model's own special token for that role, where the spellings differ."""
  found = {marker: next((s for s in names if s in specials), None) for marker, names in _MARKERS.items()}
  eos = _special_spelling(tokenizer_config.get("eos_token"))
  pad = _special_spelling(tokenizer_config.get("pad_token"))
  found["<|endoftext|>"] = found["<|endoftext|>"] or (eos if eos in specials else None)
  found["<|pad|>"] = found["<|pad|>"] or (pad if pad in specials else None) or found["<|endoftext|>"]
  return {marker: s for marker, s in found.items() if s is not None and s != marker}


def load_tokenizer(path: str) -> Tokenizer:
  """A byte-level BPE tokenizer.json (Qwen2 / Llama-3 style) as a jaxllm Tokenizer that encodes identically.

  Ranks are the BPE vocab ids; every added token becomes a tiktoken special token. jaxllm's markers map to the
  model's tokens: <|endoftext|> (or <|end_of_text|>, or eos_token), <|im_start|>, <|im_end|>, pad = pad_token
  else the end-of-text token. A model without <|im_start|>/<|im_end|> (Llama-3: <|start_header_id|> ...
  <|eot_id|>) has no ChatML markers: rendering a chat with it raises a ValueError naming the missing token.
  An NFC normalizer (Qwen2) is not applied: encodings agree on NFC text, which is nearly all text.
  """
  file = os.path.join(path, "tokenizer.json")
  if not os.path.isfile(file):
    raise FileNotFoundError(f"{path}: no tokenizer.json (only byte-level BPE tokenizer.json is supported)")
  with open(file, encoding="utf-8") as f:
    spec = json.load(f)
  model = spec.get("model", {})
  if model.get("type") != "BPE" or model.get("byte_fallback") or model.get("continuing_subword_prefix") \
      or model.get("end_of_word_suffix") or model.get("dropout"):
    raise ValueError(f"{file}: only plain byte-level BPE is supported (model.type BPE, no byte_fallback, "
                     f"subword prefix/suffix or dropout); got {model.get('type')!r}")
  normalizer = (spec.get("normalizer") or {}).get("type")
  if normalizer not in (None, "NFC"):
    raise ValueError(f"{file}: normalizer {normalizer!r} is not supported")
  pat_str = _pat_str(spec.get("pre_tokenizer"))
  table = _unicode_to_byte()
  ranks = {_token_bytes(token, table): i for token, i in model["vocab"].items()}
  missing = [b for b in range(256) if bytes([b]) not in ranks]
  if missing:
    raise ValueError(f"{file}: the vocab lacks single-byte tokens for bytes {missing[:8]}: not byte-level BPE")
  _check_merge_order(model.get("merges", []), ranks, table)
  specials = {t["content"]: t["id"] for t in spec.get("added_tokens", [])}
  for content, i in specials.items():  # an added token that is also a vocab entry is split out as special
    if ranks.get(content.encode("utf-8")) == i:
      del ranks[content.encode("utf-8")]
  config_file = os.path.join(path, "tokenizer_config.json")
  tokenizer_config = {}
  if os.path.isfile(config_file):
    with open(config_file, encoding="utf-8") as f:
      tokenizer_config = json.load(f)
  name = os.path.basename(os.path.normpath(path)) or "hf"
  return Tokenizer(name, ranks, specials, pat_str, aliases=_aliases(specials, tokenizer_config))


def _bpe_parts(ranks: dict[bytes, int], token: bytes, max_rank: int) -> list[bytes]:
  """tiktoken's merging of `token`'s bytes using only ranks below max_rank."""
  parts = [bytes([b]) for b in token]
  while True:
    best = None
    for i in range(len(parts) - 1):
      rank = ranks.get(parts[i] + parts[i + 1])
      if rank is not None and rank < max_rank and (best is None or rank < best[0]):
        best = (rank, i)
    if best is None:
      return parts
    i = best[1]
    parts[i:i + 2] = [parts[i] + parts[i + 1]]


def tokenizer_json(tokenizer: Tokenizer) -> tokenizers.Tokenizer:
  """The `tokenizers` equivalent of a jaxllm Tokenizer: byte-level BPE whose merges are rebuilt from the ranks
  (each token's last tiktoken merge), its pre-split regex, and its special tokens at their ids."""
  ranks, specials = tokenizer.mergeable_ranks, tokenizer.special_tokens
  to_char = {b: c for c, b in _unicode_to_byte().items()}
  text = lambda bs: "".join(to_char[b] for b in bs)
  merges = []
  for token, rank in sorted(ranks.items(), key=lambda kv: kv[1]):
    if len(token) > 1:
      parts = _bpe_parts(ranks, token, rank)
      if len(parts) == 2:  # else reachable only as a whole piece, which ignore_merges covers
        merges.append((text(parts[0]), text(parts[1])))
  hf = tokenizers.Tokenizer(tokenizers.models.BPE(vocab={text(t): r for t, r in ranks.items()}, merges=merges,
                                                   ignore_merges=True))
  hf.pre_tokenizer = tokenizers.pre_tokenizers.Sequence([
      tokenizers.pre_tokenizers.Split(tokenizers.Regex(tokenizer.pat_str), behavior="isolated"),
      tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
  hf.decoder = tokenizers.decoders.ByteLevel()
  hf.add_special_tokens([tokenizers.AddedToken(s, special=True, normalized=False) for s in specials])
  wrong = {s: (hf.token_to_id(s), i) for s, i in specials.items() if hf.token_to_id(s) != i}
  if wrong:
    raise ValueError(f"special token ids are not contiguous after the ranks, cannot rebuild them: {wrong}")
  return hf


def _role_spelling(tokenizer: Tokenizer, marker: str) -> str | None:
  try:
    i = tokenizer.special_id(marker)
  except ValueError:
    return None
  return next(s for s, j in tokenizer.special_tokens.items() if j == i)


def _write_tokenizer(folder: str, tokenizer: Tokenizer, max_len: int) -> dict[str, Any]:
  """tokenizer.json + tokenizer_config.json; returns the special ids config.json / generation_config need."""
  tokenizer_json(tokenizer).save(os.path.join(folder, "tokenizer.json"))
  eot, pad = _role_spelling(tokenizer, "<|endoftext|>"), _role_spelling(tokenizer, "<|pad|>")
  im_start, im_end = _role_spelling(tokenizer, "<|im_start|>"), _role_spelling(tokenizer, "<|im_end|>")
  chat = im_start is not None and im_end is not None
  eos = im_end if chat else eot
  config = {
      "tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": max_len, "bos_token": None,
      "eos_token": eos, "pad_token": pad or eot, "unk_token": None, "clean_up_tokenization_spaces": False,
      "added_tokens_decoder": {str(i): {"content": s, "lstrip": False, "normalized": False, "rstrip": False,
                                        "single_word": False, "special": True}
                               for s, i in tokenizer.special_tokens.items()},
  }
  if chat:
    config["chat_template"] = _CHATML.replace("<|im_start|>", im_start).replace("<|im_end|>", im_end)
  with open(os.path.join(folder, "tokenizer_config.json"), "w", encoding="utf-8") as f:
    json.dump(config, f, indent=2, ensure_ascii=False)
  ids = lambda s: None if s is None else tokenizer.special_tokens[s]
  stops = list(dict.fromkeys(i for i in (ids(eos), ids(eot)) if i is not None))
  return {"bos_token_id": ids(eot), "eos_token_id": stops[0] if len(stops) == 1 else stops,
          "pad_token_id": ids(pad or eot)}


# ------------------------------------------------------------------------------------------------ export

def _architecture(cfg: dict) -> tuple[str, str]:
  if cfg["qk_norm"]:
    return "qwen3", "Qwen3ForCausalLM"  # attn_bias: q/k/v biases plus an all-zero o_proj bias
  if cfg["attn_bias"]:
    return "qwen2", "Qwen2ForCausalLM"
  return "llama", "LlamaForCausalLM"


def hf_config(cfg: dict, dtype: str = "float32") -> dict:
  """jaxllm model.* keys -> a transformers config.json (llama, qwen2 or qwen3 by the features used)."""
  model_type, arch = _architecture(cfg)
  out = {
      "architectures": [arch], "model_type": model_type, "vocab_size": cfg["vocab_size"],
      "hidden_size": cfg["d_model"], "intermediate_size": cfg["mlp_dim"], "num_hidden_layers": cfg["n_layers"],
      "num_attention_heads": cfg["n_heads"], "num_key_value_heads": cfg["n_kv_heads"],
      "head_dim": cfg["head_dim"] or cfg["d_model"] // cfg["n_heads"], "hidden_act": "silu",
      "max_position_embeddings": cfg["max_seq_len"], "rms_norm_eps": cfg["norm_eps"],
      "rope_theta": cfg["rope_theta"], "tie_word_embeddings": cfg["tie_embeddings"], "torch_dtype": dtype,
  }
  if model_type != "qwen2":
    out.update(attention_bias=cfg["attn_bias"], mlp_bias=False)
  if cfg.get("rope_scaling"):
    out["rope_scaling"] = {"rope_type": cfg["rope_scaling"], "factor": cfg["rope_factor"],
                           "low_freq_factor": cfg["rope_low_freq_factor"],
                           "high_freq_factor": cfg["rope_high_freq_factor"],
                           "original_max_position_embeddings": cfg["rope_original_max_len"]}
  return out


def write_safetensors(file: str, tensors: list[tuple[str, tuple[int, ...], Any]], dtype: str) -> None:
  """Stream tensors (name, HF shape, () -> numpy array) into one safetensors file, one tensor in memory."""
  np_dtype = _DTYPES[dtype]
  header, offset = {}, 0
  for name, shape, _ in tensors:
    nbytes = math.prod(shape) * np_dtype.itemsize
    header[name] = {"dtype": _SAFETENSORS_DTYPES[dtype], "shape": list(shape),
                    "data_offsets": [offset, offset + nbytes]}
    offset += nbytes
  header["__metadata__"] = {"format": "pt"}
  blob = json.dumps(header, separators=(",", ":")).encode()
  blob += b" " * (-len(blob) % 8)  # the data section starts 8-byte aligned
  with open(file, "wb") as f:
    f.write(struct.pack("<Q", len(blob)) + blob)
    for _, shape, fetch in tensors:
      x = np.ascontiguousarray(fetch().astype(np_dtype))
      if x.shape != tuple(shape):
        raise ValueError(f"{file}: tensor of shape {x.shape}, its header says {tuple(shape)}")
      f.write(x.tobytes())


def _split(items: list, nbytes, max_bytes: int) -> list[list]:
  """Consecutive groups of at most max_bytes each (an item larger than that gets a group of its own)."""
  groups, size = [[]], 0
  for item in items:
    if groups[-1] and size + nbytes(item) > max_bytes:
      groups.append([])
      size = 0
    groups[-1].append(item)
    size += nbytes(item)
  return groups


def export(folder: str, model_config: dict, weights: Any, tokenizer: Tokenizer, max_shard_bytes: int = 2**31,
           dtype: str = "float32") -> list[str]:
  """Write a transformers model folder: config.json, safetensors (sharded with an index above
  max_shard_bytes), tokenizer.json / tokenizer_config.json (ChatML template), generation_config.json.
  `weights` are merged base weights (load_pretrained merges LoRA). Returns the files written."""
  cfg = dict(model_config)
  cfg["head_dim"] = cfg.get("head_dim") or cfg["d_model"] // cfg["n_heads"]
  model_type = _architecture(cfg)[0]
  spec = _tensor_map(cfg, o_bias=cfg["attn_bias"] and model_type != "qwen2")

  def fetch(path, layout):
    if layout == "zero":
      return lambda: np.zeros((cfg["d_model"],), np.float32)
    return lambda: _to_hf(np.asarray(jax.device_get(_get(weights, path))), layout)

  tensors = [(name, _hf_shape(cfg, path, layout), fetch(path, layout)) for name, (path, layout) in spec.items()]
  os.makedirs(folder, exist_ok=True)
  for stale in os.listdir(folder):  # a previous export's shards would shadow or mix with these
    if stale.startswith("model") and stale.endswith((".safetensors", _INDEX)):
      os.remove(os.path.join(folder, stale))
  itemsize = _DTYPES[dtype].itemsize
  shards = _split(tensors, lambda t: math.prod(t[1]) * itemsize, max_shard_bytes)
  names = (["model.safetensors"] if len(shards) == 1 else
           [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))])
  for name, shard in zip(names, shards):
    write_safetensors(os.path.join(folder, name), shard, dtype)
  written = list(names)
  if len(shards) > 1:
    index = {"metadata": {"total_size": sum(math.prod(t[1]) * itemsize for t in tensors)},
             "weight_map": {t[0]: name for name, shard in zip(names, shards) for t in shard}}
    with open(os.path.join(folder, _INDEX), "w") as f:
      json.dump(index, f, indent=2)
    written.append(_INDEX)
  special_ids = _write_tokenizer(folder, tokenizer, cfg["max_seq_len"])
  config = {**hf_config(cfg, dtype), **special_ids}
  with open(os.path.join(folder, "config.json"), "w") as f:
    json.dump(config, f, indent=2)
  with open(os.path.join(folder, "generation_config.json"), "w") as f:
    json.dump({**special_ids, "do_sample": False}, f, indent=2)
  return written + ["config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json"]
