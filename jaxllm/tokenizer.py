"""Byte-level BPE tokenizer: trained with Hugging Face `tokenizers` (Rust, fast), used through `tiktoken`.

Training runs GPT-2 style byte-level BPE over GPT-4's pre-split regex; the learnt merges are then rewritten as
tiktoken mergeable ranks (the 256 single bytes at rank = byte value, merged tokens after them in merge order),
with the special tokens given the ids right after the last rank. On disk a tokenizer is a folder holding

  tokenizer.tiktoken       one `<base64 token bytes> <rank>` line per rank (tiktoken's own format)
  tokenizer_config.json    {"name": ..., "pat_str": ..., "special_tokens": {spelling: id}}

`encode` never produces a control token: "<|im_end|>" typed in text is plain bytes. Control tokens are
inserted by id (`eot_id`, `im_end_id`, ...), as `chat_template` does.

An imported Hugging Face tokenizer folder (tokenizer.json) is the other back end, `hf_tokenizer.HFTokenizer`,
with the same interface; `Tokenizer.load` returns whichever the folder holds.
"""
from __future__ import annotations

import base64
import functools
import json
import os
from collections.abc import Iterable, Iterator, Sequence

import numpy as np
import tiktoken
import tokenizers
from tokenizers import models, pre_tokenizers, trainers

SPECIAL_TOKENS: tuple[str, ...] = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|pad|>")

# GPT-4's cl100k pre-split regex in its original form. tiktoken now ships a possessive rewrite
# (`\p{N}{1,3}+`, `\s++$`, ...), but Oniguruma, which `tokenizers` uses, reads `{1,3}+` as "one or more
# groups of 1-3 digits"; this form splits text identically in both engines, so training sees the same
# pieces that encoding does.
PAT_STR = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
           r"""|\s*[\r\n]+|\s+(?!\S)|\s+""")

RANKS_FILE = "tokenizer.tiktoken"
CONFIG_FILE = "tokenizer_config.json"


