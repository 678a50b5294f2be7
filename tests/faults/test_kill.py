"""kill -9 at random points of a tiny run (one of them, with a checkpoint every step, while an asynchronous save
is in flight or just finished), restarted until done: benchmarks/soak.py at CI size. The 30-kill soak's result is
in docs/reliability.md."""
import os
import sys

import pytest

from conftest import REPO

sys.path.insert(0, os.path.join(str(REPO), "benchmarks"))
import soak  # noqa: E402


@pytest.mark.slow
def test_kill_9_during_saves_resumes_with_bitwise_identical_losses_and_no_duplicate_rows(tmp_path, tokenizer_dir):
  result = soak.soak(kills=2, steps=6, every=1, seed=1, root=str(tmp_path), tokenizer=tokenizer_dir,
                     log=lambda _: None)
  assert result["kills"] == 2 and not result["failures"], result
  assert result["final_step"] == 6 and result["resumes"] + result["starts_from_zero_after_a_kill"] == 2
  assert result["duplicated_rows"] == 0 and result["missing_rows"] == 0
  assert result["losses_bitwise_identical"], result
