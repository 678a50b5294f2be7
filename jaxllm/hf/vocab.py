"""Tokenizers between Hugging Face and jaxllm: a byte-level BPE `tokenizer.json` (+ tokenizer_config.json) read
into a jaxllm Tokenizer (tiktoken inside), and a jaxllm Tokenizer written as those files."""
from __future__ import annotations

import json
import os
from typing import Any

import tokenizers

from jaxllm.tokenizer import Tokenizer, _unicode_to_byte


# tokenizers' ByteLevel pre-tokenizer with use_regex=True splits with GPT-2's pattern.
_GPT2_PAT_STR = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
# jaxllm's marker spellings -> the spellings other model families use for the same role, in preference order.
_MARKERS = {"<|endoftext|>": ("<|endoftext|>", "<|end_of_text|>"), "<|im_start|>": ("<|im_start|>",),
            "<|im_end|>": ("<|im_end|>",), "<|pad|>": ("<|pad|>",)}
_CHATML = ("{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + "
           "'<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}"
           "{% endif %}")


def _pat_str(pre: dict | None) -> str:
  """The single regex a byte-level pre-tokenizer splits with, as tiktoken's pat_str."""
  pre = pre or {}
  steps = pre.get("pretokenizers", []) if pre.get("type") == "Sequence" else [pre]
  kinds = [step.get("type") for step in steps]
  if kinds == ["ByteLevel"] and steps[0].get("use_regex", True) and not steps[0].get("add_prefix_space"):
    return _GPT2_PAT_STR
  if kinds == ["Split", "ByteLevel"]:
    split, byte_level = steps
    if (split.get("behavior") == "Isolated" and not split.get("invert") and "Regex" in split.get("pattern", {})
        and not byte_level.get("use_regex", True) and not byte_level.get("add_prefix_space")):
      return split["pattern"]["Regex"]
  raise ValueError(f"pre_tokenizer {kinds} is not supported: expected byte-level BPE splitting with one regex "
                   "(Split(Regex, Isolated) + ByteLevel(use_regex=False), or ByteLevel alone), no prefix space")


def _token_bytes(token: str, table: dict[str, int]) -> bytes:
  try:
    return bytes(table[c] for c in token)
  except KeyError:
    raise ValueError(f"vocab entry {token!r} is not a byte-level token (not GPT-2 bytes_to_unicode)") from None


def _check_merge_order(merges: list, ranks: dict[bytes, int], table: dict[str, int]) -> None:
  """tiktoken merges by the rank (= id) of the merged token; HF by position in `merges`. They agree when ids
  grow along the merge list and each merge's parts rank below its result: true of tiktoken conversions (Qwen2,
  Llama-3) and of tokenizers trained by `tokenizers`. A later merge repeating an earlier result ("a"+"bc" after
  "ab"+"c") is skipped, as jaxllm's own trainer does (tokenizer.mergeable_ranks)."""
  previous, seen = -1, set()
  for merge in merges:
    left, right = merge.split(" ", 1) if isinstance(merge, str) else merge
    a, b = _token_bytes(left, table), _token_bytes(right, table)
    if a + b in seen:
      continue
    rank = ranks.get(a + b)
    if rank is None or rank < previous or ranks.get(a, rank) >= rank or ranks.get(b, rank) >= rank:
      raise ValueError(f"merge {left!r} + {right!r}: merges are not in token-id order, so tiktoken cannot "
                       "reproduce this BPE")
    previous = rank
    seen.add(a + b)


def _special_spelling(value: Any) -> str | None:
  return value.get("content") if isinstance(value, dict) else value


def _aliases(specials: dict[str, int], tokenizer_config: dict) -> dict[str, str]:
  """jaxllm marker -> the model's own special token for that role, where the spellings differ."""
  found = {marker: next((s for s in names if s in specials), None) for marker, names in _MARKERS.items()}
  eos = _special_spelling(tokenizer_config.get("eos_token"))
  pad = _special_spelling(tokenizer_config.get("pad_token"))
  found["<|endoftext|>"] = found["<|endoftext|>"] or (eos if eos in specials else None)
  found["<|pad|>"] = found["<|pad|>"] or (pad if pad in specials else None) or found["<|endoftext|>"]
  return {marker: s for marker, s in found.items() if s is not None and s != marker}


