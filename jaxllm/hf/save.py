"""Hugging Face checkpoints out: a jaxllm model (LoRA merged) written as a transformers folder: config.json,
safetensors (sharded with an index above a size), the tokenizer files and generation_config.json."""
from __future__ import annotations

import json
import math
import os
import shutil
import struct
from typing import Any

import jax
import numpy as np

from jaxllm import hf_gemma
from jaxllm.hf.vocab import write_tokenizer
from jaxllm.hf.weights import ACTIVATIONS, DTYPES, HF_NAMES, HF_ROPE_NAMES, INDEX, get, hf_shape, tensor_map, to_hf
from jaxllm.hf_tokenizer import HFTokenizer
from jaxllm.tokenizer import Tokenizer

_SAFETENSORS_DTYPES = {"float32": "F32", "bfloat16": "BF16", "float16": "F16"}


_GEMMA_ONLY = ("norm_plus_one", "embed_scale", "attn_softcap", "final_softcap", "query_pre_attn_scalar",
               "global_every", "rope_local_theta")


def _architecture(cfg: dict) -> tuple[str, str]:
  if hf_gemma.is_gemma(cfg):
    return ("gemma3_text", "Gemma3ForCausalLM") if cfg["qk_norm"] else ("gemma2", "Gemma2ForCausalLM")
  if cfg.get("sliding_window") and not cfg["qk_norm"] and not cfg["attn_bias"]:
    return "mistral", "MistralForCausalLM"
  if cfg["qk_norm"]:
    return "qwen3", "Qwen3ForCausalLM"  # attn_bias: q/k/v biases plus an all-zero o_proj bias
  if cfg["attn_bias"]:
    return "qwen2", "Qwen2ForCausalLM"
  return "llama", "LlamaForCausalLM"


# The transformers class of each family's classifier (every family _architecture picks has one): its base model,
# then `score` ([C, D], no bias) on the final hidden state of the last non-pad token, which is what a last-pooled
# jaxllm classify head computes.
SEQUENCE_CLASSIFIERS = {"LlamaForCausalLM": "LlamaForSequenceClassification",
                        "MistralForCausalLM": "MistralForSequenceClassification",
                        "Qwen2ForCausalLM": "Qwen2ForSequenceClassification",
                        "Qwen3ForCausalLM": "Qwen3ForSequenceClassification",
                        "Gemma2ForCausalLM": "Gemma2ForSequenceClassification",
                        "Gemma3ForCausalLM": "Gemma3TextForSequenceClassification"}


def classifier_config(config: dict, labels: list[str]) -> dict:
  """A causal-LM config.json made the family's ...ForSequenceClassification one, with labels (num_labels is
  len(id2label) in transformers)."""
  return {**config, "architectures": [SEQUENCE_CLASSIFIERS[config["architectures"][0]]],
          "id2label": {str(i): name for i, name in enumerate(labels)},
          "label2id": {name: i for i, name in enumerate(labels)}, "problem_type": "single_label_classification"}


