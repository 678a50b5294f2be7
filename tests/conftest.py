"""Shared fixtures. Tests run in-process on one CPU device; multi-device checks start subprocesses with
XLA_FLAGS=--xla_force_host_platform_device_count=N (it must be set before jax is imported)."""
import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import pathlib  # noqa: E402

import pytest  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture
def shared_data() -> pathlib.Path:
  if not (SHARED_DATA / "dataset_info.json").exists():
    pytest.skip("../shared/data is not present")
  return SHARED_DATA


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory) -> str:
  """A small tokenizer trained once on the built-in task world, shared by the tests that train models."""
  from configs import pretrain
  from jaxllm.stages import tokenizer as tokenizer_stage

  config = pretrain.get_config("tiny")
  path = str(tmp_path_factory.mktemp("tokenizer"))
  tokenizer_stage.build(config).save(path)
  return path


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
  for dotted, value in overrides.items():
    node = config
    *parents, leaf = dotted.split(".")
    for part in parents:
      node = node[part]
    node[leaf] = value
  return config
