"""Every registered objective trains through the real loop: a few steps of train.fit on the :tiny model with
its own kind of batch, finite losses, the state its registry entry asks for, and one trace of the train step
(a retrace would recompile every step: a shape or a Python value changing between steps)."""
import jax
import numpy as np
import pytest

from conftest import tiny_config
from jaxllm import losses, runtime, train
from jaxllm.data import labelled, pipelines, synthetic, text
from jaxllm.data import sft as sft_data

STEPS = 2  # a retrace shows from the second step on


class Fixed:
  """A BatchSource repeating one batch (grpo's rollouts would need the sampler compiled too)."""

  def __init__(self, batch):
    self.batch = batch

  def next(self, state):
    return self.batch

  def get_state(self):
    return {}

  def set_state(self, state):
    pass


def packed_text(env):
  c = env.config
  docs, _ = text.documents(c)
  flat = pipelines.concat_documents(env.tokenizer.encoding.encode_ordinary_batch(docs), env.tokenizer.eot_id)
  return pipelines.packed_lm_batches(flat, c.data.seq_len, c.data.batch_size, c.seed, env.tokenizer.eot_id)


def chat(env):
  c = env.config
  chats = [{"messages": m, "tools": ""} for m in synthetic.sft_examples(c.seed, "train", c.data.train_examples)]
  examples, stats = sft_data.encode(env.tokenizer, chats, c.data.seq_len)
  return sft_data.train_batches(examples, stats, c.data.seq_len, c.data.batch_size, c.seed, env.tokenizer.pad_id)


def preference_rows(env):
  return losses.get(env.config.stage).batches(env.config, env.tokenizer)[0]


def rollout_rows(env):
  """Plain rows as a rollout gives them: prompt then completion, the completion's tokens in loss_mask."""
  c, rng = env.config, np.random.default_rng(0)
  b, l, new = c.data.batch_size, c.data.seq_len, c.sampling.max_new_tokens
  tokens = rng.integers(3, env.tokenizer.n_vocab, (b, l)).astype(np.int32)
  mask = np.zeros((b, l), np.float32)
  mask[:, l - new - 1:l - 1] = 1.0
  return Fixed({"tokens": tokens, "targets": np.roll(tokens, -1, axis=1), "loss_mask": mask,
                "positions": np.tile(np.arange(l, dtype=np.int32), (b, 1)), "segment_ids": np.ones((b, l), np.int32),
                "advantages": rng.normal(size=b).astype(np.float32),
                "ref_logprobs": np.full((b, l), -6.0, np.float32),
                "sampler_logprobs": np.full((b, l), -6.0, np.float32)})


def ppo_rows(env):
  """A rollout's plain rows with what PPO adds: per-token advantages, returns, old values and log-probs."""
  batch = dict(rollout_rows(env).batch)
  rng = np.random.default_rng(1)
  for key in ("advantages", "returns", "old_values"):
    batch[key] = rng.normal(size=batch["loss_mask"].shape).astype(np.float32) * batch["loss_mask"]
  batch["old_logprobs"] = batch["ref_logprobs"]
  return Fixed(batch)


def labelled_rows(env):
  c = env.config
  rows = labelled.built_in(c.seed, "train", c.data.train_examples)
  ids = np.asarray([labelled.BUILT_IN_LABELS.index(label) for label in rows.labels], np.int32)
  encoded = labelled.encode(env.tokenizer, rows, ids, c.data.seq_len, "truncate")
  return labelled.train_batches(encoded, c.data.batch_size, c.seed, np.ones(2, np.float32))


# What a stage fills in from its data before training (here the built-in world's two classes)
RESOLVED_BY_THE_STAGE = {"classify": {"classify.labels": ",".join(labelled.BUILT_IN_LABELS), "classify.num_classes": 2}}
BATCHES = {"pretrain": packed_text, "sft": chat, "preference": preference_rows, "grpo": rollout_rows, "rft": chat,
           "ppo": ppo_rows, "classify": labelled_rows}


@pytest.mark.parametrize("name", losses.names())
def test_every_objective_trains_and_its_step_traces_once(name, tmp_path, tokenizer_dir, monkeypatch):
  objective = losses.get(name)
  config = tiny_config(name, tmp_path, tokenizer_dir, steps=STEPS, **{  # one block: tracing is most of the cost
      "model.n_layers": 1, "data.train_examples": 32, "data.eval_examples": 8, "log.every": 1, "sample.num": 0,
      **RESOLVED_BY_THE_STAGE.get(name, {})})
  env = runtime.prepare(config)
  task = train.Task(loss=name, batches=BATCHES[objective.feed](env))

  traces = []
  real_step = train.make_train_step

  def counted(*args, **kwargs):
    step = real_step(*args, **kwargs)

    def traced(state, batch):
      traces.append(1)  # runs only while jax traces
      return step(state, batch)
    return traced

  states = []
  real_init = train.init_state

  def kept(*args, **kwargs):
    out = real_init(*args, **kwargs)
    states.append(jax.tree.map(lambda x: x.shape, out[0]))  # shapes only: fit donates the buffers
    return out

  monkeypatch.setattr(train, "make_train_step", counted)
  monkeypatch.setattr(train, "init_state", kept)
  summary = train.fit(env, task)
  (state,) = states
  assert bool(state.frozen) == objective.needs_reference  # full fine-tuning: frozen is the reference or nothing
  assert bool(set(state.params) - {"model"}) == (objective.extra_params is not None)
  assert summary["step"] == STEPS and summary["skipped_steps"] == 0
  assert np.isfinite(summary["train_loss"]) and np.isfinite(summary["train_grad_norm"])
  assert len(traces) == 1, f"{name}: the train step traced {len(traces)} times in {STEPS} steps"
