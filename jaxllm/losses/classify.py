"""Objective `classify`: a sequence classifier, the trunk of init_from plus a `num_classes` linear head (the
field's "replace the output layer with a classification head": one output per class, argmax), trained with
cross-entropy on labelled texts (jaxllm/data/labelled.py builds the batches, jaxllm/stages/classify.py runs it).

The head is the objective's extra trained parameter, `params["class_head"] = {"w": [D, C]}`, trained in full
under LoRA too (as peft's modules_to_save does with a classifier). It reads the trunk's final (normed) hidden
state pooled over each row's real tokens (`cfg.classify.pooling`):
  last  the hidden state at the row's last real token, which under causal attention has seen the whole text:
        what transformers' `...ForSequenceClassification` computes (`score` on the last non-pad token), so a
        last-pooled head exports as one (hf/save.py);
  mean  the mean of the hidden states of its real tokens (sentence-embedding style; no transformers class).
No bias, as `score` has none: the exported model computes exactly these logits.

Loss: per-row cross-entropy weighted by `batch["weight"]` (1 for a real row, 0 for filler rows of a short
held-out batch) times the class weight of its label (`classify.class_weights`, folded into `weight` by the data
pipeline), sum / max(sum of weights, 1): torch.nn.CrossEntropyLoss(weight=...)'s weighted mean.

A batch holds tokens, positions, segment_ids [B, L] (segment 0 = padding), last_index [B], label [B] int32 and
weight [B] f32. `confusion` gives the weighted [C, C] counts (true class by row, predicted by column) a held-out
pass sums; accuracy, macro-F1 and the confusion matrix come from them (jaxllm/class_metrics.py).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxllm import reward_model
from jaxllm.errors import require
from jaxllm.losses import Objective
from jaxllm.state import policy_weights

HEAD = "class_head"
POOLINGS = ("last", "mean")


def init_head(rng: jax.Array, d_model: int, num_classes: int, std: float) -> dict:
  """{"w": [D, C]} f32: zeros (std = 0: every class starts equally likely) or N(0, std^2)."""
  if std > 0:
    return {"w": std * jax.random.normal(rng, (d_model, num_classes), jnp.float32)}
  return {"w": jnp.zeros((d_model, num_classes), jnp.float32)}


def pool(hidden_BLD: jax.Array, segment_ids_BL: jax.Array, last_index_B: jax.Array, pooling: str) -> jax.Array:
  """f32 [B, D]: each row's hidden state at its last real token, or the mean over its real tokens."""
  hidden_BLD = hidden_BLD.astype(jnp.float32)
  if pooling == "last":
    return jnp.take_along_axis(hidden_BLD, last_index_B[:, None, None].astype(jnp.int32), axis=1)[:, 0]
  real_BL1 = (segment_ids_BL != 0).astype(jnp.float32)[..., None]
  return (hidden_BLD * real_BL1).sum(1) / jnp.maximum(real_BL1.sum(1), 1.0)


def class_logits(model, weights: dict, lora, head: dict, batch: dict, pooling: str,
                 rng: jax.Array | None = None) -> jax.Array:
  """f32 [B, C] logits of padded rows (right or left padding: `last_index` names the token read)."""
  hidden_BLD = reward_model.hidden_states(model, weights, lora, batch["tokens"], batch["positions"],
                                          batch["segment_ids"], rng)
  pooled_BD = pool(hidden_BLD, batch["segment_ids"], batch["last_index"], pooling)
  return pooled_BD @ head["w"].astype(jnp.float32)


def weighted_cross_entropy(logits_BC: jax.Array, label_B: jax.Array, weight_B: jax.Array) -> jax.Array:
  """sum_b w_b * -log softmax(logits_b)[label_b] / max(sum_b w_b, 1)."""
  logp_BC = jax.nn.log_softmax(logits_BC.astype(jnp.float32), axis=-1)
  nll_B = -jnp.take_along_axis(logp_BC, label_B[:, None].astype(jnp.int32), axis=-1)[:, 0]
  return (nll_B * weight_B).sum() / jnp.maximum(weight_B.sum(), 1.0)


