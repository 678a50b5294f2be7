"""Write a GSM8K-style lm-evaluation-harness task over the built-in world's held-out problems.

  python experiments/builtin_gsm8k_task.py --out runs/lm_eval_tasks [--n 200] [--seed 0]

Writes OUT/builtin_gsm8k.jsonl (one {"question", "answer"} a line, answer = worked steps then "#### N") and
OUT/builtin_gsm8k.yaml: a generate_until task shaped like lm_eval's gsm8k (exact_match after the "strict-match"
and "flexible-extract" filters) but zero-shot, the question alone as the user turn, greedy, 64 new tokens,
stopping at <|im_end|>. The problems are `synthetic.problems(seed, "eval", n)`: the same ones, in the same
order, as `configs/eval.py`'s `eval.task=accuracy` with eval.examples=n and that seed. Run it with the chat
template and the built-in system prompt to ask exactly what jaxllm's own accuracy eval asks (docs/evaluation.md).
"""
from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from jaxllm.data import synthetic  # noqa: E402

TASK = "builtin_gsm8k"
# `{data}` is filled with the JSONL's absolute path: lm_eval resolves data_files against the working directory.
YAML = """task: {task}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
output_type: generate_until
test_split: test
doc_to_text: "{{{{question}}}}"
doc_to_target: "{{{{answer}}}}"
num_fewshot: 0
generation_kwargs:
  until:
    - "<|im_end|>"
  max_gen_toks: {max_new_tokens}
  do_sample: false
  temperature: 0.0
metric_list:
  - metric: exact_match
    aggregation: mean
    higher_is_better: true
    ignore_case: true
    ignore_punctuation: false
    regexes_to_ignore:
      - ","
      - "\\\\$"
      - "(?s).*#### "
      - "\\\\.$"
filter_list:
  - name: "strict-match"
    filter:
      - function: "regex"
        regex_pattern: "#### (\\\\-?[0-9\\\\.\\\\,]+)"
      - function: "take_first"
  - name: "flexible-extract"
    filter:
      - function: "regex"
        group_select: -1
        regex_pattern: "(-?[$0-9.,]{{2,}})|(-?[0-9]+)"
      - function: "take_first"
metadata:
  version: 1.0
"""


def write_task(out: str, n: int = 200, seed: int = 0, max_new_tokens: int = 64) -> str:
  """Write the task's JSONL and YAML into `out`; returns the YAML's path."""
  os.makedirs(out, exist_ok=True)
  data = os.path.abspath(os.path.join(out, f"{TASK}.jsonl"))
  with open(data, "w") as f:
    for p in synthetic.problems(seed, "eval", n):
      f.write(json.dumps({"question": p.question, "answer": p.solution}) + "\n")
  path = os.path.join(out, f"{TASK}.yaml")
  with open(path, "w") as f:
    f.write(YAML.format(task=TASK, data=json.dumps(data), max_new_tokens=max_new_tokens))
  return path


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--out", required=True, help="folder for the task files (pass it as lm_eval's include path)")
  parser.add_argument("--n", type=int, default=200, help="held-out problems")
  parser.add_argument("--seed", type=int, default=0, help="the built-in world's seed (config.seed of the eval)")
  parser.add_argument("--max_new_tokens", type=int, default=64, help="generation budget (sampling.max_new_tokens)")
  args = parser.parse_args()
  print(write_task(args.out, args.n, args.seed, args.max_new_tokens))


if __name__ == "__main__":
  main()
