"""Tables and plots for people: markdown tables, loss/metric curves and sweep bar charts as labelled PNGs."""
from __future__ import annotations

import math
import os

import matplotlib

matplotlib.use("Agg")  # files only; no display needed
import matplotlib.pyplot as plt  # noqa: E402


def fmt(value, digits: int = 4) -> str:
  if value is None:
    return "–"
  if isinstance(value, float):
    if not math.isfinite(value):
      return str(value)
    return f"{value:.{digits}g}"
  return str(value)


def markdown_table(header: list[str], rows: list[list]) -> str:
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
  return "\n".join(lines)


def plot_curves(path: str, curves: dict[str, tuple[list[float], list[float]]], *, title: str, xlabel: str,
                ylabel: str, log_y: bool = False, y_from: float | None = None, y_to: float | None = None,
                baselines: dict[str, float] | None = None) -> str:
  """One line per named (x, y) curve; returns the file name for linking.

  y_from / y_to fix the axis ends (e.g. 0 and 1 for an accuracy, so one problem's difference does not fill the
  plot); `baselines` are labelled dashed horizontal lines (chance, a unigram model) the curves are read against.
  """
  fig, ax = plt.subplots(figsize=(7, 4))
  for name, (xs, ys) in curves.items():
    ax.plot(xs, ys, label=name, marker="o" if len(xs) < 15 else None, markersize=3)
  for i, (name, y) in enumerate((baselines or {}).items()):
    ax.axhline(y, linestyle="--", linewidth=1, color=f"C{len(curves) + i}", label=name)
  ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
  if log_y:
    ax.set_yscale("log")
  if y_from is not None or y_to is not None:
    ax.set_ylim(bottom=y_from, top=y_to)
  ax.grid(alpha=0.3)
  if len(curves) + len(baselines or {}) > 1:
    ax.legend()
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
  return os.path.basename(path)


def plot_bars(path: str, labels: list[str], means: list[float], stds: list[float], *, title: str,
              ylabel: str) -> str:
  """Mean ± std per setting (error bars), for sweeps over seeds."""
  fig, ax = plt.subplots(figsize=(max(5, 1.2 * len(labels)), 4))
  ax.bar(range(len(labels)), means, yerr=stds, capsize=4, color="#4c72b0")
  ax.set_xticks(range(len(labels)), labels, rotation=20, ha="right")
  ax.set(title=title, ylabel=ylabel)
  ax.grid(axis="y", alpha=0.3)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
  return os.path.basename(path)
