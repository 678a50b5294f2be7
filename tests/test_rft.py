"""Rejection-sampling fine-tuning: the selection rule on hand-made groups, and a tiny run through rounds that
resumes mid-round exactly."""
import numpy as np
import pytest

from conftest import tiny_config
from jaxllm import rewards
from jaxllm.metrics import read_metrics
from jaxllm.rft import select


@rewards.register("test_has_digit")  # gives a barely trained tiny model answers to keep
def _has_digit(completions, references):
  return np.array([float(any(ch.isdigit() for ch in c)) for c in completions], np.float32)


def test_selection_keeps_correct_distinct_answers_in_rule_order():
  correct = np.array([1, 0, 1, 1, 1, 1], bool)
  lengths = np.array([9, 2, 5, 7, 5, 3])
  answers = [(1,) * 9, (2,) * 2, (3,) * 5, (4,) * 7, (3,) * 5, (5,) * 3]  # sample 4 repeats sample 2
  assert select(correct, lengths, answers, "shortest", 0) == [5, 2, 3, 0]  # 1 wrong, 4 a duplicate
  assert select(correct, lengths, answers, "shortest", 2) == [5, 2]
  assert select(correct, lengths, answers, "first", 2) == [0, 2]
  assert select(correct, lengths, answers, "all", 0) == [0, 2, 3, 5]
  assert select(np.zeros(6, bool), lengths, answers, "shortest", 2) == []
  tie = select(np.ones(3, bool), np.array([4, 4, 4]), [(1,), (2,), (3,)], "shortest", 2)
  assert tie == [0, 1]  # equal lengths: sample order
  with pytest.raises(ValueError, match="rft.keep"):
    select(correct, lengths, answers, "longest", 0)


@pytest.mark.slow
def test_tiny_rft_run_through_rounds_resumes_mid_round_exactly(tmp_path, tokenizer_dir, tiny_pretrained):
  from jaxllm.stages import rft

  common = {"init_from": tiny_pretrained, "rl.eval_prompts": 0, "rl.rewards": "test_has_digit:1.0", "rft.verifier": "test_has_digit",
            "sampling.max_new_tokens": 24, "rft.samples": 8, "optim.lr": 1e-3, "optim.warmup_steps": 1, "optim.decay_steps": 4}
  summary = rft.run(tiny_config("rft", tmp_path / "straight", tokenizer_dir, **common))
  assert summary["step"] == 4 and summary["rounds"] == 2
  train_rows = [r for r in read_metrics(str(tmp_path / "straight")) if r["split"] == "train"]
  assert [r["round"] for r in train_rows] == [1, 1, 2, 2]
  for r in train_rows:
    assert 1 <= r["kept_rows"] <= 4 * 2 and r["correct_frac"] > 0 and np.isfinite(r["loss"])
  assert train_rows[-1]["sampled_tokens"] > train_rows[0]["sampled_tokens"] > 0

  # Killed after step 3 (inside round 2) and resumed: the same kept rows, the same losses.
  rft.run(tiny_config("rft", tmp_path / "resumed", tokenizer_dir, steps=3, **common))
  rft.run(tiny_config("rft", tmp_path / "resumed", tokenizer_dir, **common))
  again = [r for r in read_metrics(str(tmp_path / "resumed")) if r["split"] == "train"]
  for key in ("loss", "round", "kept_rows", "sampled_tokens"):
    assert [r[key] for r in again] == [r[key] for r in train_rows], key


def test_a_round_that_kept_nothing_trains_on_nothing(tmp_path, tokenizer_dir):
  from jaxllm import rl, runtime
  from jaxllm.rft import RoundSource

  env = runtime.prepare(tiny_config("rft", tmp_path, tokenizer_dir))
  prompts, _ = rl.encode_prompts(env.tokenizer, [{"messages": [{"role": "user", "content": "1 + 1?"}],
                                                  "answer": "2"}], 64)
  source = RoundSource(env, prompts, rewards.build(env.config.rl))
  source.round = 1  # as after sampling a round in which no answer was verified
  batch = source._batch(0)
  assert batch["tokens"].shape == (env.config.data.batch_size, env.config.data.seq_len)
  assert batch["loss_mask"].sum() == 0  # the loss is a masked mean: 0, no gradient, never NaN
