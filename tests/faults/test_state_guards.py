"""A blown-up state is never trained on or saved: non-finite updates are skipped, a streak of them stops the run,
and validation refuses the values that cause them."""
import jax
import numpy as np
import pytest

from conftest import tiny_config
from jaxllm import runtime, train
from jaxllm.checkpoint import Checkpointer
from jaxllm.config import ConfigError, validate
from jaxllm.errors import TrainingStopped
from jaxllm.stages import pretrain


@pytest.mark.parametrize("key,value", [
    ("optim.lr", float("inf")), ("optim.lr", 1e39), ("optim.lr", float("nan")), ("optim.warmup_steps", -1),
    ("optim.decay_steps", -5), ("optim.b2", 1.5), ("optim.b1", 1.0), ("optim.grad_clip", -1.0),
    ("eval.batches", 0), ("train.max_skipped_steps", 0)])
def test_validation_refuses_values_that_blow_up_a_run(tmp_path, key, value):
  config = tiny_config("pretrain", tmp_path, "", **{key: value, "model.vocab_size": 512, "model.head_dim": 16})
  with pytest.raises(ConfigError, match=f"config.{key}"):
    validate(config, 1)


def test_a_non_finite_update_is_skipped_and_a_streak_stops_the_run_without_saving(tmp_path, tokenizer_dir):
  # lr = 1e39 is inf in float32: the gradient is finite, the updated parameters are not. Validation refuses it,
  # so it is set past validation here, as a bit-flipped optimizer state or an overflowing moment would be.
  config = tiny_config("pretrain", tmp_path, tokenizer_dir, steps=8, **{
      "log.every": 1, "checkpoint.every": 2, "train.max_skipped_steps": 3, "sample.num": 0, "eval.every": 100})
  env = runtime.prepare(config)
  train_docs, _ = pretrain.text.documents(env.config)
  flat = pretrain.token_stream(env, train_docs)
  initial, _ = train.init_state(env, train.Task(loss="pretrain", batches=None),
                                train.make_optimizer(env.config.optim, 8))
  initial_params = jax.device_get(initial.params)
  with env.config.unlocked():
    env.config.optim.lr = 1e39
  task = train.Task(loss="pretrain", batches=pretrain.pipelines.packed_lm_batches(
      flat, env.config.data.seq_len, env.config.data.batch_size, env.config.seed, env.tokenizer.eot_id))
  with pytest.raises(TrainingStopped, match=r"3 steps in a row skipped.*max_skipped_steps=3\); stopped without saving"):
    train.fit(env, task)
  ckpt = Checkpointer(str(tmp_path), keep=2)
  assert ckpt.manager.all_steps() == [2]  # the stop came before the step-4 save
  restored, _ = ckpt.restore(initial)
  ckpt.close()
  assert int(restored.skipped) == 2
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(restored.params), initial_params)
