"""Tokenizers between Hugging Face and jaxllm: a tokenizer folder read as an `HFTokenizer` (the `tokenizers`
library inside, hf_tokenizer.py) and written back as it came; a jaxllm Tokenizer written as tokenizer.json +
tokenizer_config.json with a ChatML template."""
from __future__ import annotations

import json
import os
from typing import Any

import tokenizers

from jaxllm import chat_template
from jaxllm.hf_tokenizer import HFTokenizer
from jaxllm.tokenizer import Tokenizer, _unicode_to_byte


_CHATML = ("{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + "
           "'<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}"
           "{% endif %}")


def load_tokenizer(path: str) -> HFTokenizer:
  """The folder's tokenizer.json run by the `tokenizers` library, with its config and chat template."""
  return HFTokenizer.load(path)


def _bpe_parts(ranks: dict[bytes, int], token: bytes, max_rank: int) -> list[bytes]:
  """tiktoken's merging of `token`'s bytes using only ranks below max_rank."""
  parts = [bytes([b]) for b in token]
  while True:
    best = None
    for i in range(len(parts) - 1):
      rank = ranks.get(parts[i] + parts[i + 1])
      if rank is not None and rank < max_rank and (best is None or rank < best[0]):
        best = (rank, i)
    if best is None:
      return parts
    i = best[1]
    parts[i:i + 2] = [parts[i] + parts[i + 1]]


def tokenizer_json(tokenizer: Tokenizer) -> tokenizers.Tokenizer:
  """The `tokenizers` equivalent of a jaxllm Tokenizer: byte-level BPE whose merges are rebuilt from the ranks
  (each token's last tiktoken merge), its pre-split regex, and its special tokens at their ids, wherever those
  are (an added token whose spelling is in the vocab takes that entry's id)."""
  ranks, specials = tokenizer.mergeable_ranks, tokenizer.special_tokens
  to_char = {b: c for c, b in _unicode_to_byte().items()}
  text = lambda bs: "".join(to_char[b] for b in bs)
  merges = []
  for token, rank in sorted(ranks.items(), key=lambda kv: kv[1]):
    if len(token) > 1:
      parts = _bpe_parts(ranks, token, rank)
      if len(parts) == 2:  # else reachable only as a whole piece, which ignore_merges covers
        merges.append((text(parts[0]), text(parts[1])))
  vocab = {text(t): r for t, r in ranks.items()}
  clash = sorted(s for s in specials if s in vocab)
  if clash:
    raise ValueError(f"special tokens {clash} are spelled like byte-level vocab entries; cannot export them")
  vocab.update(specials)
  hf = tokenizers.Tokenizer(tokenizers.models.BPE(vocab=vocab, merges=merges, ignore_merges=True))
  hf.pre_tokenizer = tokenizers.pre_tokenizers.Sequence([
      tokenizers.pre_tokenizers.Split(tokenizers.Regex(tokenizer.pat_str), behavior="isolated"),
      tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
  hf.decoder = tokenizers.decoders.ByteLevel()
  hf.add_special_tokens([tokenizers.AddedToken(s, special=True, normalized=False) for s in specials])
  wrong = {s: (hf.token_to_id(s), i) for s, i in specials.items() if hf.token_to_id(s) != i}
  if wrong:
    raise ValueError(f"special tokens did not keep their ids when rebuilt: {wrong}")
  return hf


def _role_spelling(tokenizer: Tokenizer, marker: str) -> str | None:
  try:
    i = tokenizer.special_id(marker)
  except ValueError:
    return None
  return next(s for s, j in tokenizer.special_tokens.items() if j == i)


def _write_hf_tokenizer(folder: str, tokenizer: HFTokenizer) -> dict[str, Any]:
  """The imported folder's own tokenizer files and chat template, unchanged; the special ids config.json and
  generation_config.json need (eos: every id that ends a reply, so transformers' generate stops where jaxllm's
  chat does)."""
  tokenizer.save(folder)
  stops = list(chat_template.stop_ids(tokenizer)) if tokenizer.chat_template else [tokenizer.eot_id]
  return {"bos_token_id": tokenizer.named_id("bos_token"), "eos_token_id": stops[0] if len(stops) == 1 else stops,
          "pad_token_id": tokenizer.pad_id}


def write_tokenizer(folder: str, tokenizer: Tokenizer | HFTokenizer, max_len: int) -> dict[str, Any]:
  """tokenizer.json + tokenizer_config.json; returns the special ids config.json / generation_config need."""
  if isinstance(tokenizer, HFTokenizer):
    return _write_hf_tokenizer(folder, tokenizer)
  tokenizer_json(tokenizer).save(os.path.join(folder, "tokenizer.json"))
  eot, pad = _role_spelling(tokenizer, "<|endoftext|>"), _role_spelling(tokenizer, "<|pad|>")
  im_start, im_end = _role_spelling(tokenizer, "<|im_start|>"), _role_spelling(tokenizer, "<|im_end|>")
  chat = im_start is not None and im_end is not None
  eos = im_end if chat else eot
  config = {
      "tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": max_len, "bos_token": None,
      "eos_token": eos, "pad_token": pad or eot, "unk_token": None, "clean_up_tokenization_spaces": False,
      "added_tokens_decoder": {str(i): {"content": s, "lstrip": False, "normalized": False, "rstrip": False,
                                        "single_word": False, "special": True}
                               for s, i in tokenizer.special_tokens.items()},
  }
  if chat:
    config["chat_template"] = _CHATML.replace("<|im_start|>", im_start).replace("<|im_end|>", im_end)
  with open(os.path.join(folder, "tokenizer_config.json"), "w", encoding="utf-8") as f:
    json.dump(config, f, indent=2, ensure_ascii=False)
  ids = lambda s: None if s is None else tokenizer.special_tokens[s]
  stops = list(dict.fromkeys(i for i in (ids(eos), ids(eot)) if i is not None))
  return {"bos_token_id": ids(eot), "eos_token_id": stops[0] if len(stops) == 1 else stops,
          "pad_token_id": ids(pad or eot)}