def hf_config(cfg: dict, dtype: str = "float32") -> dict:
  """jaxllm model.* keys -> a transformers config.json (llama, mistral, qwen2, qwen3, gemma2 or gemma3_text by
  the features used); ValueError for a combination no Hugging Face architecture computes."""
  model_type, arch = _architecture(cfg)
  act = {ours: theirs for theirs, ours in ACTIVATIONS.items()}[cfg.get("mlp_act", "silu")]
  out = {"architectures": [arch], "model_type": model_type, **{theirs: cfg[ours] for ours, theirs in HF_NAMES.items()},
         "head_dim": cfg["head_dim"] or cfg["d_model"] // cfg["n_heads"], "hidden_act": act, "torch_dtype": dtype}
  if model_type != "qwen2":
    out.update(attention_bias=cfg["attn_bias"], mlp_bias=False)
  if hf_gemma.is_gemma(cfg):
    return {**out, **hf_gemma.hf_config(cfg)}
  gemma_only = sorted(k for k in _GEMMA_ONLY if cfg.get(k))
  if gemma_only:
    raise ValueError(f"model.{gemma_only[0]} is set but model.post_norms is not: no Hugging Face architecture "
                     "computes that (Gemma 2 / 3 have post_norms)")
  if model_type == "mistral":
    out["sliding_window"] = cfg["sliding_window"]
  elif model_type in ("qwen2", "qwen3"):  # every layer windowed, or none
    out.update(use_sliding_window=bool(cfg.get("sliding_window")), sliding_window=cfg.get("sliding_window") or None,
               max_window_layers=0)
  if cfg.get("rope_scaling") == "linear":
    out["rope_scaling"] = {"rope_type": "linear", "factor": cfg["rope_factor"]}
  elif cfg.get("rope_scaling"):
    out["rope_scaling"] = {theirs: cfg[ours] for ours, theirs in HF_ROPE_NAMES.items()}
  return out


def write_safetensors(file: str, tensors: list[tuple[str, tuple[int, ...], Any]], dtype: str) -> None:
  """Stream tensors (name, HF shape, () -> numpy array) into one safetensors file, one tensor in memory."""
  np_dtype = DTYPES[dtype]
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


def export(folder: str, model_config: dict, weights: Any, tokenizer: Tokenizer | HFTokenizer,
           max_shard_bytes: int = 2**31, dtype: str = "float32", classifier: tuple[Any, list[str]] | None = None
           ) -> list[str]:
  """Write a transformers model folder: config.json, safetensors (sharded with an index above
  max_shard_bytes), the tokenizer files (an imported model's own, chat template included; a jaxllm tokenizer as
  tokenizer.json with a ChatML template), generation_config.json. `weights` are merged base weights
  (load_pretrained merges LoRA). With `classifier` = (a last-pooled classify head's [D, C] matrix, the class
  names) the folder is the family's ...ForSequenceClassification (SEQUENCE_CLASSIFIERS): `score.weight`
  instead of `lm_head.weight`, id2label / label2id. Returns the files written.

  Everything is written to a staging folder beside `folder` first and moved in only when all of it is written,
  so a failed export leaves `folder` as it was."""
  staging = f"{os.path.normpath(folder)}.partial-{os.getpid()}"
  shutil.rmtree(staging, ignore_errors=True)
  try:
    written = _write_folder(staging, model_config, weights, tokenizer, max_shard_bytes, dtype, classifier)
    os.makedirs(folder, exist_ok=True)
    for stale in os.listdir(folder):  # a previous export's shards would shadow or mix with these
      if stale.startswith("model") and stale.endswith((".safetensors", INDEX)):
        os.remove(os.path.join(folder, stale))
    for name in written:
      os.replace(os.path.join(staging, name), os.path.join(folder, name))
  finally:
    shutil.rmtree(staging, ignore_errors=True)
  return written


def _write_folder(folder: str, model_config: dict, weights: Any, tokenizer: Tokenizer | HFTokenizer,
                  max_shard_bytes: int, dtype: str, classifier: tuple[Any, list[str]] | None = None) -> list[str]:
  cfg = dict(model_config)
  cfg["head_dim"] = cfg.get("head_dim") or cfg["d_model"] // cfg["n_heads"]
  model_type = _architecture(cfg)[0]
  spec = tensor_map(cfg, o_bias=cfg["attn_bias"] and model_type != "qwen2")

  def fetch(path, layout):
    if layout == "zero":
      return lambda: np.zeros((cfg["d_model"],), np.float32)
    return lambda: to_hf(np.asarray(jax.device_get(get(weights, path))), layout)

  tensors = [(name, hf_shape(cfg, path, layout), fetch(path, layout)) for name, (path, layout) in spec.items()]
  config = hf_config(cfg, dtype)  # first: its errors cost no writing
  if classifier is not None:
    w_DC, labels = classifier
    config = classifier_config(config, labels)
    score = lambda: np.asarray(jax.device_get(w_DC), np.float32).T
    tensors = [t for t in tensors if t[0] != "lm_head.weight"] + [("score.weight", (len(labels), cfg["d_model"]),
                                                                   score)]
  os.makedirs(folder)
  special_ids = write_tokenizer(folder, tokenizer, cfg["max_seq_len"])
  itemsize = DTYPES[dtype].itemsize
  shards = _split(tensors, lambda t: math.prod(t[1]) * itemsize, max_shard_bytes)
  names = (["model.safetensors"] if len(shards) == 1 else
           [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))])
  for name, shard in zip(names, shards):
    write_safetensors(os.path.join(folder, name), shard, dtype)
  if len(shards) > 1:
    index = {"metadata": {"total_size": sum(math.prod(t[1]) * itemsize for t in tensors)},
             "weight_map": {t[0]: name for name, shard in zip(names, shards) for t in shard}}
    with open(os.path.join(folder, INDEX), "w") as f:
      json.dump(index, f, indent=2)
  with open(os.path.join(folder, "config.json"), "w") as f:
    json.dump({**config, **special_ids}, f, indent=2)
  with open(os.path.join(folder, "generation_config.json"), "w") as f:
    json.dump({**special_ids, "do_sample": False}, f, indent=2)
  return sorted(os.listdir(folder))
