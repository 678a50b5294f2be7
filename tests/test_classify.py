"""The classification head (jaxllm/losses/classify.py, data/labelled.py, stages/classify.py): its cross-entropy,
class weights and pooling against hand computations, metrics from a confusion matrix, bad labels named by
file / row / value, a LoRA run of the stage, the export as a transformers ...ForSequenceClassification that
gives jaxllm's logits, and the same losses on 8 devices as on 1."""
import json
import math
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import REPO, tiny_config
from jaxllm import class_metrics
from jaxllm.data import labelled
from jaxllm.data.files import DataError, Sink
from jaxllm.losses import classify
from jaxllm.metrics import read_metrics


def test_weighted_cross_entropy_matches_a_hand_computation():
  logits = jnp.array([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [1.0, 1.0, 3.0]])
  labels = jnp.array([0, 1, 0])
  # -log softmax: row 0 log(e^2 + 2) - 2, row 1 log(e + 2) - 1, row 2 log(2e + e^3) - 1
  nll = [math.log(math.e ** 2 + 2) - 2, math.log(math.e + 2) - 1, math.log(2 * math.e + math.e ** 3) - 1]
  plain = classify.weighted_cross_entropy(logits, labels, jnp.ones(3))
  np.testing.assert_allclose(plain, sum(nll) / 3, rtol=1e-6)
  # class weights (0.5 for class 0, 2 for class 1) times row weights (the last row is filler): torch's weighted
  # mean sum(w * nll) / sum(w)
  w = np.array([0.5, 2.0, 0.0])
  got = classify.weighted_cross_entropy(logits, labels, jnp.asarray(w))
  np.testing.assert_allclose(got, (0.5 * nll[0] + 2.0 * nll[1]) / 2.5, rtol=1e-6)
  assert float(classify.weighted_cross_entropy(logits, labels, jnp.zeros(3))) == 0.0  # all filler: 0, not NaN
  counts = classify.confusion(logits, labels, jnp.array([1.0, 1.0, 1.0]))
  np.testing.assert_array_equal(counts, [[1, 0, 1], [0, 1, 0], [0, 0, 0]])  # row 2 (class 0) predicted 2


def test_pooling_reads_the_last_real_token_or_the_mean_of_real_tokens():
  hidden = jnp.arange(2 * 4 * 2, dtype=jnp.float32).reshape(2, 4, 2)
  segments = jnp.array([[1, 1, 1, 0], [1, 1, 1, 1]])
  last = jnp.array([2, 3])
  np.testing.assert_array_equal(classify.pool(hidden, segments, last, "last"), [[4, 5], [14, 15]])
  np.testing.assert_allclose(classify.pool(hidden, segments, last, "mean"), [[2, 3], [11, 12]])


def test_metrics_and_class_weights_by_hand():
  confusion = np.array([[5, 1], [2, 2]])  # true 0: 5 right, 1 wrong; true 1: 2 wrong, 2 right
  f1_0, f1_1 = 2 * (5 / 7) * (5 / 6) / (5 / 7 + 5 / 6), 2 * (2 / 3) * (2 / 4) / (2 / 3 + 2 / 4)
  got = class_metrics.summary(confusion)
  assert got["accuracy"] == pytest.approx(0.7) and got["macro_f1"] == pytest.approx((f1_0 + f1_1) / 2)
  # a generated label that is no class counts as a miss of its reference's class
  refs, gens = ["1", "1", "0", "0"], ["1", "maybe", "0", "1"]
  # class 0: tp 1, predicted 1, support 2 -> p 1, r 0.5, F1 2/3; class 1: tp 1, predicted 2, support 2 -> F1 0.5
  assert class_metrics.label_summary(refs, gens)["macro_f1"] == pytest.approx((2 / 3 + 0.5) / 2)
  ids = np.array([0, 0, 0, 1])
  np.testing.assert_allclose(labelled.class_weights("balanced", ids, 2), [4 / 6, 4 / 2])
  np.testing.assert_allclose(labelled.class_weights("", ids, 2), [1, 1])
  np.testing.assert_allclose(labelled.class_weights("1,3", ids, 2), [1, 3])


