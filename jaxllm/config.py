"""Config validation, the one place: every inconsistency is one clear error naming the key, raised before
anything runs (`stages.run` calls `validate` first, `runtime.prepare` again once init_from has filled model.*).

Unknown keys and wrong types of command-line overrides are already refused by ml_collections (configs are
locked); this checks what types cannot: ranges, divisibility, and agreement between sections. A training
stage's own section is checked by its objective's `validate` (jaxllm/losses/), the other stages' here.
"""
from __future__ import annotations

import os

import ml_collections
import numpy as np

from jaxllm import losses, sampling, sharding
from jaxllm.errors import ConfigError, require

TOOL_STAGES = ("tokenizer", "eval", "chat", "export", "pipeline", "serve")  # stages that train no objective
DTYPES = ("float32", "bfloat16", "float16")
REMAT = ("none", "full", "dots")
ATTENTION_IMPLS = ("xla", "cudnn")
_F32_MAX = float(np.finfo(np.float32).max)
ROPE_SCALINGS = ("", "llama3", "linear")
MLP_ACTS = ("silu", "gelu_tanh")
EVAL_TASKS = ("perplexity", "accuracy", "classification", "pair_accuracy")
LM_EVAL_PREFIX = "lm_eval:"  # eval.task = lm_eval:<task>[,<task>...]: lm-evaluation-harness tasks (lm_eval_run.py)

__all__ = ["ConfigError", "DTYPES", "EVAL_TASKS", "LM_EVAL_PREFIX", "TOOL_STAGES", "lm_eval_task_names", "stages",
           "validate"]


def stages() -> tuple[str, ...]:
  """Every valid config.stage: the tool stages and every registered objective."""
  return TOOL_STAGES + tuple(losses.names())


def _needs_init_from(config: ml_collections.ConfigDict) -> None:
  require(bool(config.init_from), "init_from",
          f"is empty; the {config.stage} stage needs a jaxllm workdir or a Hugging Face model folder")


def _eval(config: ml_collections.ConfigDict) -> None:
  _needs_init_from(config)
  task = config.eval.task
  unanswerable = config.eval.get("unanswerable", 0)
  require(unanswerable >= 0, "eval.unanswerable", f"must be >= 0, got {unanswerable}")
  if task.startswith(LM_EVAL_PREFIX):
    require(bool(lm_eval_task_names(task)), "eval.task",
            f"{task!r} names no lm_eval task (expected lm_eval:<task>[,<task>...])")
    include = config.eval.get("lm_eval_include", "")
    require(not include or os.path.isdir(include), "eval.lm_eval_include",
            f"{include!r} is not a folder of lm_eval task YAML files")
    return
  require(task in EVAL_TASKS, "eval.task", f"{task!r} is not one of {EVAL_TASKS} or {LM_EVAL_PREFIX}<tasks>")


def lm_eval_task_names(task: str) -> list[str]:
  """The lm-evaluation-harness task names of an `eval.task` of the form lm_eval:<task>[,<task>...]."""
  return [t.strip() for t in task[len(LM_EVAL_PREFIX):].split(",") if t.strip()]


def _export(config: ml_collections.ConfigDict) -> None:
  e = config.export
  _needs_init_from(config)
  require(bool(e.path), "export.path", "is empty; pass --config.export.path=<folder>")
  require(e.dtype in DTYPES, "export.dtype", f"{e.dtype!r} is not one of {DTYPES}")
  require(e.max_shard_gb > 0, "export.max_shard_gb", f"must be > 0, got {e.max_shard_gb}")


def _pipeline(config: ml_collections.ConfigDict, n_devices: int | None) -> None:
  """The pipeline's own keys and every stage sub-config, each validated as the run it will be."""
  subs = [k for k, v in config.items() if isinstance(v, ml_collections.ConfigDict) and "stage" in v]
  wanted = [s.strip() for s in config.pipeline.stages.split(",") if s.strip()]
  unknown = sorted(set(wanted) - set(subs))
  require(not unknown, "pipeline.stages", f"unknown stage(s) {unknown}; known: {subs}")
  for key in subs:
    sub = ml_collections.ConfigDict(config[key].to_dict())
    sub.workdir = sub.workdir or "/unused"  # the pipeline fills workdir and init_from from the stage before
    sub.init_from = sub.init_from or "/unused"
    try:
      validate(sub, n_devices)
    except ConfigError as e:
      raise ConfigError(str(e).replace("config.", f"config.{key}.", 1)) from None


