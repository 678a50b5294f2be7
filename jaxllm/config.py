"""Config validation: every inconsistency is one clear error naming the key, raised before anything runs.

Unknown keys and wrong types of command-line overrides are already refused by ml_collections (configs are
locked); this checks what types cannot: ranges, divisibility, and agreement between sections.
"""
from __future__ import annotations

import ml_collections

from jaxllm import sharding

STAGES = ("tokenizer", "pretrain", "sft", "reward", "dpo", "grpo", "eval", "chat", "export", "pipeline")
DTYPES = ("float32", "bfloat16", "float16")
REMAT = ("none", "full", "dots")


class ConfigError(ValueError):
  pass


def _require(ok: bool, key: str, message: str) -> None:
  if not ok:
    raise ConfigError(f"config.{key}: {message}")


def validate(config: ml_collections.ConfigDict, n_devices: int) -> None:
  c = config
  _require(c.stage in STAGES, "stage", f"{c.stage!r} is not one of {STAGES}")
  _require(isinstance(c.seed, int) and c.seed >= 0, "seed", f"must be a non-negative int, got {c.seed!r}")
  _require(c.steps >= 0, "steps", f"must be >= 0, got {c.steps}")

  m = c.model
  for key in ("d_model", "n_layers", "n_heads", "n_kv_heads", "mlp_dim", "max_seq_len"):
    _require(m[key] > 0, f"model.{key}", f"must be > 0, got {m[key]}")
  if m.head_dim == 0:
    _require(m.d_model % m.n_heads == 0, "model.d_model",
             f"d_model={m.d_model} is not divisible by n_heads={m.n_heads} (or set model.head_dim)")
  _require(m.head_dim % 2 == 0, "model.head_dim", f"RoPE needs an even head_dim, got {m.head_dim}")
  _require(m.n_heads % m.n_kv_heads == 0, "model.n_kv_heads",
           f"n_heads={m.n_heads} is not divisible by n_kv_heads={m.n_kv_heads}")
  _require(m.dtype in DTYPES, "model.dtype", f"{m.dtype!r} is not one of {DTYPES}")
  _require(m.param_dtype in DTYPES, "model.param_dtype", f"{m.param_dtype!r} is not one of {DTYPES}")
  _require(m.remat in REMAT, "model.remat", f"{m.remat!r} is not one of {REMAT}")
  _require(m.rope_scaling in ("", "llama3"), "model.rope_scaling", f"{m.rope_scaling!r} is not '' or 'llama3'")

  d = c.data
  _require(d.batch_size > 0, "data.batch_size", f"must be > 0, got {d.batch_size}")
  _require(d.seq_len > 0, "data.seq_len", f"must be > 0, got {d.seq_len}")
  _require(d.seq_len <= m.max_seq_len, "data.seq_len",
           f"{d.seq_len} exceeds model.max_seq_len={m.max_seq_len}")
  _require(d.on_bad_row in ("fail", "skip"), "data.on_bad_row", f"{d.on_bad_row!r} is not 'fail' or 'skip'")
  _require(0.0 <= d.eval_fraction < 1.0, "data.eval_fraction", f"must be in [0, 1), got {d.eval_fraction}")
  _require(d.on_long in ("truncate", "drop"), "data.on_long", f"{d.on_long!r} is not 'truncate' or 'drop'")
  _require(0.0 < d.prompt_fraction < 1.0, "data.prompt_fraction", f"must be in (0, 1), got {d.prompt_fraction}")
  _require(not d.streaming or bool(d.name), "data.streaming", "streams a named dataset (data.name), not the "
           "built-in world")
  _require(c.loss.chunk_size >= 0, "loss.chunk_size", f"must be >= 0 (0 = the whole vocabulary at once), got "
           f"{c.loss.chunk_size}")

  try:
    data, fsdp, tensor = sharding.mesh_shape(c.mesh, n_devices)
  except ValueError as e:
    raise ConfigError(str(e)) from None
  dp = data * fsdp
  _require(d.batch_size % dp == 0, "data.batch_size",
           f"{d.batch_size} is not divisible by the data-parallel size data*fsdp = {data}*{fsdp} = {dp}")
  k = c.optim.grad_accum
  _require(k >= 1, "optim.grad_accum", f"must be >= 1, got {k}")
  _require(d.batch_size % (k * dp) == 0, "optim.grad_accum",
           f"data.batch_size={d.batch_size} does not split into {k} micro-batches of a multiple of the "
           f"data-parallel size {dp}")
  _require(c.optim.mu_dtype in ("",) + DTYPES, "optim.mu_dtype", f"{c.optim.mu_dtype!r} is not one of {DTYPES}")
  for key in ("n_heads", "n_kv_heads", "mlp_dim"):
    _require(m[key] % tensor == 0, f"model.{key}", f"{m[key]} is not divisible by mesh.tensor={tensor}")
  if m.vocab_size:
    _require(m.vocab_size % tensor == 0, "model.vocab_size",
             f"{m.vocab_size} is not divisible by mesh.tensor={tensor}")
  _require(m.d_model % fsdp == 0, "model.d_model", f"{m.d_model} is not divisible by mesh.fsdp={fsdp}")

  _require(c.lora.rank >= 0, "lora.rank", f"must be >= 0, got {c.lora.rank}")
  _require(0.0 <= c.lora.dropout < 1.0, "lora.dropout", f"must be in [0, 1), got {c.lora.dropout}")
  if c.lora.rank:
    from jaxllm.lora import parse_targets
    try:
      parse_targets(c.lora.targets)
    except ValueError as e:
      raise ConfigError(str(e)) from None
  _require(c.checkpoint.every > 0, "checkpoint.every", f"must be > 0, got {c.checkpoint.every}")
  _require(c.checkpoint.keep >= 1, "checkpoint.keep", f"must be >= 1, got {c.checkpoint.keep}")
  _require(c.log.every > 0, "log.every", f"must be > 0, got {c.log.every}")
  _require(c.eval.every > 0, "eval.every", f"must be > 0, got {c.eval.every}")
  _require(c.optim.lr >= 0, "optim.lr", f"must be >= 0, got {c.optim.lr}")