def _csv(path, rows) -> str:
  path.write_text("label,review\n" + "".join(f"{label},{text}\n" for label, text in rows), encoding="utf-8")
  return str(path)


def test_labels_come_from_the_data_or_the_config_and_a_bad_one_is_named(tmp_path):
  from configs import classify as classify_config

  config = classify_config.get_config("tiny")
  config.data.name = _csv(tmp_path / "reviews.csv", [(str(i % 2), f"review number {i}") for i in range(9)] +
                          [("2", "a stray label")])
  data = labelled.load(config)
  rows = labelled.Rows(*(getattr(data.train, k) + getattr(data.eval, k) for k in ("texts", "labels", "where")))
  assert len(rows.texts) == 10 and len(data.eval.texts) == 1  # split by seed: 5% of 10, at least one
  assert labelled.class_names("", rows) == ["0", "1", "2"]  # from the data, in numeric order
  names = labelled.class_names("0,1", rows)
  with pytest.raises(DataError, match=r"reviews\.csv: line 11: label '2' is not one of the classes \['0', '1'\]"):
    labelled.label_ids(rows, names, Sink("fail"), "classify.labels")
  sink = Sink("skip")
  kept, ids = labelled.label_ids(rows, names, sink, "classify.labels")
  assert sink.skipped == 1 and "line 11" in sink.reasons[0]
  assert len(kept.texts) == 9 and ids.tolist() == [int(label) for label in kept.labels]


def test_a_lora_run_with_mean_pooling_reports_accuracy_macro_f1_and_the_confusion_matrix(tmp_path, tokenizer_dir):
  from jaxllm.stages import classify as classify_stage

  config = tiny_config("classify", tmp_path, tokenizer_dir, steps=3, **{
      "model.n_layers": 1, "lora.rank": 4, "classify.pooling": "mean", "classify.class_weights": "balanced",
      "data.train_examples": 32, "data.eval_examples": 12, "eval.every": 3, "checkpoint.every": 3})
  summary = classify_stage.run(config)
  assert summary["labels"] == ["correct", "wrong"] and summary["eval_rows"] == 12
  confusion = np.array(summary["confusion"])
  assert confusion.shape == (2, 2) and confusion.sum() == 12 and confusion.sum(1).tolist() == [6, 6]
  assert summary["eval_accuracy"] == pytest.approx(np.trace(confusion) / 12)
  assert summary["eval_macro_f1"] == pytest.approx(class_metrics.summary(confusion)["macro_f1"])
  (row,) = [r for r in read_metrics(str(tmp_path)) if r["split"] == "eval"]
  assert {"loss", "accuracy", "macro_f1"} <= set(row)
  assert "| correct |" in (tmp_path / classify_stage.REPORT).read_text()
  stored = json.loads((tmp_path / "config.json").read_text())["classify"]
  assert stored["labels"] == "correct,wrong" and stored["num_classes"] == 2  # what export and resume read


def _classify_workdir(folder, weights, head_w, model_cfg: dict, tokenizer, labels: list[str]) -> str:
  """What a finished classify run leaves: config.json (with its classify section), tokenizer/, a checkpoint."""
  import orbax.checkpoint as ocp

  os.makedirs(folder)
  config = {"model": model_cfg, "lora": {"rank": 0}, "init_from": "", "stage": "classify",
            "classify": {"pooling": "last", "labels": ",".join(labels), "num_classes": len(labels)}}
  (folder / "config.json").write_text(json.dumps(config))
  tokenizer.save(str(folder / "tokenizer"))
  params = {"model": weights, classify.HEAD: {"w": head_w}}
  with ocp.CheckpointManager(str(folder / "checkpoints")) as manager:
    manager.save(1, args=ocp.args.Composite(state=ocp.args.StandardSave({"step": 1, "params": params})))
    manager.wait_until_finished()
  return str(folder)


@pytest.mark.parametrize("features, arch", [({}, "LlamaForSequenceClassification"),
                                            ({"attn_bias": True}, "Qwen2ForSequenceClassification")])