def confusion(logits_BC: jax.Array, label_B: jax.Array, weight_B: jax.Array) -> jax.Array:
  """f32 [C, C]: sum of `weight` over rows of true class i (row) predicted as class j (column, argmax)."""
  c = logits_BC.shape[-1]
  true_BC = jax.nn.one_hot(label_B, c, dtype=jnp.float32) * weight_B[:, None]
  pred_BC = jax.nn.one_hot(jnp.argmax(logits_BC, axis=-1), c, dtype=jnp.float32)
  return true_BC.T @ pred_BC


def classify_loss(params, frozen, batch, rng, *, model, cfg):
  weights, lora = policy_weights(params, frozen)
  logits_BC = class_logits(model, weights, lora, params[HEAD], batch, cfg.classify.pooling, rng)
  w_B = batch["weight"]
  loss = weighted_cross_entropy(logits_BC, batch["label"], w_B)
  counts_CC = confusion(logits_BC, batch["label"], (w_B > 0).astype(jnp.float32))
  metrics = {"accuracy": jnp.trace(counts_CC) / jnp.maximum(counts_CC.sum(), 1.0)}
  return loss, metrics


def class_head(env, rng) -> dict:
  """The trained extra: init_from's head when it is a classify run with as many classes (trained further), else a
  new one."""
  c = env.config
  if c.classify.num_classes < 2:
    raise ValueError(f"classify.num_classes={c.classify.num_classes}: the classify stage fills it in from the "
                     "labels before training")
  if env.pretrained is not None and HEAD in env.pretrained.extras:
    head = env.pretrained.extras[HEAD]
    if head["w"].shape == (c.model.d_model, c.classify.num_classes):
      return {HEAD: head}
    env.log(f"classify: init_from's {HEAD} has {head['w'].shape[-1]} classes, this run {c.classify.num_classes}: "
            "a new head is trained")
  return {HEAD: init_head(rng, c.model.d_model, c.classify.num_classes, c.classify.head_init)}


def parse_labels(text: str) -> list[str]:
  """classify.labels ("neg,pos") -> the class names in class-index order; '' -> [] (taken from the data)."""
  return [s.strip() for s in text.split(",")] if text.strip() else []


def validate(config) -> None:
  k = config.classify
  require(k.pooling in POOLINGS, "classify.pooling", f"{k.pooling!r} is not one of {POOLINGS}")
  require(k.head_init >= 0, "classify.head_init", f"must be >= 0 (a std; 0 = zeros), got {k.head_init}")
  labels = parse_labels(k.labels)
  require(all(labels), "classify.labels", f"{k.labels!r} has an empty name (comma-separated class names)")
  require(len(set(labels)) == len(labels), "classify.labels", f"{k.labels!r} names a class twice")
  require(k.num_classes >= 0, "classify.num_classes", f"must be >= 0 (0 = the number of labels), got {k.num_classes}")
  require(not labels or k.num_classes in (0, len(labels)), "classify.num_classes",
          f"{k.num_classes} disagrees with classify.labels, which names {len(labels)} classes")
  require(k.num_classes != 1, "classify.num_classes", "a classifier needs at least 2 classes")
  weights = k.class_weights.strip()
  if weights and weights != "balanced":
    try:
      values = [float(v) for v in weights.split(",")]
    except ValueError:
      values = None
    require(values is not None, "classify.class_weights",
            f"{weights!r} is not '', 'balanced' or comma-separated numbers, one per class")
    require(all(v >= 0 for v in values) and any(v > 0 for v in values), "classify.class_weights",
            f"{weights!r}: weights must be >= 0, not all 0")
    n = len(labels) or k.num_classes
    require(not n or len(values) == n, "classify.class_weights", f"{len(values)} weights for {n} classes")
  require(not ((k.text_column or k.label_column) and config.data.dataset_info), "classify.text_column",
          "names columns of a file; with data.dataset_info the entry's `columns` name them")
  require(k.eval_examples >= 0, "classify.eval_examples", f"must be >= 0 (0 = all held-out rows), got {k.eval_examples}")


OBJECTIVE = Objective(name="classify", loss=classify_loss, feed="classify", extra_params=class_head,
                      section="classify", validate=validate)
