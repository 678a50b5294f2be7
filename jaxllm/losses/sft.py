"""Objective `sft`: supervised fine-tuning, the next-token cross-entropy of losses/lm.py over the answer tokens
of chat turns (the batch's loss_mask leaves the prompt out). Its section `sft` holds the chat-data and
generation-evaluation keys the sft stage reads."""
from __future__ import annotations

import ml_collections

from jaxllm import chat_template, evals
from jaxllm.data import sources
from jaxllm.errors import require
from jaxllm.losses import Objective
from jaxllm.losses.lm import lm_loss


def validate(config: ml_collections.ConfigDict) -> None:
  s = config.sft
  require(s.train_on in chat_template.TRAIN_ON, "sft.train_on",
          f"{s.train_on!r} is not one of {chat_template.TRAIN_ON}")
  require(s.eval_kind in ("auto", "") + evals.KINDS, "sft.eval_kind",
          f"{s.eval_kind!r} is not one of auto, '', {', '.join(evals.KINDS)}")
  require(s.formatting in ("auto",) + sources.FORMATTINGS, "sft.formatting",
          f"{s.formatting!r} is not auto or one of {sources.FORMATTINGS}")
  require(s.eval_examples >= 0, "sft.eval_examples", f"must be >= 0, got {s.eval_examples}")
  require(0.0 <= s.first_step_only <= 1.0, "sft.first_step_only", f"must be in [0, 1], got {s.first_step_only}")
  require(s.eval_batch_size > 0, "sft.eval_batch_size", f"must be > 0, got {s.eval_batch_size}")


OBJECTIVE = Objective(name="sft", loss=lm_loss, feed="sft", section="sft", validate=validate)
