"""Shared fixtures. Tests run in-process on one CPU device; multi-device checks start subprocesses with
XLA_FLAGS=--xla_force_host_platform_device_count=N (it must be set before jax is imported)."""
import os
import socket
import tempfile

os.environ.setdefault("JAX_PLATFORMS", "cpu")
# One XLA compilation cache for the whole session, subprocesses included (they inherit the environment): many
# tests compile the same tiny train step, and on 2 cores compiling is a large share of the suite's time. A fresh
# folder each session, so every run compiles what it uses at least once; pytest-xdist's workers inherit it from
# the controller process, which loads this file first.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", tempfile.mkdtemp(prefix="jaxllm-xla-cache-"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.2")
# XLA's cheaper optimisation pipeline: the tests' models are tiny, so compiling, not running, is most of their
# time (tests/test_optimisations.py: 115 -> 71 s); the numbers checked are the same programs' up to float
# reassociation. Subprocesses the tests start (pipeline, sweeps, benchmark smokes) inherit it; real runs and
# benchmarks keep the full pipeline. JAX_DISABLE_MOST_OPTIMIZATIONS=0 in the environment tests that one.
os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")

import pathlib  # noqa: E402

import pytest  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]
# The project machines' real data (../shared/data/SOURCES.md); JAXLLM_SHARED_DATA points a git worktree at it.
SHARED_DATA = pathlib.Path(os.environ.get("JAXLLM_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture
def shared_data() -> pathlib.Path:
  if not (SHARED_DATA / "dataset_info.json").exists():
    pytest.skip("../shared/data is not present")
  return SHARED_DATA


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory) -> str:
  """A small tokenizer trained once on the built-in task world, shared by the tests that train models."""
  from configs import pretrain
  from jaxllm.data.corpus import train_tokenizer

  config = pretrain.get_config("tiny")
  path = str(tmp_path_factory.mktemp("tokenizer"))
  train_tokenizer(config).save(path)
  return path


@pytest.fixture(scope="session")
def initial_pretrain_workdir(tmp_path_factory, tokenizer_dir) -> str:
  """A tiny pretrain workdir holding its initial state as a checkpoint (as good a base as a trained one for
  tests that only need a loadable model, and no train step to compile)."""
  return save_initial_state("pretrain", tmp_path_factory.mktemp("initial_pretrain"), tokenizer_dir)


def save_initial_state(stage: str, workdir, tokenizer_dir: str, **overrides) -> str:
  """`workdir` holding a tiny `stage` run's initial train state as its one checkpoint (a loadable model without
  compiling a train step)."""
  from jaxllm import runtime, train
  from jaxllm.checkpoint import Checkpointer
  from jaxllm.state import make_optimizer

  env = runtime.prepare(tiny_config(stage, workdir, tokenizer_dir, **overrides))
  state, _ = train.init_state(env, train.Task(loss=stage, batches=None), make_optimizer(env.config.optim, 1))
  ckpt = Checkpointer(env.config.workdir, keep=1)
  ckpt.save(state, {})
  ckpt.close()
  return str(workdir)


def free_port() -> int:
  """A TCP port free on localhost now (the jax.distributed coordinator's)."""
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def tiny_config(module: str, workdir, tokenizer_dir: str, **overrides):
  """configs/<module>.py:tiny with a workdir, the shared tokenizer, one device and `overrides` (dotted keys)."""
  import importlib

  config = importlib.import_module(f"configs.{module}").get_config("tiny")
  config.workdir = str(workdir)
  config.tokenizer.path = tokenizer_dir
  config.mesh.data = 1
  config.log.tensorboard = False
  return set_dotted(config, overrides)


def set_dotted(config, overrides: dict):
  """config["a"]["b"] = v for every {"a.b": v}; returns config."""
  config.update_from_flattened_dict(overrides)
  return config


SERVE_CONTEXT = 256


def write_tiny_workdir(path: str, max_seq_len: int) -> str:
  """A tiny random jaxllm workdir as a finished run leaves it (config.json, tokenizer/, an orbax checkpoint),
  for the tests that load one: chat, serve."""
  import json

  import flax.linen as nn
  import jax
  import jax.numpy as jnp

  from configs import base
  from jaxllm.checkpoint import Checkpointer
  from jaxllm.model import ModelConfig, Transformer
  from jaxllm.state import TrainState
  from jaxllm.tokenizer import train_bpe

  texts = [f"user {i}: what is {i} plus {2 * i}? assistant: it is {3 * i}. hello, how are you today?"
           for i in range(300)]
  tokenizer = train_bpe(texts, vocab_size=320)
  tokenizer.save(os.path.join(path, "tokenizer"))
  config = base.get_config()
  config.workdir = path
  config.model.update(vocab_size=-(-tokenizer.n_vocab // 64) * 64, d_model=32, n_layers=2, n_heads=4,
                      n_kv_heads=2, head_dim=8, mlp_dim=64, max_seq_len=max_seq_len, init_std=0.3)
  with open(os.path.join(path, "config.json"), "w") as f:
    json.dump(config.to_dict(), f)
  model = Transformer(ModelConfig.from_config(config))
  weights = nn.meta.unbox(model.init(jax.random.PRNGKey(0), jnp.zeros((1, 4), jnp.int32))["params"])
  state = TrainState(step=jnp.array(5), params={"model": weights}, frozen={}, opt_state={},
                     rng=jax.random.PRNGKey(0), skipped=jnp.array(0))
  checkpointer = Checkpointer(path, keep=1)
  checkpointer.save(state, {})
  checkpointer.close()
  return path


@pytest.fixture(scope="session")
def serve_workdir(tmp_path_factory) -> str:
  """The server tests' workdir, whose context of SERVE_CONTEXT tokens lets a long reply take a while (the
  disconnect test)."""
  return write_tiny_workdir(str(tmp_path_factory.mktemp("serve_run")), SERVE_CONTEXT)


@pytest.fixture(scope="session")
def serve_server(serve_workdir):
  """configs/serve.py:tiny on serve_workdir, 32 slots, listening on a free port of 127.0.0.1 (a thread)."""
  from configs import serve
  from jaxllm.serve import server as server_lib

  config = serve.get_config("tiny")
  config.init_from = serve_workdir
  config.serve.update({"port": 0, "max_batch": 32, "max_queue": 64})
  server = server_lib.build(config).start()
  yield server
  server.stop()


@pytest.fixture(scope="session")
def tiny_pretrained(tmp_path_factory, tokenizer_dir) -> str:
  """A :tiny pretrain workdir after 5 steps: enough for sampled replies to hold digits and stop tokens (what the
  RL-stage tests reward), shared by them."""
  from jaxllm.stages import pretrain

  workdir = tmp_path_factory.mktemp("tiny_pretrained")
  pretrain.run(tiny_config("pretrain", workdir, tokenizer_dir, steps=5, **{"sample.num": 0}))
  return str(workdir)


def pytest_sessionfinish(session):
  """Free jax's caches and collect garbage before an xdist worker reports that it is done. pytest's own
  end-of-session gc passes (5 collections) come after that report, and over a worker's hundreds of compiled
  programs they took more than the 5 s execnet gives a worker before it sends one still busy a SIGINT (a
  KeyboardInterrupt warning after the last test). Cleared first, those passes took 2.2-2.5 s (clearing and the
  first collection 3.4-3.8 s, before the report)."""
  import gc
  import sys
  if "jax" in sys.modules:
    sys.modules["jax"].clear_caches()
  gc.collect()
