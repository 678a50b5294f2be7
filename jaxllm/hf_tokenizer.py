"""A Hugging Face tokenizer folder, run by the `tokenizers` library exactly as transformers' fast tokenizer runs it.

Any `tokenizer.json` the library reads works: byte-level BPE (GPT-2, Qwen, Llama-3), SentencePiece-style BPE with
byte fallback and its normalizer / pre-tokenizer / decoder (Llama-2, Mistral, Gemma), added and special tokens
as the folder declares them. It has the interface of jaxllm's own tiktoken `Tokenizer` (encode, decode, named
ids, save), plus what the model's own chat template needs (`chat_template`, `template_tokens`, `encode_marked`).

`encode` never produces an added token: text that spells "<|eot_id|>" or "<start_of_turn>" encodes as plain
text (transformers' `_encode_without_added_tokens`). A rendered chat goes through `encode_marked`, which reads
the template's control tokens as tokens and those the user typed (wrapped in MARK_START / MARK_END by
`chat_template_jinja.mark`) as text, as transformers' `apply_chat_template(..., sanitize_control_tokens=True)`.

On disk the folder is kept as it came (tokenizer.json, tokenizer_config.json, special_tokens_map.json,
chat_template.jinja, generation_config.json): `save` writes the same files back, so an exported model carries
its own tokenizer and chat template.
"""
from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import tokenizers

TOKENIZER_FILE = "tokenizer.json"
CONFIG_FILE = "tokenizer_config.json"
# Copied through unchanged when present; generation_config.json only for its eos_token_id (stop ids).
EXTRA_FILES = ("special_tokens_map.json", "chat_template.jinja", "generation_config.json")
# The named special tokens transformers passes to a chat template (its special_tokens_map).
NAMED_TOKENS = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")
DOCUMENT_ENDS = ("<|endoftext|>", "<|end_of_text|>")
SUPPORTED_MODELS = ("BPE", "Unigram", "WordPiece", "WordLevel")
# Private-use characters around a control token the user typed (transformers uses the same two).
MARK_START, MARK_END = "\U000f0000", "\U000f0001"


def _spelling(value: Any) -> str | None:
  return value.get("content") if isinstance(value, dict) else value


