"""Classification metrics from a confusion matrix (true class by row, predicted by column): accuracy, macro-F1,
per-class precision / recall / F1, and the matrix as a markdown table. numpy only: the held-out pass sums the
[C, C] counts on device (losses/classify.confusion) and hands them here."""
from __future__ import annotations

import numpy as np


def per_class(confusion_CC: np.ndarray) -> dict[str, np.ndarray]:
  """precision, recall, f1 and support [C] (f1 = 0 for a class never predicted and never present). Extra
  columns past the C-th count predictions that are no class: they lower recall, no class's precision."""
  m = np.asarray(confusion_CC, np.float64)
  c = m.shape[0]
  tp = np.diag(m[:, :c])
  predicted, support = m[:, :c].sum(0), m.sum(1)
  precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
  recall = np.divide(tp, support, out=np.zeros_like(tp), where=support > 0)
  denom = precision + recall
  f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
  return {"precision": precision, "recall": recall, "f1": f1, "support": support}


def summary(confusion_CC: np.ndarray) -> dict[str, float]:
  """accuracy and macro_f1 (the unweighted mean of the per-class F1 over the classes present in the references,
  sklearn's f1_score(average="macro") when every class occurs)."""
  m = np.asarray(confusion_CC, np.float64)
  stats = per_class(m)
  present = stats["support"] > 0
  return {"accuracy": float(np.trace(m) / max(m.sum(), 1.0)),
          "macro_f1": float(stats["f1"][present].mean()) if present.any() else 0.0}


def confusion_from_labels(references: list[str], predictions: list[str], names: list[str]) -> np.ndarray:
  """[C, C + 1] counts of labelled texts; the last column counts predictions that are no class (a generated
  label that is not one of `names`), which then lower recall but no class's precision."""
  index = {n: i for i, n in enumerate(names)}
  m = np.zeros((len(names), len(names) + 1), np.int64)
  for ref, pred in zip(references, predictions):
    m[index[ref], index.get(pred, len(names))] += 1
  return m


def label_summary(references: list[str], predictions: list[str]) -> dict[str, float]:
  """`summary` of generated labels (stripped) against reference labels; an invalid one counts as a miss."""
  names = sorted({r.strip() for r in references})
  return summary(confusion_from_labels([r.strip() for r in references], [p.strip() for p in predictions], names))


def markdown(confusion_CC: np.ndarray, names: list[str]) -> str:
  """The confusion matrix and per-class precision / recall / F1 as markdown tables."""
  m = np.asarray(confusion_CC)
  stats = per_class(m)
  cell = lambda x: f"{int(round(x))}"
  lines = ["| true \\ predicted | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
  lines += [f"| {name} | " + " | ".join(cell(x) for x in row) + " |" for name, row in zip(names, m)]
  lines += ["", "| class | precision | recall | F1 | support |", "|---|---|---|---|---|"]
  lines += [f"| {name} | {p:.3f} | {r:.3f} | {f:.3f} | {cell(s)} |" for name, p, r, f, s in
            zip(names, stats["precision"], stats["recall"], stats["f1"], stats["support"])]
  return "\n".join(lines)
