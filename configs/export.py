"""Export a model as a Hugging Face folder (config.json, safetensors, tokenizer files), LoRA merged.

  python run.py --config=configs/export.py --config.init_from=/tmp/jaxllm/sft_lora --config.export.path=/tmp/hf_out
  python run.py --config=configs/export.py --config.init_from=<HF folder> --config.export.path=OUT  # re-shard / cast

init_from is a jaxllm workdir (its latest checkpoint; or W/checkpoints/<step>) or a Hugging Face folder. The
result loads with transformers.AutoModelForCausalLM.from_pretrained / AutoTokenizer.from_pretrained and gives
the same logits as jaxllm (tests/test_hf.py checks this). Seconds for the small models of the built-in world.
"""

import ml_collections

from configs import base


def get_config(arg: str | None = None):
  del arg  # one size: `tiny` is the same
  c = base.get_config()
  c.stage = "export"
  c.export = ml_collections.ConfigDict()
  c.export.path = ""  # output folder (created); must be empty unless export.overwrite
  c.export.overwrite = False  # replace a non-empty export.path (the whole folder, swapped in at the end)
  c.export.dtype = "float32"  # dtype of the written tensors: float32 | bfloat16 | float16
  c.export.max_shard_gb = 2.0  # larger checkpoints are split into shards of at most this size, with an index
  c.lock()
  return c
