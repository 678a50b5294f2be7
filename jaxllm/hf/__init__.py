"""Hugging Face interoperability: `config.json` + safetensors + the tokenizer folder in and out, in three modules:
weights.py (config and weights import), vocab.py (tokenizers), save.py (export); Gemma's keys in hf_gemma.py.

  cfg, weights = hf.load("Qwen2.5-0.5B/", dtype="bfloat16")       # model.* keys and the params pytree
  tokenizer = hf.load_tokenizer("Qwen2.5-0.5B/")                  # an HFTokenizer (`tokenizers` inside)
  hf.export("out/", cfg, weights, tokenizer)                      # transformers.from_pretrained("out/") loads it

The supported layouts are jaxllm's one architecture (RMSNorm, rotate_half RoPE, GQA, gated MLP) with different
switches: llama (plain), mistral (sliding window), qwen2 (q/k/v biases), qwen3 (per-head q/k RMSNorm, explicit
head_dim), gemma2 / gemma3_text (hf_gemma.py). docs/hf.md lists them and what is refused. Anything else
(another model_type or activation, MLP biases, a nonzero o_proj bias, an unsupported rope scaling, partial
rotary) is a ValueError that names it, never a silently wrong model.

Conversions: an HF Linear weight is [out, in]; jaxllm's `w` is [in..., out...] with heads split out (q/k/v
[D, H, Dh], o [H, Dh, D]). Both use the rotate_half RoPE layout, so q/k need no permutation.

Sliding-window attention (Mistral; Qwen2/3 with use_sliding_window on every layer; Gemma's local layers)
imports as `model.sliding_window` and is computed as transformers does, in training and in the KV cache, at any
length.

Memory: `load` reads one tensor at a time (each file opened only for that read, so no mapped file pages
accumulate) and places it straight into its device/sharding. Given shardings, each device's block is read on its
own (`get_slice`, only the HF rows/columns it covers), so on any number of processes a process reads and holds
only its devices' share plus one block in flight; without, one full copy on the default device. A
Qwen2-0.5B-shaped bf16 checkpoint peaks at 1.2x its size on one device, interpreter included; on 2 processes x
4 devices a process adds 1.05x its shard (benchmarks/hf_import_memory.py). `export` streams one tensor at a
time too.
"""
from jaxllm.hf.save import export, hf_config, write_safetensors
from jaxllm.hf.vocab import load_tokenizer, tokenizer_json
from jaxllm.hf.weights import SUPPORTED_MODEL_TYPES, is_hf_folder, load, model_config_from_hf, read_hf_config

__all__ = ["SUPPORTED_MODEL_TYPES", "export", "hf_config", "is_hf_folder", "load", "load_tokenizer",
           "model_config_from_hf", "read_hf_config", "tokenizer_json", "write_safetensors"]