class Tokenizer:
  """Wraps a tiktoken.Encoding plus named special tokens."""

  def __init__(self, name: str, mergeable_ranks: dict[bytes, int], special_tokens: dict[str, int],
               pat_str: str = PAT_STR, aliases: dict[str, str] | None = None):
    """`aliases` maps a jaxllm marker to the spelling an imported model uses for the same role, e.g.
    {"<|pad|>": "<|endoftext|>"} for Qwen2 or {"<|endoftext|>": "<|end_of_text|>"} for Llama 3."""
    ranks = set(mergeable_ranks.values())
    if len(ranks) != len(mergeable_ranks):
      raise ValueError(f"tokenizer {name!r}: two byte strings share a rank")
    clashes = sorted(t for t, i in special_tokens.items() if i in ranks)
    if clashes or len(set(special_tokens.values())) != len(special_tokens):
      raise ValueError(f"tokenizer {name!r}: special token ids must be distinct and outside the ranks; "
                       f"got {special_tokens} ({clashes} reuse a rank)")
    self.encoding = tiktoken.Encoding(name, pat_str=pat_str, mergeable_ranks=mergeable_ranks,
                                      special_tokens=special_tokens)
    # Kept for save(): tiktoken.Encoding has no public accessor for its ranks.
    self._mergeable_ranks = mergeable_ranks
    self._special_tokens = dict(sorted(special_tokens.items(), key=lambda kv: kv[1]))
    self._pat_str = pat_str
    self._aliases = dict(aliases or {})
    missing = sorted(v for v in self._aliases.values() if v not in special_tokens)
    if missing:
      raise ValueError(f"tokenizer {name!r}: aliases point at unknown special tokens {missing}")

  @property
  def mergeable_ranks(self) -> dict[bytes, int]:
    return self._mergeable_ranks

  @property
  def special_tokens(self) -> dict[str, int]:
    return self._special_tokens

  @property
  def pat_str(self) -> str:
    return self._pat_str

  @property
  def aliases(self) -> dict[str, str]:
    return self._aliases

  def __repr__(self) -> str:
    return f"Tokenizer({self.encoding.name!r}, n_vocab={self.n_vocab}, special={list(self._special_tokens)})"

  def encode(self, text: str) -> list[int]:
    """Ordinary text only: a special token's spelling in `text` is encoded as its bytes."""
    return self.encoding.encode_ordinary(text)

  def encode_with_specials(self, text: str) -> list[int]:
    """Text whose special-token spellings are those tokens (a rendered chat read back as a string)."""
    return self.encoding.encode(text, allowed_special="all")

  @property
  def name(self) -> str:
    return self.encoding.name

  def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
    return self.encoding.encode_ordinary_batch(list(texts))

  def decode(self, ids: Sequence[int] | np.ndarray) -> str:
    """Special tokens decode to their spelling; a cut mid-character decodes to U+FFFD."""
    return self.encoding.decode(_int_list(ids))

  def decode_bytes(self, ids: Sequence[int] | np.ndarray) -> bytes:
    return self.encoding.decode_bytes(_int_list(ids))

  def special_id(self, token: str) -> int:
    token = self._aliases.get(token, token)
    if token not in self._special_tokens:
      raise ValueError(f"{token!r} is not a special token of tokenizer {self.encoding.name!r}; "
                       f"it has {list(self._special_tokens)}")
    return self._special_tokens[token]

  @property
  def n_vocab(self) -> int:
    """Every id, specials included (max id + 1): the model's embedding size."""
    return self.encoding.n_vocab

  @property
  def eot_id(self) -> int:
    return self.special_id("<|endoftext|>")

  @property
  def pad_id(self) -> int:
    return self.special_id("<|pad|>")

  @property
  def im_start_id(self) -> int:
    return self.special_id("<|im_start|>")

  @property
  def im_end_id(self) -> int:
    return self.special_id("<|im_end|>")

  def save(self, folder: str) -> None:
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, RANKS_FILE), "wb") as f:
      for token, rank in sorted(self._mergeable_ranks.items(), key=lambda kv: kv[1]):
        f.write(base64.b64encode(token) + b" %d\n" % rank)
    config = {"name": self.encoding.name, "pat_str": self._pat_str, "special_tokens": self._special_tokens,
              "aliases": self._aliases}
    with open(os.path.join(folder, CONFIG_FILE), "w", encoding="utf-8") as f:
      json.dump(config, f, indent=2, ensure_ascii=False)

  @classmethod
  def load(cls, path: str) -> Tokenizer:
    """`path`: a folder written by save(), a workdir holding one as tokenizer/, or a ranks file; or a Hugging
    Face tokenizer folder (tokenizer.json, no ranks file), loaded as an `HFTokenizer`.

    A ranks file with no tokenizer_config.json beside it (e.g. a downloaded *.tiktoken) gets PAT_STR and the
    four SPECIAL_TOKENS at the ids after its last rank.
    """
    for folder in (path, os.path.join(path, "tokenizer")):
      if os.path.isfile(os.path.join(folder, "tokenizer.json")) and not os.path.isfile(
          os.path.join(folder, RANKS_FILE)):
        from jaxllm.hf_tokenizer import HFTokenizer  # local: hf_tokenizer is the other back end
        return HFTokenizer.load(folder)
    ranks_path = _find_ranks(path)
    ranks = _read_ranks(ranks_path)
    config_path = os.path.join(os.path.dirname(ranks_path), CONFIG_FILE)
    if not os.path.exists(config_path):
      name = os.path.splitext(os.path.basename(ranks_path))[0]
      first = max(ranks.values()) + 1
      return cls(name, ranks, {t: first + i for i, t in enumerate(SPECIAL_TOKENS)})
    try:
      with open(config_path, encoding="utf-8") as f:
        config = json.load(f)
      return cls(config["name"], ranks, config["special_tokens"], config["pat_str"], config.get("aliases"))
    except (ValueError, KeyError, TypeError, AttributeError) as e:
      raise ValueError(f"{config_path}: not a tokenizer config ({type(e).__name__}: {e})") from e


def _int_list(ids: Sequence[int] | np.ndarray) -> list[int]:
  # tiktoken's Rust side wants Python ints; this also accepts numpy and jax arrays.
  return np.asarray(ids, dtype=np.int64).tolist()


def _find_ranks(path: str) -> str:
  if os.path.isfile(path):
    return path
  for candidate in (os.path.join(path, RANKS_FILE), os.path.join(path, "tokenizer", RANKS_FILE)):
    if os.path.isfile(candidate):
      return candidate
  what = "folder has neither" if os.path.isdir(path) else "path does not exist; expected a folder with"
  raise FileNotFoundError(f"no tokenizer at {path!r}: {what} {RANKS_FILE} nor tokenizer/{RANKS_FILE}")


