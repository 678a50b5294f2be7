"""RL prompts with verifiable answers for GRPO: `{"messages": prompt turns, "answer": str}` records from the
built-in task world's unseen problems, or from GSM8K-format data (`data.name`; held out by `rl.eval_data`,
`data.eval_split` or `data.eval_fraction`), each question behind `sampling.system` when one is set."""
from __future__ import annotations

import ml_collections

from jaxllm import tools
from jaxllm.data import sources, synthetic_tools, text
from jaxllm.errors import ConfigError


def _gsm8k_chats(records: list[dict], system_prompt: str) -> list[dict]:
  system = [{"role": "system", "content": system_prompt}] if system_prompt else []
  return [{"messages": system + [{"role": "user", "content": r["question"]}], "answer": r["answer"]}
          for r in records]


def load_prompts(config: ml_collections.ConfigDict) -> tuple[list[dict], list[dict], str, int]:
  """(training records, held-out records, source, malformed rows skipped): records are {"messages": prompt turns,
  "answer": str}."""
  data, r = config.data, config.rl
  if not data.name:
    demos = tools.parse_names(data.tools)  # the SFT demonstrations' prompt (the tool prompt with data.tools)
    return (synthetic_tools.rl_prompts(config.seed, "train", data.train_examples, demos),
            synthetic_tools.rl_prompts(config.seed, "eval", r.eval_prompts, demos), "built-in world", 0)
  limit = data.max_examples or None
  train_rows = sources.load_config(data, "gsm8k", limit=limit)
  records, held_rows = train_rows.records, None
  if r.eval_data:
    if not data.dataset_info:
      raise ConfigError("config.rl.eval_data: names a dataset of data.dataset_info; without one, set "
                        "data.eval_split (e.g. 'test') or leave both empty to hold out data.eval_fraction")
    held_rows = sources.load(r.eval_data, data.dataset_info, "gsm8k", on_bad=data.on_bad_row,
                             allow_outside=data.allow_outside_paths)
  elif data.eval_split:
    held_rows = sources.load_config(data, "gsm8k", limit=r.eval_prompts, split=data.eval_split)
  else:
    records, held = text.split_documents(records, data.eval_fraction, config.seed)
  skipped = train_rows.skipped
  if held_rows is not None:
    held, skipped = held_rows.records, skipped + held_rows.skipped
  if skipped:
    print(f"data: skipped {skipped} malformed rows of {train_rows.source} (data.on_bad_row=skip)", flush=True)
  system = config.sampling.system
  return (_gsm8k_chats(records, system), _gsm8k_chats(held[:r.eval_prompts], system), train_rows.source, skipped)
