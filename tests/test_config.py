"""Config files load, and every inconsistency is refused before anything runs, naming the key."""
import importlib
import pathlib
import subprocess
import sys

import pytest

from conftest import REPO, set_dotted
from jaxllm.config import ConfigError, validate

CONFIG_FILES = sorted(p.stem for p in (REPO / "configs").glob("*.py") if p.stem not in ("__init__", "base"))


# What a command line gives these stages; the config files leave them empty on purpose.
RUN_INPUTS = {"init_from": "/tmp/unused-init", "export.path": "/tmp/unused-export"}


@pytest.mark.parametrize("name", CONFIG_FILES)
@pytest.mark.parametrize("arg", [None, "tiny"])
def test_every_config_file_loads_and_validates(name, arg):
  config = importlib.import_module(f"configs.{name}").get_config(arg)
  assert config.is_locked, f"configs/{name}.py must lock its config so typos fail"
  config.workdir = "/tmp/unused"
  if config.stage in ("eval", "chat", "export", "serve"):
    set_dotted(config, {k: v for k, v in RUN_INPUTS.items() if k.split(".")[0] in config})
  validate(config, 1)


def test_stage_inputs_are_required_before_anything_runs():
  config = importlib.import_module("configs.export").get_config()
  with pytest.raises(ConfigError, match="config.init_from: is empty"):
    validate(config)
  config.init_from = "/tmp/unused-init"
  with pytest.raises(ConfigError, match=r"config.export.path: is empty"):
    validate(config)


def _base(**changes):
  config = importlib.import_module("configs.pretrain").get_config()
  config.workdir = "/tmp/unused"
  return set_dotted(config, changes)


@pytest.mark.parametrize("changes, n_devices, key", [
    ({"model.d_model": 100, "model.n_heads": 8}, 1, "model.d_model"),
    ({"model.n_heads": 8, "model.n_kv_heads": 3}, 1, "model.n_kv_heads"),
    ({"mesh.data": 2}, 1, "mesh"),
    ({"mesh.data": 2, "mesh.fsdp": 2, "mesh.tensor": 1}, 8, "mesh"),
    ({"mesh.data": -1, "mesh.fsdp": -1}, 8, "mesh"),
    ({"mesh.data": 8, "data.batch_size": 12}, 8, "data.batch_size"),
    ({"mesh.data": 1, "mesh.tensor": 8, "model.n_kv_heads": 4}, 8, "model.n_kv_heads"),
    ({"data.seq_len": 1024}, 1, "data.seq_len"),
    ({"model.dtype": "float8"}, 1, "model.dtype"),
    ({"data.on_bad_row": "ignore"}, 1, "data.on_bad_row"),
    ({"stage": "finetune"}, 1, "stage"),
    ({"lora.rank": 4, "lora.targets": "q,qq"}, 1, "lora.targets"),
    ({"loss.chunk_size": -1}, 1, "loss.chunk_size"),
    ({"model.sliding_window": -4}, 1, "model.sliding_window"),
    ({"model.global_every": 2}, 1, "model.global_every"),  # needs a window
    ({"model.mlp_act": "relu"}, 1, "model.mlp_act"),
    ({"model.rope_scaling": "yarn"}, 1, "model.rope_scaling"),
    ({"model.final_softcap": 30.0, "loss.chunk_size": 64}, 1, "loss.chunk_size"),
    ({"stage": "dpo"}, 1, "dpo"),  # the objective's section is missing from a pretrain config
])
def test_inconsistent_values_name_the_key(changes, n_devices, key):
  with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
    validate(_base(**changes), n_devices)


def test_valid_multi_device_mesh_passes():
  validate(_base(**{"mesh.data": 2, "mesh.fsdp": 2, "mesh.tensor": 2}), 8)
  validate(_base(**{"mesh.data": -1, "mesh.tensor": 2}), 8)


@pytest.mark.slow
@pytest.mark.parametrize("config, override, error", [
    ("pretrain", "--config.model.d_modle=64",
     """error: --config.model.d_modle: the config has no key 'd_modle' (Did you mean "d_model" instead of "d_modle"?)"""),
    ("pretrain", "--config.model.d_model=abc", "error: flag --config.model.d_model=abc: invalid literal for int()"),
    ("pipeline", "--config.model.n_layers=6", "error: --config.model.n_layers: the config has no key 'model'"),
])
def test_command_line_typos_and_types_fail_with_one_line_naming_the_key(tmp_path, config, override, error):
  proc = subprocess.run([sys.executable, "run.py", f"--config=configs/{config}.py", override,
                         f"--config.workdir={tmp_path}"], cwd=REPO, capture_output=True, text=True, timeout=120)
  assert proc.returncode != 0
  assert proc.stderr.strip().startswith(error) and "Traceback" not in proc.stderr, proc.stderr
  assert not (pathlib.Path(tmp_path) / "config.json").exists()


def test_the_pipeline_has_no_top_level_keys_it_would_ignore():
  config = importlib.import_module("configs.pipeline").get_config("tiny")
  stages = {k for k, v in config.items() if hasattr(v, "items") and "stage" in v}
  # log holds only the log.wandb* keys, which stage_config gives every stage (tests/test_wandb.py)
  assert set(config) - stages == {"stage", "seed", "workdir", "pipeline", "log"}
  assert all(k.startswith("wandb") for k in config.log)
  with pytest.raises((AttributeError, KeyError), match="model"):
    config.model.n_layers = 6  # what --config.model.n_layers=6 does: there is no top-level model to set


def test_model_keys_are_modelconfigs_fields():
  from jaxllm.model import ARCHITECTURE_KEYS, MODEL_KEYS, ModelConfig
  config = importlib.import_module("configs.base").get_config()
  assert tuple(sorted(config.model)) == tuple(sorted(MODEL_KEYS))
  assert set(ARCHITECTURE_KEYS) < set(MODEL_KEYS) and "dtype" not in ARCHITECTURE_KEYS
  assert ModelConfig.from_config(config).head_dim == config.model.d_model // config.model.n_heads