class HFTokenizer:
  """A `tokenizers.Tokenizer` with the folder's config: named tokens, chat template, generation stop ids."""

  def __init__(self, name: str, files: dict[str, str]):
    """`files`: file name -> text, as read from the folder (tokenizer.json and tokenizer_config.json at least)."""
    self.name, self.files = name, dict(files)
    spec = json.loads(files[TOKENIZER_FILE])
    kind = (spec.get("model") or {}).get("type")
    if kind not in SUPPORTED_MODELS:
      raise ValueError(f"{name}/{TOKENIZER_FILE}: tokenizer model type {kind!r} is not supported "
                       f"(supported: {', '.join(SUPPORTED_MODELS)})")
    try:
      self.hf = tokenizers.Tokenizer.from_str(files[TOKENIZER_FILE])
    except Exception as e:  # the Rust side raises a plain Exception naming the bad field
      raise ValueError(f"{name}/{TOKENIZER_FILE}: the tokenizers library cannot read it: {e}") from None
    self.hf.encode_special_tokens = False
    self.config = json.loads(files.get(CONFIG_FILE, "{}"))
    legacy = json.loads(files.get("special_tokens_map.json", "{}"))
    added = spec.get("added_tokens") or []
    self.added_tokens = {t["content"]: t["id"] for t in added}
    self._special_tokens = {t["content"]: t["id"] for t in added if t.get("special")}
    self.named = {}  # bos_token -> "<s>", ...: what a chat template sees
    for key in NAMED_TOKENS:
      token = _spelling(self.config.get(key, legacy.get(key)))
      if token is not None:
        self.named[key] = token
    self.chat_template = self._read_template()
    generation = json.loads(files.get("generation_config.json", "{}"))
    eos = generation.get("eos_token_id")
    self.generation_eos_ids = tuple(eos if isinstance(eos, list) else [] if eos is None else [eos])
    self._added_ids = set(self.added_tokens.values())
    self._n_vocab = max(self.hf.get_vocab(with_added_tokens=True).values()) + 1
    self._newline = self.encode("\n")

  def _read_template(self) -> str | None:
    if "chat_template.jinja" in self.files:
      return self.files["chat_template.jinja"]
    template = self.config.get("chat_template")
    if isinstance(template, list):  # named templates: [{"name": "default", "template": ...}, {"name": "tool_use"...}]
      by_name = {t["name"]: t["template"] for t in template}
      template = by_name.get("default", next(iter(by_name.values()), None))
    return template

  @classmethod
  def load(cls, path: str) -> HFTokenizer:
    folder = path if os.path.isdir(path) else os.path.dirname(path)
    if not os.path.isfile(os.path.join(folder, TOKENIZER_FILE)):
      found = sorted(n for n in os.listdir(folder) if n.startswith("tokenizer") or n.endswith(".model")) \
          if os.path.isdir(folder) else []
      raise FileNotFoundError(f"{folder}: no {TOKENIZER_FILE} (found: {found or 'no tokenizer files'}); only "
                              "fast-tokenizer folders are supported (a SentencePiece tokenizer.model alone is not: "
                              "save it once with transformers' AutoTokenizer to get tokenizer.json)")
    files = {}
    for name in (TOKENIZER_FILE, CONFIG_FILE, *EXTRA_FILES):
      file = os.path.join(folder, name)
      if os.path.isfile(file):
        with open(file, encoding="utf-8") as f:
          files[name] = f.read()
    try:
      return cls(os.path.basename(os.path.normpath(folder)) or "hf", files)
    except (json.JSONDecodeError, KeyError, TypeError) as e:
      raise ValueError(f"{folder}: not a tokenizer folder ({type(e).__name__}: {e})") from None

  def save(self, folder: str) -> list[str]:
    """The folder's files, as they were read; returns their names."""
    os.makedirs(folder, exist_ok=True)
    for name, text in self.files.items():
      with open(os.path.join(folder, name), "w", encoding="utf-8") as f:
        f.write(text)
    return sorted(self.files)

  def __repr__(self) -> str:
    return f"HFTokenizer({self.name!r}, n_vocab={self.n_vocab}, special={list(self._special_tokens)})"

  # ------------------------------------------------------------------------------------------------- text

  def encode(self, text: str) -> list[int]:
    """Ordinary text only: the normalizer, pre-tokenizer and model, no added-token matching."""
    ids = self.hf.encode(text, add_special_tokens=False).ids  # the library's fast path ...
    return ids if self._added_ids.isdisjoint(ids) else self._encode_plain(text)  # ... unless it matched one

  def _encode_plain(self, text: str) -> list[int]:
    hf = self.hf
    if hf.normalizer is not None:
      text = hf.normalizer.normalize_str(text)
    splits = [s for s, _ in hf.pre_tokenizer.pre_tokenize_str(text)] if hf.pre_tokenizer is not None else [text]
    return [t.id for split in splits for t in hf.model.tokenize(split)]

  def encode_with_specials(self, text: str) -> list[int]:
    """Text whose added-token spellings are those tokens (a rendered chat read back as a string)."""
    return self.hf.encode(text, add_special_tokens=False).ids

  def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
    encoded = self.hf.encode_batch(list(texts), add_special_tokens=False)  # in parallel, in Rust
    return [e.ids if self._added_ids.isdisjoint(e.ids) else self._encode_plain(t) for e, t in zip(encoded, texts)]

  def encode_marked(self, text: str, control: re.Pattern, first: bool = True) -> tuple[list[int], list[int]]:
    """(ids, start offset in `text` of each id) of a rendered chat: added tokens are read as tokens, except the
    `control` tokens the user typed, which come wrapped in MARK_START/MARK_END and are read as text.

    Each piece after the first is encoded after a newline that is then dropped, so a SentencePiece
    normalizer does not add the prefix space it adds at the start of a string (transformers does the same);
    `first=False` treats the first piece so too (text that continues a chat)."""
    ids, starts = [], []
    pos = 0
    marked = re.compile(f"{MARK_START}({control.pattern}){MARK_END}|[{MARK_START}{MARK_END}]")
    for match in [*marked.finditer(text), None]:
      end = match.start() if match else len(text)
      if end > pos:
        self._encode_piece(text[pos:end], pos, as_text=False, first=first, ids=ids, starts=starts)
        first = False
      if match is None:
        break
      if match.group(1):
        self._encode_piece(match.group(1), match.start(1), as_text=True, first=False, ids=ids, starts=starts)
        first = False
      pos = match.end()
    return ids, starts

  def _encode_piece(self, piece: str, base: int, *, as_text: bool, first: bool, ids: list, starts: list) -> None:
    if as_text:
      piece_ids = self._encode_plain("\n" + piece)
      n = len(self._newline)
      piece_ids = piece_ids[n:] if piece_ids[:n] == self._newline else self._encode_plain(piece)
      if self.added_tokens.get(piece) in piece_ids:
        raise ValueError(f"cannot encode {piece!r} as text: the tokenizer produces it from plain text")
      ids += piece_ids
      starts += [base] * len(piece_ids)
      return
    enc, shift = self.hf.encode(piece, add_special_tokens=False), 0
    if not first:
      with_newline = self.hf.encode("\n" + piece, add_special_tokens=False)
      n = len(self._newline)
      if with_newline.ids[:n] == self._newline:
        enc, shift = with_newline, n
    ids += enc.ids[shift:]
    starts += [base + max(o[0] - (1 if shift else 0), 0) for o in enc.offsets[shift:]]

  def decode(self, ids: Sequence[int] | np.ndarray) -> str:
    """Special tokens decode to their spelling."""
    return self.hf.decode(np.asarray(ids, dtype=np.int64).tolist(), skip_special_tokens=False)

  def decode_bytes(self, ids: Sequence[int] | np.ndarray) -> bytes:
    return self.decode(ids).encode("utf-8")

  # ------------------------------------------------------------------------------------------ named ids

  @property
  def special_tokens(self) -> dict[str, int]:
    return dict(self._special_tokens)

  @property
  def n_vocab(self) -> int:
    """Every id, added tokens included (max id + 1): the model's embedding size."""
    return self._n_vocab

  def token_id(self, token: str) -> int | None:
    return self.hf.token_to_id(token)

  def named_id(self, key: str) -> int | None:
    """The id of a named token (`eos_token`, `bos_token`, `pad_token`, ...), None if the folder names none."""
    token = self.named.get(key)
    return None if token is None else self.hf.token_to_id(token)

  def special_id(self, token: str) -> int:
    i = self.hf.token_to_id(token)
    if i is None:
      raise ValueError(f"{token!r} is not a token of tokenizer {self.name!r}; it has special tokens "
                       f"{list(self._special_tokens)}")
    return i

  @property
  def eot_id(self) -> int:
    """The end-of-document token that separates packed pretraining documents: <|endoftext|> (Qwen, GPT-2) or
    <|end_of_text|> (Llama-3) where the tokenizer has one (an instruct model's eos_token ends a turn), else the
    eos_token."""
    for token in DOCUMENT_ENDS:
      if token in self._special_tokens:
        return self._special_tokens[token]
    i = self.named_id("eos_token")
    if i is None:
      raise ValueError(f"tokenizer {self.name!r} names no eos_token in {CONFIG_FILE}")
    return i

  @property
  def pad_id(self) -> int:
    i = self.named_id("pad_token")
    return self.eot_id if i is None else i

  @property
  def im_start_id(self) -> int:
    return self.special_id("<|im_start|>")

  @property
  def im_end_id(self) -> int:
    return self.special_id("<|im_end|>")
