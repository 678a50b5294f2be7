"""Hugging Face interoperability: `config.json` + safetensors (+ a byte-level BPE `tokenizer.json`) in and out,
in three modules: weights.py (config and weights import), vocab.py (tokenizer conversion), save.py (export).

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
from jaxllm.hf.save import export, hf_config, write_safetensors
from jaxllm.hf.vocab import load_tokenizer, tokenizer_json
from jaxllm.hf.weights import SUPPORTED_MODEL_TYPES, is_hf_folder, load, model_config_from_hf, read_hf_config

__all__ = ["SUPPORTED_MODEL_TYPES", "export", "hf_config", "is_hf_folder", "load", "load_tokenizer",
           "model_config_from_hf", "read_hf_config", "tokenizer_json", "write_safetensors"]
