"""The stage that trains the `classify` objective: a classification head on the trunk of init_from (a jaxllm
workdir, or a Hugging Face model folder; '' = a random init), full or LoRA, on labelled texts.

  python run.py --config=configs/classify.py --config.init_from=SFT_WORKDIR --config.workdir=W
  python run.py --config=configs/classify.py --config.init_from=W0 --config.workdir=W --config.data.name=reviews.csv

The class names are resolved before anything else (classify.labels, or the training split's labels) and
written into the run's config.json (classify.labels, classify.num_classes), where export and later runs read
them. Held-out evaluation runs the classifier on every held-out row (or the first classify.eval_examples) and
sums a confusion matrix on device: metrics.jsonl's eval rows hold `loss`, `accuracy` and `macro_f1`; the summary
adds the class names and the confusion matrix, and workdir/classify_report.md shows it with per-class precision,
recall and F1.
"""
from __future__ import annotations

import os

import jax
import ml_collections
import numpy as np

from jaxllm import class_metrics, runtime, sharding, train
from jaxllm.data import labelled
from jaxllm.data.files import DataError, Sink
from jaxllm.losses import classify as classify_loss
from jaxllm.state import TrainState, policy_weights

REPORT = "classify_report.md"


def resolve_classes(config: ml_collections.ConfigDict, data: labelled.LabelledData) -> list[str]:
  """The class names, checked against classify.num_classes; written into config.classify (in place)."""
  k = config.classify
  names = labelled.class_names(k.labels, data.train)
  where = "classify.labels" if k.labels else f"the training labels of {data.source}"
  if len(names) < 2:
    raise DataError(f"classify: {where} give {len(names)} class(es) {names}; a classifier needs at least 2")
  if k.num_classes and k.num_classes != len(names):
    raise DataError(f"classify: {where} give {len(names)} classes {names[:10]}, but classify.num_classes="
                    f"{k.num_classes}")
  if not k.labels and any("," in n for n in names):
    bad = next(n for n in names if "," in n)
    raise DataError(f"classify: the label {bad!r} ({data.source}) holds a comma; name the classes in "
                    "classify.labels without commas and map the data's labels to them")
  k.labels, k.num_classes = ",".join(names), len(names)
  return names


def held_out_step(env: runtime.Env):
  """Jitted (params, frozen, batch) -> summed NLL, row count and [C, C] confusion counts of one batch."""
  pooling = env.config.classify.pooling

  def step(params, frozen, batch):
    weights, lora = policy_weights(params, frozen)
    logits_BC = classify_loss.class_logits(env.model, weights, lora, params[classify_loss.HEAD], batch, pooling)
    w_B = batch["weight"]
    nll = classify_loss.weighted_cross_entropy(logits_BC, batch["label"], w_B) * w_B.sum()
    return {"nll_sum": nll, "rows": w_B.sum(), "confusion": classify_loss.confusion(logits_BC, batch["label"], w_B)}

  return env.jit_cache(("classify_eval",), lambda: jax.jit(step))


def evaluate(env: runtime.Env, state: TrainState, batches: list[dict]) -> tuple[dict[str, float], np.ndarray]:
  """(loss, accuracy, macro_f1 over the held-out rows; their confusion matrix)."""
  step = held_out_step(env)
  c = env.config.classify.num_classes
  confusion, nll, rows = np.zeros((c, c)), 0.0, 0.0
  with env.mesh_context():
    for local in batches:
      out = jax.device_get(step(state.params, state.frozen, sharding.put_batch(local, env.mesh)))
      confusion += out["confusion"]
      nll, rows = nll + float(out["nll_sum"]), rows + float(out["rows"])
  return {"loss": nll / max(rows, 1.0), **class_metrics.summary(confusion)}, confusion


def write_report(workdir: str, names: list[str], summary: dict, confusion: np.ndarray, source: str) -> str:
  path = os.path.join(workdir, REPORT)
  lines = [f"# Classifier: held-out results at step {summary['step']}", "",
           f"data: {source}; classes: {', '.join(names)}", "",
           f"accuracy {summary.get('eval_accuracy', float('nan')):.4f}, macro-F1 "
           f"{summary.get('eval_macro_f1', float('nan')):.4f}, loss {summary.get('eval_loss', float('nan')):.4f} "
           f"over {int(confusion.sum())} held-out rows", "", class_metrics.markdown(confusion, names), ""]
  with open(path, "w") as f:
    f.write("\n".join(lines))
  return path


def run(config: ml_collections.ConfigDict) -> dict:
  config = ml_collections.ConfigDict(config.to_dict())  # classify.labels / num_classes are filled in below
  data = labelled.load(config)
  names = resolve_classes(config, data)
  sink = Sink(config.data.on_bad_row)
  origin = "classify.labels" if config.classify.labels else "the training split's labels"
  train_rows, train_ids = labelled.label_ids(data.train, names, sink, origin)
  eval_rows, eval_ids = labelled.label_ids(data.eval, names, sink, origin)
  env = runtime.prepare(config)
  c, k = env.config, env.config.classify
  skipped = data.skipped + sink.skipped
  if skipped:
    env.log(f"classify: skipped {skipped} bad rows of {data.source} (data.on_bad_row=skip), e.g. "
            f"{'; '.join(sink.reasons[:3])}")
  train_enc = labelled.encode(env.tokenizer, train_rows, train_ids, c.data.seq_len, c.data.on_long)
  eval_enc = labelled.encode(env.tokenizer, eval_rows, eval_ids, c.data.seq_len, c.data.on_long)
  weight_C = labelled.class_weights(k.class_weights, train_enc.labels, k.num_classes)
  batches = labelled.train_batches(train_enc, c.data.batch_size, c.seed, weight_C)
  eval_batches = labelled.eval_batches(eval_enc, c.data.batch_size, k.eval_examples)
  counts = {"train_rows": len(train_enc), "eval_rows": len(eval_enc),
            "truncated_too_long": train_enc.truncated + eval_enc.truncated,
            "dropped_too_long": train_enc.dropped + eval_enc.dropped}
  per_class = np.bincount(train_enc.labels, minlength=k.num_classes).tolist()
  env.log(f"classify ({data.source}): {counts}; classes {names}, training rows per class {per_class}, "
          f"pooling={k.pooling}, class weights {np.round(weight_C, 4).tolist()}")

  last = {"confusion": np.zeros((k.num_classes, k.num_classes))}

  def held_out(state: TrainState) -> dict[str, float]:
    metrics, last["confusion"] = evaluate(env, state, eval_batches)
    return metrics

  data_counts = {"data_truncated": counts["truncated_too_long"], "data_dropped": counts["dropped_too_long"]}
  task = train.Task(loss=c.stage, batches=batches, evaluate=held_out, host_metrics=lambda: data_counts,
                    data_skipped_rows=skipped)
  summary = {**train.fit(env, task), **counts, "labels": names, "confusion": last["confusion"].astype(int).tolist()}
  if env.is_main:
    path = write_report(c.workdir, names, summary, last["confusion"], data.source)
    env.log(f"classify: held-out accuracy {summary.get('eval_accuracy', float('nan')):.4f}, macro-F1 "
            f"{summary.get('eval_macro_f1', float('nan')):.4f}; confusion matrix in {path}\n"
            + class_metrics.markdown(last["confusion"], names))
  return summary
