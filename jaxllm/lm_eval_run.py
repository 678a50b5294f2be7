"""The eval stage's `lm_eval:<tasks>` task: lm-evaluation-harness tasks on the loaded model, results into the
workdir.

  python run.py --config=configs/eval.py --config.init_from=W --config.workdir=E \
      --config.eval.task=lm_eval:builtin_gsm8k --config.eval.lm_eval_include=E/tasks --config.eval.lm_eval_chat=True

Writes E/lm_eval/results.json (lm_eval's whole results object) and E/lm_eval/samples_<task>.jsonl (every
request with the model's responses and the per-item scores); returns the scalars flattened as
`<task>/<metric>/<filter>` (e.g. `builtin_gsm8k/exact_match/strict-match`), which the eval stage prints and
logs like any other task's.
"""
from __future__ import annotations

import json
import os

import ml_collections

from jaxllm import runtime
from jaxllm.config import lm_eval_task_names


def flatten(results: dict) -> dict[str, float]:
  """{"<task>/<metric>/<filter>": value} for every numeric entry of lm_eval's per-task results (no filter
  part for lm_eval's default filter, "none")."""
  flat = {}
  for task, metrics in results.get("results", {}).items():
    for key, value in metrics.items():
      if isinstance(value, bool) or not isinstance(value, (int, float)):
        continue  # aliases, "N/A" stderrs
      metric, _, filter_name = key.partition(",")
      flat["/".join(x for x in (task, metric, filter_name) if x and x != "none")] = float(value)
  return flat


def evaluate(env: runtime.Env, config: ml_collections.ConfigDict) -> dict:
  """Run `config.eval.task`'s lm_eval tasks on env's model; lm_eval's settings come from config.eval.* and
  config.sampling (system turn, max_new_tokens for tasks that set none)."""
  try:
    import lm_eval
    from lm_eval.tasks import TaskManager
  except ImportError:
    raise ValueError(f"config.eval.task={config.eval.task!r} needs lm-evaluation-harness: "
                     f"pip install 'jaxllm[lm_eval]'") from None
  from jaxllm.lm_eval_model import JaxLLM

  e = config.eval
  names = lm_eval_task_names(e.task)  # config.validate checked them and the include folder
  include = e.lm_eval_include or None
  # Indexing lm_eval's ~15k built-in task files takes a minute or more: skip it when the include path has them all.
  manager = TaskManager(include_path=include, include_defaults=False) if include is not None else None
  if manager is None or any(n not in manager.all_tasks for n in names):
    manager = TaskManager(include_path=include)
  unknown = [n for n in names if n not in manager.all_tasks]
  if unknown:
    raise ValueError(f"config.eval.task: lm_eval knows no task {unknown} (include path: {include or 'none'})")
  model = JaxLLM(env=env, batch_size=e.batch_size, max_gen_toks=config.sampling.max_new_tokens, seed=config.seed)
  out = lm_eval.simple_evaluate(
      model=model, tasks=names, num_fewshot=None if e.lm_eval_fewshot < 0 else e.lm_eval_fewshot,
      limit=e.lm_eval_limit or None, apply_chat_template=e.lm_eval_chat,
      system_instruction=config.sampling.system or None, task_manager=manager, log_samples=True,
      random_seed=config.seed, numpy_random_seed=config.seed,
      torch_random_seed=config.seed, fewshot_random_seed=config.seed)
  folder = os.path.join(config.workdir, "lm_eval")
  if env.is_main:
    os.makedirs(folder, exist_ok=True)
    samples = out.pop("samples", {})
    for task, rows in samples.items():
      with open(os.path.join(folder, f"samples_{task}.jsonl"), "w") as f:
        for row in rows:
          f.write(json.dumps(row, default=str) + "\n")
    with open(os.path.join(folder, "results.json"), "w") as f:
      json.dump(out, f, indent=1, default=str)
  return {**flatten(out), "results": os.path.join(folder, "results.json")}