def load_tokenizer(path: str) -> Tokenizer:
  """A byte-level BPE tokenizer.json (Qwen2 / Llama-3 style) as a jaxllm Tokenizer that encodes identically.

  Ranks are the BPE vocab ids; every added token becomes a tiktoken special token. jaxllm's markers map to the
  model's tokens: <|endoftext|> (or <|end_of_text|>, or eos_token), <|im_start|>, <|im_end|>, pad = pad_token
  else the end-of-text token. A model without <|im_start|>/<|im_end|> (Llama-3: <|start_header_id|> ...
  <|eot_id|>) has no ChatML markers: rendering a chat with it raises a ValueError naming the missing token.
  An NFC normalizer (Qwen2) is not applied: encodings agree on NFC text, which is nearly all text.
  """
  file = os.path.join(path, "tokenizer.json")
  if not os.path.isfile(file):
    raise FileNotFoundError(f"{path}: no tokenizer.json (only byte-level BPE tokenizer.json is supported)")
  with open(file, encoding="utf-8") as f:
    spec = json.load(f)
  model = spec.get("model", {})
  if model.get("type") != "BPE" or model.get("byte_fallback") or model.get("continuing_subword_prefix") \
      or model.get("end_of_word_suffix") or model.get("dropout"):
    raise ValueError(f"{file}: only plain byte-level BPE is supported (model.type BPE, no byte_fallback, "
                     f"subword prefix/suffix or dropout); got {model.get('type')!r}")
  normalizer = (spec.get("normalizer") or {}).get("type")
  if normalizer not in (None, "NFC"):
    raise ValueError(f"{file}: normalizer {normalizer!r} is not supported")
  pat_str = _pat_str(spec.get("pre_tokenizer"))
  table = _unicode_to_byte()
  ranks = {_token_bytes(token, table): i for token, i in model["vocab"].items()}
  missing = [b for b in range(256) if bytes([b]) not in ranks]
  if missing:
    raise ValueError(f"{file}: the vocab lacks single-byte tokens for bytes {missing[:8]}: not byte-level BPE")
  _check_merge_order(model.get("merges", []), ranks, table)
  specials = {t["content"]: t["id"] for t in spec.get("added_tokens", [])}
  for content, i in specials.items():  # an added token that is also a vocab entry is split out as special
    if ranks.get(content.encode("utf-8")) == i:
      del ranks[content.encode("utf-8")]
  config_file = os.path.join(path, "tokenizer_config.json")
  tokenizer_config = {}
  if os.path.isfile(config_file):
    with open(config_file, encoding="utf-8") as f:
      tokenizer_config = json.load(f)
  name = os.path.basename(os.path.normpath(path)) or "hf"
  return Tokenizer(name, ranks, specials, pat_str, aliases=_aliases(specials, tokenizer_config))


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
  (each token's last tiktoken merge), its pre-split regex, and its special tokens at their ids."""
  ranks, specials = tokenizer.mergeable_ranks, tokenizer.special_tokens
  to_char = {b: c for c, b in _unicode_to_byte().items()}
  text = lambda bs: "".join(to_char[b] for b in bs)
  merges = []
  for token, rank in sorted(ranks.items(), key=lambda kv: kv[1]):
    if len(token) > 1:
      parts = _bpe_parts(ranks, token, rank)
      if len(parts) == 2:  # else reachable only as a whole piece, which ignore_merges covers
        merges.append((text(parts[0]), text(parts[1])))
  hf = tokenizers.Tokenizer(tokenizers.models.BPE(vocab={text(t): r for t, r in ranks.items()}, merges=merges,
                                                   ignore_merges=True))
  hf.pre_tokenizer = tokenizers.pre_tokenizers.Sequence([
      tokenizers.pre_tokenizers.Split(tokenizers.Regex(tokenizer.pat_str), behavior="isolated"),
      tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
  hf.decoder = tokenizers.decoders.ByteLevel()
  hf.add_special_tokens([tokenizers.AddedToken(s, special=True, normalized=False) for s in specials])
  wrong = {s: (hf.token_to_id(s), i) for s, i in specials.items() if hf.token_to_id(s) != i}
  if wrong:
    raise ValueError(f"special token ids are not contiguous after the ranks, cannot rebuild them: {wrong}")
  return hf


def _role_spelling(tokenizer: Tokenizer, marker: str) -> str | None:
  try:
    i = tokenizer.special_id(marker)
  except ValueError:
    return None
  return next(s for s, j in tokenizer.special_tokens.items() if j == i)


def write_tokenizer(folder: str, tokenizer: Tokenizer, max_len: int) -> dict[str, Any]:
  """tokenizer.json + tokenizer_config.json; returns the special ids config.json / generation_config need."""
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
