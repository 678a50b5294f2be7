"""lm-evaluation-harness's command line with the `jaxllm` model registered.

  python -m jaxllm.lm_eval --model jaxllm --model_args workdir=W --tasks hellaswag --batch_size 32
  python -m jaxllm.lm_eval --model jaxllm --model_args workdir=W --include_path experiments/lm_eval_tasks \
      --tasks builtin_gsm8k --apply_chat_template --system_instruction "..." --output_path W/lm_eval

Every argument is lm_eval's own (`python -m jaxllm.lm_eval --help`). lm_eval 0.4 looks models up in its own
registry only and has no plugin entry point, so the plain `lm_eval` command cannot find `jaxllm`; this module
imports the adapter (jaxllm/lm_eval_model.py), which registers it, then hands over to lm_eval's CLI.
"""
from lm_eval.__main__ import cli_evaluate

import jaxllm.lm_eval_model  # noqa: F401  (registers the "jaxllm" model)

if __name__ == "__main__":
  cli_evaluate()