def _read_ranks(path: str) -> dict[bytes, int]:
  ranks = {}
  with open(path, "rb") as f:
    for line_no, line in enumerate(f, 1):
      if not line.strip():
        continue
      try:
        token, rank = line.split()
        ranks[base64.b64decode(token, validate=True)] = int(rank)
      except ValueError as e:  # binascii.Error is a ValueError too
        raise ValueError(f"{path}:{line_no}: expected '<base64 token> <rank>', got {line[:80]!r}") from e
  if not ranks:
    raise ValueError(f"{path}: holds no ranks")
  return ranks


@functools.cache
def _unicode_to_byte() -> dict[str, int]:
  """Inverse of GPT-2's bytes_to_unicode: the printable stand-in character of each byte, back to the byte."""
  printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
  chars, extra = {}, 0
  for b in range(256):
    if b in printable:
      chars[chr(b)] = b
    else:  # whitespace and control bytes are shifted past 255 so that every stand-in is visible
      chars[chr(256 + extra)] = b
      extra += 1
  return chars


def _token_bytes(token: str) -> bytes:
  """A byte-level token string of `tokenizers` (e.g. "Ġthe") as the bytes it stands for (b" the")."""
  table = _unicode_to_byte()
  return bytes(table[c] for c in token)


def _train_hf(texts: Iterable[str], vocab_size: int, min_frequency: int) -> tokenizers.Tokenizer:
  """Byte-level BPE over PAT_STR pieces; `vocab_size` counts the 256 bytes plus merges."""
  hf = tokenizers.Tokenizer(models.BPE())
  hf.pre_tokenizer = pre_tokenizers.Sequence([
      pre_tokenizers.Split(tokenizers.Regex(PAT_STR), behavior="isolated"),
      pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
  ])
  trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency, show_progress=False,
                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), special_tokens=[])
  hf.train_from_iterator(texts, trainer)
  return hf


def _mergeable_ranks(hf: tokenizers.Tokenizer) -> dict[bytes, int]:
  """Bytes at rank = byte value, then each merge's result in merge order (tiktoken merges lowest rank first).

  The trainer can record two merges with the same result ("ab"+"c", "a"+"bc"); the first one keeps the rank.
  """
  ranks = {bytes([b]): b for b in range(256)}
  for left, right in json.loads(hf.to_str())["model"]["merges"]:
    ranks.setdefault(_token_bytes(left) + _token_bytes(right), len(ranks))
  return ranks


def _from_hf(hf: tokenizers.Tokenizer, special_tokens: Sequence[str], name: str) -> Tokenizer:
  ranks = _mergeable_ranks(hf)
  return Tokenizer(name, ranks, {t: len(ranks) + i for i, t in enumerate(special_tokens)})


def train_bpe(texts: Iterable[str], vocab_size: int, special_tokens: Sequence[str] = SPECIAL_TOKENS,
              name: str = "jaxllm", *, min_frequency: int = 2) -> Tokenizer:
  """Train on `texts` (any iterable; read once). `vocab_size` counts everything: 256 bytes + merges + specials.

  Merging stops early when no pair occurs `min_frequency` times (a tiny corpus runs out of pairs); the
  vocabulary is then smaller than asked, and `n_vocab` says how large it really is.
  """
  if isinstance(texts, str):  # iterating a str would train on single characters and learn nothing
    raise TypeError("train_bpe: texts must be an iterable of strings, not one str; wrap it in a list")
  if len(set(special_tokens)) != len(special_tokens) or not all(special_tokens):
    raise ValueError(f"special_tokens must be distinct and non-empty, got {special_tokens}")
  if vocab_size < 256 + len(special_tokens):
    raise ValueError(f"vocab_size={vocab_size} is too small: it counts 256 byte tokens and "
                     f"{len(special_tokens)} special tokens, so it must be at least {256 + len(special_tokens)}")
  chars = 0

  def counted() -> Iterator[str]:
    nonlocal chars
    for text in texts:
      chars += len(text)
      yield text

  hf = _train_hf(counted(), vocab_size - len(special_tokens), min_frequency)
  if chars == 0:
    raise ValueError("train_bpe: the corpus is empty (no texts, or only empty ones)")
  return _from_hf(hf, special_tokens, name)
