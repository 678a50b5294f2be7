"""A downloaded chat model through jaxllm and back, on tiny Llama-3- and Gemma-style folders built here (no hub): LoRA SFT
on a sharegpt file with the model's own tokenizer and template -> export -> transformers' generate on
apply_chat_template's ids gives the same greedy tokens as jaxllm's chat stage."""
import io
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import hf_families as fam  # noqa: E402
from conftest import tiny_config  # noqa: E402
from jaxllm import chat_template  # noqa: E402

MAX_NEW = 12


def _model_folder(family: str, folder) -> None:
  """The family's tokenizer and a random tiny model of exactly its vocabulary (a padded one would let
  transformers draw ids past the tokenizer, which jaxllm's sampler never draws): Llama for llama3, Gemma 3 (one
  local layer with a window of 8, one global) for gemma."""
  tok = fam.build(family, folder)
  torch.manual_seed(0)
  sizes = dict(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
               num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
               bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
  if family == "llama3":
    config = transformers.LlamaConfig(**sizes, rope_theta=5e5)
  else:
    config = transformers.Gemma3TextConfig(**sizes, head_dim=16, sliding_window=8, query_pre_attn_scalar=16,
                                           layer_types=["sliding_attention", "full_attention"])
  model = transformers.AutoModelForCausalLM.from_config(config).eval()
  with torch.no_grad():
    for p in model.parameters():
      p.normal_(0.0, 0.3 if p.ndim == 2 else 0.1).add_(1.0 if p.ndim == 1 and family == "llama3" else 0.0)
  model.save_pretrained(str(folder))


@pytest.mark.parametrize("family", ["llama3", "gemma"])
def test_sft_lora_export_generate(family, tmp_path):
  from configs import chat as chat_config
  from configs import export as export_config
  from jaxllm.stages import chat, export, sft

  base = tmp_path / "base"
  _model_folder(family, base)
  rows = [{"conversations": [{"from": "human", "value": f"What is {i} plus {i}? 你好"},
                             {"from": "gpt", "value": f"It is {2 * i}. 🙂"}]} for i in range(24)]
  data = tmp_path / "chats.json"
  data.write_text(json.dumps(rows, ensure_ascii=False))
  config = tiny_config("sft_lora", tmp_path / "run", "", init_from=str(base), steps=3, **{
      "data.name": str(data), "data.eval_fraction": 0.25, "data.seq_len": 64, "sample.num": 0,
      "sft.eval_examples": 0, "eval.every": 3})
  summary = sft.run(config)
  assert summary["step"] == 3 and np.isfinite(summary["eval_loss"])

  out = tmp_path / "out"
  config = export_config.get_config()
  config.init_from, config.export.path = str(tmp_path / "run"), str(out)
  export.run(config)
  assert (out / "chat_template.jinja").read_text() == (base / "chat_template.jinja").read_text()  # its own
  assert "chat_template" not in json.loads((out / "tokenizer_config.json").read_text())

  messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 3 plus 3? 你好"}]
  config = chat_config.get_config()
  config.init_from = str(out)
  config.sampling.update(temperature=0.0, max_new_tokens=MAX_NEW, system="Be brief.")
  session = chat.Chat(config, io.StringIO())
  ours_text = session.reply(messages[1]["content"])
  ours = chat_template.prompt_ids(session.tokenizer, messages)

  tok = transformers.AutoTokenizer.from_pretrained(str(out))
  model = transformers.AutoModelForCausalLM.from_pretrained(str(out), dtype=torch.float32).eval()
  ids = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
  ids = list(ids["input_ids"] if not isinstance(ids, list) else ids)
  assert ids == ours
  with torch.no_grad():
    theirs = model.generate(torch.tensor([ids]), max_new_tokens=MAX_NEW, do_sample=False,
                            pad_token_id=tok.pad_token_id)[0, len(ids):].tolist()
  stops = set(chat_template.stop_ids(session.tokenizer))
  assert set(model.generation_config.eos_token_id if isinstance(model.generation_config.eos_token_id, list)
             else [model.generation_config.eos_token_id]) == stops
  cut = next((i for i, t in enumerate(theirs) if t in stops), len(theirs))
  assert session.tokenizer.decode(theirs[:cut]) == ours_text
