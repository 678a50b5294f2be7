"""lm_eval's GSM8K-style scores next to jaxllm's answer check, on the same generations.

  python experiments/lm_eval_agreement.py E/lm_eval/samples_builtin_gsm8k.jsonl

Reads the samples an `eval.task=lm_eval:builtin_gsm8k` run (or `python -m jaxllm.lm_eval ... --log_samples`)
wrote and prints one JSON line: lm_eval's exact_match per filter, jaxllm's pass@1 (`evals.score`, kind
"answer": the number after the last "####", else the last number, compared numerically) over the very same
generated texts, and how many problems each rule alone counts right. jaxllm's own `eval.task=accuracy` on the
same problems must equal `jaxllm_accuracy` here when both runs generated the same texts.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from jaxllm import answers, evals  # noqa: E402


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("samples", help="an lm_eval samples JSONL file of a GSM8K-style task")
  args = parser.parse_args()
  by_filter: dict[str, dict[int, dict]] = {}
  with open(args.samples) as f:
    for line in f:
      row = json.loads(line)
      by_filter.setdefault(row["filter"], {})[row["doc_id"]] = row
  if not by_filter:
    raise SystemExit(f"{args.samples}: no samples")
  rows = sorted(next(iter(by_filter.values())).values(), key=lambda r: r["doc_id"])
  texts = [r["resps"][0][0] for r in rows]
  references = [r["target"].rpartition("####")[2].strip() for r in rows]
  jaxllm_right = [answers.answers_match(answers.extract_final_answer(t), ref) for t, ref in zip(texts, references)]
  scores = evals.score(texts, references, "answer")
  out = {"problems": len(rows), "jaxllm_accuracy": scores["accuracy"], "answer_format": scores["answer_format"]}
  for name, samples in sorted(by_filter.items()):
    lm_right = [bool(samples[r["doc_id"]]["exact_match"]) for r in rows]
    out[f"lm_eval_exact_match/{name}"] = sum(lm_right) / len(rows)
    out[f"only_jaxllm_right/{name}"] = sum(j and not m for j, m in zip(jaxllm_right, lm_right))
    out[f"only_lm_eval_right/{name}"] = sum(m and not j for j, m in zip(jaxllm_right, lm_right))
  print(json.dumps(out))


if __name__ == "__main__":
  main()