def test_export_is_a_transformers_sequence_classifier_with_the_same_logits(features, arch, tmp_path):
  torch = pytest.importorskip("torch")
  transformers = pytest.importorskip("transformers")
  from configs import export as export_config
  from jaxllm.model import ModelConfig, Transformer
  from jaxllm.stages import export as export_stage
  from jaxllm.tokenizer import train_bpe

  tokenizer = train_bpe([f"review {i}: the food was {w}" for i in range(50) for w in ("good", "cold", "late")], 290)
  model_cfg = {**dict(vocab_size=320, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=8, mlp_dim=64,
                      max_seq_len=64, rope_theta=1e4, norm_eps=1e-6, qk_norm=False, attn_bias=False,
                      tie_embeddings=False), **features}
  cfg = ModelConfig(**model_cfg)
  rng = np.random.RandomState(0)
  shapes = jax.eval_shape(lambda: Transformer(cfg).init(jax.random.PRNGKey(0), jnp.zeros((1, 4), jnp.int32)))
  weights = jax.tree.map(lambda x: rng.normal(0.0, 0.3, x.shape).astype(np.float32),
                         jax.tree.map(lambda x: x.value if hasattr(x, "value") else x, shapes["params"],
                                      is_leaf=lambda x: hasattr(x, "value")))
  head_w = rng.normal(0.0, 1.0, (32, 3)).astype(np.float32)
  labels = ["negative", "neutral", "positive"]
  workdir = _classify_workdir(tmp_path / "run", weights, head_w, model_cfg, tokenizer, labels)
  config = export_config.get_config()
  config.init_from, config.export.path = workdir, str(tmp_path / "out")
  export_stage.run(config)

  hf_config = json.loads((tmp_path / "out" / "config.json").read_text())
  assert hf_config["architectures"] == [arch] and hf_config["id2label"] == {"0": "negative", "1": "neutral",
                                                                             "2": "positive"}
  reloaded = transformers.AutoModelForSequenceClassification.from_pretrained(str(tmp_path / "out")).eval()
  assert type(reloaded).__name__ == arch and reloaded.config.num_labels == 3
  texts = ["review 3: the food was good", "review 12: cold", "the food was late, late, late and cold"]
  rows = tokenizer.encode_batch(texts)
  enc = labelled.Encoded(np.full((3, 16), tokenizer.pad_id, np.int32), np.array([len(r) for r in rows], np.int32),
                         np.zeros(3, np.int32), pad_id=tokenizer.pad_id)
  for i, r in enumerate(rows):
    enc.ids[i, :len(r)] = r
  batch = labelled.make_batch(enc, np.arange(3), np.ones(3))
  ours = classify.class_logits(Transformer(cfg), weights, None, {"w": head_w}, batch, "last")
  with torch.no_grad():  # right-padded with the pad id config.json names: transformers reads the last non-pad token
    theirs = reloaded(torch.tensor(enc.ids, dtype=torch.long)).logits.numpy()
  np.testing.assert_allclose(theirs, np.asarray(ours), atol=1e-4, rtol=0)


def _run_classify(workdir, devices: int, tokenizer_dir: str, mesh: tuple[int, int, int]) -> list[float]:
  data, fsdp, tensor = mesh
  env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}", "JAX_PLATFORMS": "cpu"}
  cmd = [sys.executable, "run.py", "--config=configs/classify.py:tiny", f"--config.workdir={workdir}",
         f"--config.tokenizer.path={tokenizer_dir}", "--config.steps=3", "--config.log.every=1",
         "--config.eval.every=3", f"--config.mesh.data={data}", f"--config.mesh.fsdp={fsdp}",
         f"--config.mesh.tensor={tensor}", "--config.log.tensorboard=False", "--config.data.eval_examples=16"]
  proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  rows = read_metrics(str(workdir))
  return [r["loss"] for r in rows if r["split"] == "train"] + [r["loss"] for r in rows if r["split"] == "eval"]


@pytest.mark.slow
def test_classify_on_an_8_device_mesh_equals_one_device(tmp_path, tokenizer_dir):
  one = _run_classify(tmp_path / "one", 1, tokenizer_dir, (1, 1, 1))
  eight = _run_classify(tmp_path / "eight", 8, tokenizer_dir, (2, 2, 2))
  assert len(one) == len(eight) == 4  # 3 train steps and the held-out loss
  np.testing.assert_allclose(eight, one, rtol=1e-5)
