"""Gemma 2 and Gemma 3 (text) config.json <-> jaxllm `model.*` keys; hf.py does the rest as for Llama.

  gemma2       sqrt(D)-scaled tied embeddings, (1 + w) RMSNorm before and after attention and MLP, GeGLU,
               scores scaled by query_pre_attn_scalar ** -0.5 and soft-capped, final logits soft-capped,
               sliding-window and global layers alternating (layer_types; by default every 2nd is global)
  gemma3_text  the same without soft-capping, plus per-head (1 + w) q/k RMSNorm; 5 local layers to 1 global by
               default, local layers at their own RoPE base (rope_local_base_freq), global ones possibly with
               linear RoPE scaling

A layer pattern other than "every k-th layer global" is refused by name, as is a multimodal `gemma3` folder
(its text model's weights live under another prefix).
"""
from __future__ import annotations

GEMMA_TYPES = ("gemma2", "gemma3_text")
_DEFAULT_GLOBAL_EVERY = {"gemma2": 2, "gemma3_text": 6}
# Layer tensors named differently from Llama's: (HF suffix, jaxllm Block param) for the four norms.
NORMS = (("input_layernorm", "attn_norm"), ("post_attention_layernorm", "post_attn_norm"),
         ("pre_feedforward_layernorm", "mlp_norm"), ("post_feedforward_layernorm", "post_mlp_norm"))


def _global_every(hf: dict) -> int:
  n = hf["num_hidden_layers"]
  kinds = hf.get("layer_types")
  if kinds is None:
    k = hf.get("sliding_window_pattern") or _DEFAULT_GLOBAL_EVERY[hf["model_type"]]
    kinds = ["full_attention" if (i + 1) % k == 0 else "sliding_attention" for i in range(n)]
  if not hf.get("sliding_window") or "sliding_attention" not in kinds:
    if "sliding_attention" in kinds:
      raise ValueError(f"{hf['model_type']}: layer_types has sliding layers but sliding_window is not set")
    return -1  # every layer global: no window at all
  full = [i for i, kind in enumerate(kinds) if kind == "full_attention"]
  if not full:
    return 0
  k = full[0] + 1
  if full != list(range(k - 1, n, k)):
    raise ValueError(f"{hf['model_type']}: layer_types {kinds} is not supported (supported: every k-th layer "
                     "global, the rest sliding-window)")
  return k


def _rope(hf: dict) -> dict:
  """(global RoPE keys, local theta): transformers 5's per-layer-type rope_parameters or the older keys."""
  params = hf.get("rope_parameters") or {}
  if "full_attention" in params:
    full, local = dict(params["full_attention"]), dict(params.get("sliding_attention") or {})
  else:
    default_theta = 1e6 if hf["model_type"] == "gemma3_text" else 1e4
    full = {"rope_theta": hf.get("rope_theta", params.get("rope_theta", default_theta)),
            **(hf.get("rope_scaling") or {}), **{k: v for k, v in params.items() if k != "rope_theta"}}
    local = {"rope_theta": hf.get("rope_local_base_freq", full["rope_theta"])}
  kind = full.get("rope_type", full.get("type", "default"))
  out = {"rope_theta": float(full["rope_theta"])}
  if kind == "linear":
    out.update(rope_scaling="linear", rope_factor=float(full["factor"]))
  elif kind != "default":
    raise ValueError(f"{hf['model_type']}: rope type {kind!r} is not supported (supported: default, linear)")
  if local.get("rope_type", "default") != "default":
    raise ValueError(f"{hf['model_type']}: sliding-layer rope type {local['rope_type']!r} is not supported")
  local_theta = float(local.get("rope_theta", full["rope_theta"]))
  out["rope_local_theta"] = 0.0 if local_theta == out["rope_theta"] and kind == "default" else local_theta
  return out


def model_config(hf: dict) -> dict:
  """The Gemma-specific `model.*` keys of a gemma2 / gemma3_text config.json."""
  global_every = _global_every(hf)
  caps = {key: float(hf.get(name) or 0.0) for key, name in (("attn_softcap", "attn_logit_softcapping"),
                                                            ("final_softcap", "final_logit_softcapping"))}
  return {**_rope(hf), **caps, "sliding_window": 0 if global_every < 0 else int(hf["sliding_window"]),
          "global_every": max(global_every, 0), "norm_plus_one": True, "embed_scale": True,
          "post_norms": True, "qk_norm": hf["model_type"] == "gemma3_text",
          "query_pre_attn_scalar": float(hf.get("query_pre_attn_scalar") or hf.get("head_dim"))}


def is_gemma(cfg: dict) -> bool:
  return bool(cfg.get("post_norms"))


def hf_config(cfg: dict) -> dict:
  """The Gemma part of a config.json for jaxllm keys with post_norms (gemma3_text when qk_norm, else gemma2)."""
  n, window, k = cfg["n_layers"], cfg.get("sliding_window") or 0, cfg.get("global_every") or 0
  kinds = ["sliding_attention" if window and (k == 0 or (i + 1) % k) else "full_attention" for i in range(n)]
  for key in ("norm_plus_one", "embed_scale"):
    if not cfg.get(key):
      raise ValueError(f"model.{key}=False with post_norms: no Gemma architecture computes that")
  scalar = cfg["query_pre_attn_scalar"]
  out = {"hidden_activation": "gelu_pytorch_tanh", "query_pre_attn_scalar": int(scalar) if scalar == int(scalar)
         else scalar,  # transformers' config field is an int
         "sliding_window": window or None, "layer_types": kinds, "rope_theta": cfg["rope_theta"],
         "attn_logit_softcapping": cfg.get("attn_softcap") or None,
         "final_logit_softcapping": cfg.get("final_softcap") or None}
  if cfg["qk_norm"]:
    out["rope_local_base_freq"] = cfg.get("rope_local_theta") or cfg["rope_theta"]
    if cfg.get("rope_scaling") == "linear":
      out["rope_scaling"] = {"rope_type": "linear", "factor": cfg["rope_factor"]}
  elif cfg.get("rope_local_theta") or cfg.get("rope_scaling"):
    raise ValueError("gemma2 has one RoPE for every layer: model.rope_local_theta / rope_scaling are not exportable")
  return out