_TOOL_CHECKS = {"eval": _eval, "export": _export, "chat": _needs_init_from, "serve": _needs_init_from}


def validate(config: ml_collections.ConfigDict, n_devices: int | None = None) -> None:
  """Raise ConfigError naming the first bad key. n_devices=None skips the checks against the device count (a
  process must not touch jax's devices before joining a multi-process job)."""
  c = config
  require(c.stage in stages(), "stage", f"{c.stage!r} is not one of {stages()}")
  if c.stage == "pipeline":
    _pipeline(c, n_devices)
    return
  objective = losses.find(c.stage)
  if objective is not None and objective.section:
    require(objective.section in c, objective.section,
            f"missing: objective {c.stage!r} reads this section (configs/{c.stage}.py defines it)")
  require(isinstance(c.seed, int) and c.seed >= 0, "seed", f"must be a non-negative int, got {c.seed!r}")
  require(c.steps >= 0, "steps", f"must be >= 0, got {c.steps}")

  m = c.model
  for key in ("d_model", "n_layers", "n_heads", "n_kv_heads", "mlp_dim", "max_seq_len"):
    require(m[key] > 0, f"model.{key}", f"must be > 0, got {m[key]}")
  if m.head_dim == 0:
    require(m.d_model % m.n_heads == 0, "model.d_model",
            f"d_model={m.d_model} is not divisible by n_heads={m.n_heads} (or set model.head_dim)")
  require(m.head_dim % 2 == 0, "model.head_dim", f"RoPE needs an even head_dim, got {m.head_dim}")
  require(m.n_heads % m.n_kv_heads == 0, "model.n_kv_heads",
          f"n_heads={m.n_heads} is not divisible by n_kv_heads={m.n_kv_heads}")
  require(m.dtype in DTYPES, "model.dtype", f"{m.dtype!r} is not one of {DTYPES}")
  require(m.param_dtype in DTYPES, "model.param_dtype", f"{m.param_dtype!r} is not one of {DTYPES}")
  require(m.remat in REMAT, "model.remat", f"{m.remat!r} is not one of {REMAT}")
  require(m.attention_impl in ATTENTION_IMPLS, "model.attention_impl",
          f"{m.attention_impl!r} is not one of {ATTENTION_IMPLS}")
  if m.attention_impl == "cudnn":  # what cuDNN's flash kernel takes (jaxllm/fused_attention.py)
    require(m.dtype in ("bfloat16", "float16"), "model.attention_impl",
            f"cudnn runs in bfloat16 / float16 only; set model.dtype=bfloat16 (got {m.dtype!r})")
    require(m.attn_softcap == 0, "model.attention_impl",
            f"cudnn cannot soft-cap scores (model.attn_softcap={m.attn_softcap}); use xla")
    require(m.head_dim == 0 or (m.head_dim % 8 == 0 and m.head_dim <= 256), "model.attention_impl",
            f"cudnn needs head_dim a multiple of 8 and <= 256 (128 before Hopper), got {m.head_dim}")
  require(m.rope_scaling in ROPE_SCALINGS, "model.rope_scaling", f"{m.rope_scaling!r} is not one of {ROPE_SCALINGS}")
  require(m.sliding_window >= 0, "model.sliding_window", f"must be >= 0 (0 = full attention), got {m.sliding_window}")
  require(m.global_every >= 0, "model.global_every", f"must be >= 0, got {m.global_every}")
  require(m.global_every == 0 or m.sliding_window > 0, "model.global_every",
          f"{m.global_every} needs model.sliding_window > 0 (local layers between the global ones)")
  require(m.mlp_act in MLP_ACTS, "model.mlp_act", f"{m.mlp_act!r} is not one of {MLP_ACTS}")
  for key in ("rope_local_theta", "attn_softcap", "final_softcap", "query_pre_attn_scalar"):
    require(m[key] >= 0, f"model.{key}", f"must be >= 0 (0 = off), got {m[key]}")

  d = c.data
  require(d.batch_size > 0, "data.batch_size", f"must be > 0, got {d.batch_size}")
  require(d.seq_len > 0, "data.seq_len", f"must be > 0, got {d.seq_len}")
  require(d.seq_len <= m.max_seq_len, "data.seq_len",
          f"{d.seq_len} exceeds model.max_seq_len={m.max_seq_len}")
  require(d.on_bad_row in ("fail", "skip"), "data.on_bad_row", f"{d.on_bad_row!r} is not 'fail' or 'skip'")
  require(0.0 <= d.eval_fraction < 1.0, "data.eval_fraction", f"must be in [0, 1), got {d.eval_fraction}")
  require(d.on_long in ("truncate", "drop"), "data.on_long", f"{d.on_long!r} is not 'truncate' or 'drop'")
  require(0.0 < d.prompt_fraction < 1.0, "data.prompt_fraction", f"must be in (0, 1), got {d.prompt_fraction}")
  require(not d.streaming or bool(d.name), "data.streaming", "streams a named dataset (data.name), not the "
          "built-in world")
  require(c.loss.chunk_size >= 0, "loss.chunk_size", f"must be >= 0 (0 = the whole vocabulary at once), got "
          f"{c.loss.chunk_size}")
  require(not (c.loss.chunk_size and m.final_softcap), "loss.chunk_size",
          f"vocabulary slices do not take soft-capped logits (model.final_softcap={m.final_softcap}); set 0")

  k = c.optim.grad_accum
  require(k >= 1, "optim.grad_accum", f"must be >= 1, got {k}")
  require(c.optim.mu_dtype in ("",) + DTYPES, "optim.mu_dtype", f"{c.optim.mu_dtype!r} is not one of {DTYPES}")
  if n_devices is not None:
    _mesh(c, n_devices)

  require(c.lora.rank >= 0, "lora.rank", f"must be >= 0, got {c.lora.rank}")
  require(0.0 <= c.lora.dropout < 1.0, "lora.dropout", f"must be in [0, 1), got {c.lora.dropout}")
  if c.lora.rank:
    from jaxllm.lora import parse_targets
    try:
      parse_targets(c.lora.targets)
    except ValueError as e:
      raise ConfigError(str(e)) from None
  require(c.lora.quantize in ("none", "int8", "nf4"), "lora.quantize",
          f"{c.lora.quantize!r} is not one of none, int8, nf4")
  require(c.lora.quantize == "none" or c.lora.rank > 0, "lora.quantize",
          f"{c.lora.quantize!r} needs LoRA (lora.rank > 0): only a frozen base is stored quantized")
  require(c.lora.dora is False or c.lora.rank > 0, "lora.dora", "needs LoRA (lora.rank > 0)")
  require(c.lora.quant_block > 0, "lora.quant_block", f"must be > 0, got {c.lora.quant_block}")
  require(not (c.lora.quantize == "nf4" and c.lora.quantize_embeddings and c.loss.chunk_size % 2), "loss.chunk_size",
          f"must be even with an NF4-quantized output head (two vocabulary columns share a byte), got "
          f"{c.loss.chunk_size}")
  require(c.lora.plus_ratio > 0, "lora.plus_ratio", f"must be > 0, got {c.lora.plus_ratio}")
  require(c.optim.name in ("adamw", "galore"), "optim.name", f"{c.optim.name!r} is not one of adamw, galore")
  require(c.optim.name != "galore" or c.lora.rank == 0, "optim.name",
          "galore trains full parameters; set lora.rank=0 (LoRA's adapters are already low-rank)")
  require(c.optim.galore_rank >= 1, "optim.galore_rank", f"must be >= 1, got {c.optim.galore_rank}")
  require(c.optim.galore_update_every >= 1, "optim.galore_update_every",
          f"must be >= 1, got {c.optim.galore_update_every}")
  require(c.checkpoint.every > 0, "checkpoint.every", f"must be > 0, got {c.checkpoint.every}")
  require(c.checkpoint.keep >= 1, "checkpoint.keep", f"must be >= 1, got {c.checkpoint.keep}")
  require(c.log.every > 0, "log.every", f"must be > 0, got {c.log.every}")
  require(c.eval.every > 0, "eval.every", f"must be > 0, got {c.eval.every}")
  _optim(c.optim)
  require(c.eval.batches >= 1, "eval.batches", f"must be >= 1, got {c.eval.batches}")
  require(c.train.max_skipped_steps >= 1, "train.max_skipped_steps",
          f"must be >= 1, got {c.train.max_skipped_steps}")
  _sampling(c)
  _tools(c)
  if objective is not None and objective.validate is not None:
    objective.validate(c)
  if c.stage in _TOOL_CHECKS:
    _TOOL_CHECKS[c.stage](c)


