"""What every stage resolves once before it runs: processes, mesh, tokenizer, model config, init_from weights.

`prepare(config)` returns an `Env`; stages build their data and `Task` from it and hand both to `train.fit`.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
from typing import Any, Callable

import flax.linen as nn
import jax
import ml_collections

from jaxllm import hf, resume, sharding
from jaxllm.config import validate
from jaxllm.errors import require
from jaxllm.data.corpus import train_tokenizer
from jaxllm.checkpoint import Pretrained, load_pretrained, read_run_config, resolve_workdir
from jaxllm.model import ARCHITECTURE_KEYS, ModelConfig, Transformer
from jaxllm.tokenizer import Tokenizer


@dataclasses.dataclass
class Env:
  config: ml_collections.ConfigDict
  mesh: jax.sharding.Mesh
  tokenizer: Tokenizer
  model_cfg: ModelConfig
  model: Transformer  # deterministic (eval, sampling)
  train_model: Transformer  # with LoRA dropout active when configured
  pretrained: Pretrained | None
  _jits: dict = dataclasses.field(default_factory=dict)

  @property
  def is_main(self) -> bool:
    return jax.process_index() == 0

  @property
  def process_count(self) -> int:
    return jax.process_count()

  def log(self, message: str) -> None:
    if self.is_main:
      print(message, flush=True)

  def mesh_context(self) -> contextlib.ExitStack:
    stack = contextlib.ExitStack()
    stack.enter_context(jax.set_mesh(self.mesh))
    stack.enter_context(nn.logical_axis_rules(sharding.LOGICAL_RULES))
    return stack

  def jit_cache(self, key: Any, make: Callable[[], Callable]) -> Callable:
    if key not in self._jits:
      self._jits[key] = make()
    return self._jits[key]

  def abstract_weights(self):
    tokens = jax.ShapeDtypeStruct((1, 8), jax.numpy.int32)
    return jax.eval_shape(lambda: self.model.init(jax.random.PRNGKey(0), tokens)["params"])

  def weight_shardings(self):
    return sharding.logical_shardings(self.abstract_weights(), self.mesh)

  def base_weights(self, rng: jax.Array) -> dict:
    """init_from's weights (already placed by `prepare`), or a random init computed directly in its shardings."""
    shardings = self.weight_shardings()
    if self.pretrained is not None:
      return self.pretrained.weights
    init = lambda key: nn.meta.unbox(self.model.init(key, jax.numpy.zeros((1, 8), jax.numpy.int32))["params"])
    with self.mesh_context():
      return jax.jit(init, out_shardings=shardings)(rng)


def default_workdir(config: ml_collections.ConfigDict) -> str:
  return config.workdir or os.path.join("runs", config.stage)


def init_distributed(config: ml_collections.ConfigDict) -> None:
  """Join a multi-process job when one is configured (flags, or SLURM/TPU/Kubernetes auto-detection by jax)."""
  d = config.dist
  if jax.distributed.is_initialized():
    return
  if d.auto:
    jax.distributed.initialize()
  elif d.num_processes > 1 or d.coordinator:
    jax.distributed.initialize(coordinator_address=d.coordinator or None, num_processes=d.num_processes,
                               process_id=d.process_id)


def resolve_tokenizer(config: ml_collections.ConfigDict, init_workdir: str | None) -> Tokenizer:
  if config.tokenizer.path:
    return Tokenizer.load(config.tokenizer.path)
  if init_workdir is not None and hf.is_hf_folder(init_workdir):
    return hf.load_tokenizer(init_workdir)
  if init_workdir is not None:
    return Tokenizer.load(os.path.join(init_workdir, "tokenizer"))
  return train_tokenizer(config)


def resolve_model(config: ml_collections.ConfigDict, tokenizer: Tokenizer,
                  init_config: ml_collections.ConfigDict | None) -> None:
  """Fill model.vocab_size / head_dim, or copy the architecture of init_from's run; in place."""
  m = config.model
  if init_config is not None:
    for key in ARCHITECTURE_KEYS:
      if key in init_config.model:  # older runs / HF configs may lack optional keys: keep the defaults
        m[key] = init_config.model[key]
  if m.head_dim == 0:
    m.head_dim = m.d_model // m.n_heads
  if m.vocab_size == 0:
    m.vocab_size = -(-tokenizer.n_vocab // 64) * 64
  if m.vocab_size < tokenizer.n_vocab:
    raise ValueError(f"config.model.vocab_size={m.vocab_size} is smaller than the tokenizer's "
                     f"{tokenizer.n_vocab} tokens")


def check_backend(config: ml_collections.ConfigDict) -> None:
  """A cuDNN kernel asked for where there is no GPU is refused, not quietly swapped for XLA's: a run (or a
  benchmark) configured for cudnn must not report XLA's numbers as cuDNN's."""
  backend = jax.default_backend()
  require(config.model.attention_impl != "cudnn" or backend == "gpu", "model.attention_impl",
          f"cudnn needs a GPU (the backend here is {backend}; pip install -e '.[cuda]' on a CUDA machine), or use xla")


def prepare(config: ml_collections.ConfigDict, load_weights: bool = True) -> Env:
  """Resolve everything a stage needs; writes workdir/config.json and workdir/tokenizer/ (unless resuming)."""
  init_distributed(config)
  config = ml_collections.ConfigDict(config.to_dict())  # a private, unlocked copy we may fill in
  config.workdir = default_workdir(config)
  init_config, init_workdir = None, None
  if config.init_from and hf.is_hf_folder(config.init_from):
    init_workdir = os.path.abspath(config.init_from)
    init_config = ml_collections.ConfigDict({"model": hf.model_config_from_hf(hf.read_hf_config(init_workdir))})
  elif config.init_from:
    init_workdir, _ = resolve_workdir(config.init_from)
    init_config = read_run_config(init_workdir)
  # A resume uses the workdir's own tokenizer (the one its checkpoints were trained with) and its stored config
  # must agree with this one; a fresh start writes both, once.
  resuming = resume.has_checkpoints(config.workdir)
  stored = resume.read_stored_config(config.workdir) if resuming else None
  tokenizer = resume.load_tokenizer(config.workdir) if resuming else resolve_tokenizer(config, init_workdir)
  resolve_model(config, tokenizer, init_config)
  validate(config, jax.device_count())
  check_backend(config)
  mesh = sharding.make_mesh(config.mesh)
  log = lambda message: print(message, flush=True) if jax.process_index() == 0 else None
  if resuming:
    resume.check(stored, config, log)
  elif jax.process_index() == 0:
    os.makedirs(config.workdir, exist_ok=True)
    resume.write_config(config.workdir, config)
    resume.write_tokenizer(config.workdir, tokenizer)
  model_cfg = ModelConfig.from_config(config)
  config.lock()
  env = Env(config=config, mesh=mesh, tokenizer=tokenizer, model_cfg=model_cfg,
            model=Transformer(model_cfg, deterministic=True),
            train_model=Transformer(model_cfg, deterministic=config.lora.dropout == 0.0), pretrained=None)
  if config.init_from and load_weights:  # read straight into the shardings: one host copy at most
    convert = None
    if config.lora.rank and config.lora.quantize != "none":  # QLoRA: quantize the base as it is read
      from jaxllm import lora as lora_lib
      convert = lora_lib.tensor_quantizer(config.lora, env.weight_shardings(), mesh)
    env.pretrained = load_pretrained(config.init_from, env.weight_shardings(), config.model.param_dtype, convert)
  return env
