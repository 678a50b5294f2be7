"""LoRA fine-tuning of an imported Hugging Face model (Qwen2/Qwen3/Llama/Mistral folder with safetensors).

  python run.py --config=configs/sft_hf.py --config.init_from=/models/Qwen2.5-0.5B-Instruct --config.workdir=/tmp/sft_hf
  python run.py --config=configs/export.py --config.init_from=/tmp/sft_hf --config.export.path=/tmp/sft_hf_out

The architecture and tokenizer come from init_from (model.* sizes here are ignored); rank-8 adapters train on
every projection while the base stays frozen in bf16. Chat data is rendered with ChatML (<|im_start|> ...
<|im_end|>), which Qwen models share; a tokenizer without those markers (Llama-3) fails naming the token.
Default: the built-in task world; a 0.5B model runs ~1-2 steps/s on one GPU. The `tiny` variant (f32, a few
short steps) is a CPU smoke test for a tiny HF folder such as the ones tests/test_hf.py builds.
"""

from configs import sft


def get_config(arg: str | None = None):
  c = sft.get_config(arg)
  c.unlock()
  c.init_from = ""  # required: --config.init_from=<HF model folder>
  c.lora.update(rank=8, alpha=16.0, dropout=0.05, targets="q,k,v,o,gate,up,down")
  # Pretrained weights want a far smaller step than the from-scratch models of the built-in world.
  c.optim.update(lr=2e-4, warmup_steps=20, weight_decay=0.0)
  c.model.update(dtype="bfloat16", param_dtype="bfloat16")  # frozen base in bf16; adapters stay f32
  c.data.update(batch_size=16, seq_len=512)
  if arg == "tiny":
    c.model.update(dtype="float32", param_dtype="float32")
    c.data.update(batch_size=8, seq_len=128)
    c.lora.update(rank=4, dropout=0.0)
  c.lock()
  return c