def _sampling(c: ml_collections.ConfigDict) -> None:
  s = c.sampling
  require(0 < s.max_new_tokens < c.model.max_seq_len, "sampling.max_new_tokens",
          f"must be in [1, model.max_seq_len={c.model.max_seq_len}), got {s.max_new_tokens}")
  try:
    sampling.params_from(s)
  except ValueError as e:
    raise ConfigError(f"config.sampling.{e}") from None


def _tools(c: ml_collections.ConfigDict) -> None:
  from jaxllm import tools  # the registry knows the tool names
  names = tools.parse_names(c.tools.names)
  unknown = [n for n in names if n not in tools.BUILDERS]
  require(not unknown, "tools.names", f"unknown tool(s) {unknown}; known: {', '.join(tools.BUILDERS)}")
  require(c.tools.max_calls >= 1, "tools.max_calls", f"must be >= 1, got {c.tools.max_calls}")
  require(not c.tools.table or os.path.isfile(c.tools.table), "tools.table", f"no such file {c.tools.table!r}")
  demos = tools.parse_names(c.data.tools)
  require(set(demos) <= {"calculator"}, "data.tools",
          f"the built-in world demonstrates the calculator only, got {demos}")
  require(set(demos) <= set(names), "data.tools",
          f"demonstrations call {demos}, so tools.names must include them (got {c.tools.names!r}): else the "
          f"model's calls are never answered")
  require(0.0 <= c.data.unanswerable <= 1.0, "data.unanswerable", f"must be in [0, 1], got {c.data.unanswerable}")


def _optim(o: ml_collections.ConfigDict) -> None:
  finite = lambda v: abs(v) <= _F32_MAX  # the step computes in float32: 1e39 is inf there (and NaN fails this)
  require(finite(o.lr) and o.lr >= 0, "optim.lr", f"must be a finite number >= 0, got {o.lr}")
  require(o.warmup_steps >= 0, "optim.warmup_steps", f"must be >= 0, got {o.warmup_steps}")
  require(o.decay_steps >= 0, "optim.decay_steps", f"must be >= 0 (0 = config.steps), got {o.decay_steps}")
  require(finite(o.min_lr_ratio) and 0.0 <= o.min_lr_ratio <= 1.0, "optim.min_lr_ratio",
          f"must be in [0, 1], got {o.min_lr_ratio}")
  require(finite(o.b1) and 0.0 <= o.b1 < 1.0, "optim.b1", f"must be in [0, 1), got {o.b1}")
  require(finite(o.b2) and 0.0 <= o.b2 < 1.0, "optim.b2", f"must be in [0, 1), got {o.b2}")
  require(finite(o.eps) and o.eps > 0, "optim.eps", f"must be a finite number > 0, got {o.eps}")
  require(finite(o.weight_decay) and o.weight_decay >= 0, "optim.weight_decay",
          f"must be a finite number >= 0, got {o.weight_decay}")
  require(finite(o.grad_clip) and o.grad_clip >= 0, "optim.grad_clip",
          f"must be a finite number >= 0 (0 = off), got {o.grad_clip}")


def _mesh(c: ml_collections.ConfigDict, n_devices: int) -> None:
  """Sizes that must divide over the mesh of n_devices."""
  m, d, k = c.model, c.data, c.optim.grad_accum
  try:
    data, fsdp, tensor = sharding.mesh_shape(c.mesh, n_devices)
  except ValueError as e:
    raise ConfigError(str(e)) from None
  dp = data * fsdp
  require(d.batch_size % dp == 0, "data.batch_size",
          f"{d.batch_size} is not divisible by the data-parallel size data*fsdp = {data}*{fsdp} = {dp}")
  require(d.batch_size % (k * dp) == 0, "optim.grad_accum",
          f"data.batch_size={d.batch_size} does not split into {k} micro-batches of a multiple of the "
          f"data-parallel size {dp}")
  for key in ("n_heads", "n_kv_heads", "mlp_dim"):
    require(m[key] % tensor == 0, f"model.{key}", f"{m[key]} is not divisible by mesh.tensor={tensor}")
  if m.vocab_size:
    require(m.vocab_size % tensor == 0, "model.vocab_size",
            f"{m.vocab_size} is not divisible by mesh.tensor={tensor}")
  require(m.d_model % fsdp == 0, "model.d_model", f"{m.d_model} is not divisible by mesh.fsdp={fsdp}")
