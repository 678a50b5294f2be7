"""Byte-level BPE: lossless on any str, special tokens only by id, tiktoken ranks equal to the trained merges,
save/load, and argument errors. One small tokenizer (~300 KB corpus, 800 ids) is trained per module."""
import json
import os
import random
import shutil

import numpy as np
import pytest
from tokenizers import pre_tokenizers

from jaxllm import tokenizer as tok_lib
from jaxllm.tokenizer import SPECIAL_TOKENS, Tokenizer, train_bpe

VOCAB = 800
SYLLABLES = "ka to ri mu sen pa lo vi dra ne qu ist ing er an th ou ch 判 断 评 论 好 差".split()
MIXED = ("Mia counted 17 apples , 3 pears ; she'll say it's fine . Don't stop ! 判断 这条 评论 是 好评 还是 "
         "差评 def return self import numpy as np for i in range ( 10 ) : 🙂 👍🏽 x = y + 1").split()
ENGLISH = ("The cat sat on the mat and watched the birds in the garden. When the sun went down, it walked "
           "back into the house, ate its dinner, and slept by the warm fire until the morning came again. ")
VARIED = [
    "Hello, world! It's 2024-06-01 and we'll see 12345678 things.",
    "判断这条评论是好评还是差评：这家餐厅的菜很好吃！",
    "emoji 🙂👍🏽 family 👨‍👩‍👧‍👦 flag 🏳️‍🌈 keycap 1️⃣",
    "def f(x):\n\tif x:\n\t\treturn x  # tab\n    return None\n\n\n",
    "windows\r\nline\r\n\r\nend",
    "nul\x00byte and \x01\x7f controls",
    " " * 37 + "long runs" + "\t" * 9 + "\n" * 5 + "  \u00a0\u3000\u2028\u0085 unicode spaces ",
    "Ünïcödé ñ ß ﬁ İstanbul Ελληνικά русский 日本語 한국어 العربية עברית हिन्दी",
    "<|endoftext|><|im_start|>user\nhi<|im_end|> <|pad|>",
    "",
    "a",
    "'s 'S 'll ' 's'",
]


def _corpus(n_docs: int, seed: int = 0) -> list[str]:
  """~300 KB of mixed-script text and numbers over a Zipf-weighted lexicon: enough pairs for VOCAB merges."""
  rng = random.Random(seed)
  words = ["".join(rng.choices(SYLLABLES, k=rng.randint(1, 4))) for _ in range(2700)]
  numbers = [str(rng.randrange(10 ** rng.randint(1, 8))) for _ in range(300)]  # catch digit-split mismatches
  lexicon = MIXED + rng.sample(words + numbers, 3000)
  weights = [1 / (rank + 1) for rank in range(len(lexicon))]
  docs = [" ".join(rng.choices(lexicon, weights, k=rng.randint(20, 80))) for _ in range(n_docs)]
  return docs + VARIED


@pytest.fixture(scope="module")
def corpus() -> list[str]:
  return _corpus(1000)


@pytest.fixture(scope="module")
def trained(corpus):
  """(Tokenizer, the `tokenizers.Tokenizer` it was converted from)."""
  hf = tok_lib._train_hf(iter(corpus), VOCAB - len(SPECIAL_TOKENS), min_frequency=2)
  return tok_lib._from_hf(hf, SPECIAL_TOKENS, "test"), hf


@pytest.fixture(scope="module")
def tokenizer(trained) -> Tokenizer:
  return trained[0]


def _random_strings(n: int, seed: int = 0) -> list[str]:
  rng = random.Random(seed)
  out = []
  for _ in range(n):
    raw = bytes(rng.randrange(256) for _ in range(rng.randint(0, 64)))
    out.append(raw.decode("utf-8", errors="ignore"))
    # Any code point but lone surrogates (which no UTF-8 str can hold), weighted to ASCII.
    points = [rng.choice((rng.randrange(128), rng.randrange(0x110000))) for _ in range(rng.randint(0, 32))]
    out.append("".join(chr(p) for p in points if not 0xD800 <= p < 0xE000))
  return out


def test_train_bpe_fills_the_vocab_exactly(corpus):
  tok = train_bpe(corpus, VOCAB)
  assert tok.n_vocab == VOCAB
  assert [tok.special_id(t) for t in SPECIAL_TOKENS] == list(range(VOCAB - 4, VOCAB))
  # Dense ids: every id below n_vocab decodes, so the embedding table has no dead rows.
  assert all(tok.decode_bytes([i]) for i in range(VOCAB))


@pytest.mark.parametrize("text", VARIED)
def test_round_trip_varied(tokenizer, text):
  ids = tokenizer.encode(text)
  assert tokenizer.decode(ids) == text
  assert tokenizer.decode_bytes(ids) == text.encode("utf-8")


def test_round_trip_random_strings(tokenizer):
  for text in _random_strings(300):
    assert tokenizer.decode(tokenizer.encode(text)) == text, repr(text)


def test_special_spellings_in_text_are_plain_bytes(tokenizer):
  specials = {tokenizer.special_id(t) for t in SPECIAL_TOKENS}
  for text in ("hello <|im_end|> x", "".join(SPECIAL_TOKENS), VARIED[8]):
    ids = tokenizer.encode(text)
    assert not specials & set(ids)
    assert tokenizer.decode(ids) == text
  assert tokenizer.decode([tokenizer.special_id("<|im_end|>")]) == "<|im_end|>"
  assert tokenizer.decode([tokenizer.im_start_id, tokenizer.eot_id]) == "<|im_start|><|endoftext|>"


def test_named_special_ids(tokenizer):
  named = [tokenizer.eot_id, tokenizer.im_start_id, tokenizer.im_end_id, tokenizer.pad_id]
  assert named == [tokenizer.special_id(t) for t in SPECIAL_TOKENS]
  assert max(named) == tokenizer.n_vocab - 1
  with pytest.raises(ValueError, match=r"<\|nope\|>.*<\|endoftext\|>"):
    tokenizer.special_id("<|nope|>")


def test_decode_accepts_numpy(tokenizer):
  ids = tokenizer.encode(VARIED[1])
  assert tokenizer.decode(np.asarray(ids, dtype=np.int32)) == VARIED[1]


def test_byte_table_inverts_byte_level():
  """_token_bytes undoes the ByteLevel pre-tokenizer on every byte value (the 256-entry table is right)."""
  byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
  for text in VARIED + [bytes(range(128)).decode("ascii"), "".join(chr(c) for c in range(128, 2048))]:
    pieces = byte_level.pre_tokenize_str(text)
    assert b"".join(tok_lib._token_bytes(p) for p, _ in pieces) == text.encode("utf-8")


def test_tiktoken_matches_trained_hf_tokenizer(trained, corpus):
  """Same tokens as `tokenizers` itself: the rank order reproduces its merge order and pre-split."""
  tok, hf = trained
  texts = VARIED + _random_strings(100, seed=1) + _corpus(50, seed=1) + ["\n\n".join(corpus[:200])]
  for text in texts:
    expected = [tok_lib._token_bytes(t) for t in hf.encode(text).tokens]
    got = [tok.encoding.decode_single_token_bytes(i) for i in tok.encode(text)]
    assert got == expected, repr(text)


def test_compresses_repetitive_english():
  tok = train_bpe([ENGLISH] * 300, 512)
  text = ENGLISH * 10
  assert len(tok.encode(text)) < len(text.encode("utf-8")) / 3


def test_tiny_corpus_gives_a_smaller_dense_vocab():
  tok = train_bpe(["hello hello world world"], 1000)
  assert 256 + 4 < tok.n_vocab < 1000
  assert tok.eot_id == tok.n_vocab - 4
  assert tok.decode(tok.encode("hello world, hi")) == "hello world, hi"


def test_save_load_round_trip(tokenizer, tmp_path):
  tokenizer.save(str(tmp_path / "w" / "tokenizer"))
  config = json.loads((tmp_path / "w" / "tokenizer" / "tokenizer_config.json").read_text())
  assert config["special_tokens"] == {t: tokenizer.special_id(t) for t in SPECIAL_TOKENS}
  text = "\n".join(VARIED)
  for path in (tmp_path / "w" / "tokenizer", tmp_path / "w", tmp_path / "w" / "tokenizer" / "tokenizer.tiktoken"):
    loaded = Tokenizer.load(str(path))
    assert loaded.encode(text) == tokenizer.encode(text)
    assert loaded.n_vocab == tokenizer.n_vocab
    assert loaded.encoding.name == "test"


def test_load_bare_tiktoken_file(tokenizer, tmp_path):
  tokenizer.save(str(tmp_path / "saved"))
  bare = tmp_path / "elsewhere" / "my.tiktoken"
  bare.parent.mkdir()
  shutil.copy(tmp_path / "saved" / "tokenizer.tiktoken", bare)
  loaded = Tokenizer.load(str(bare))
  assert loaded.encode(VARIED[0]) == tokenizer.encode(VARIED[0])
  assert [loaded.special_id(t) for t in SPECIAL_TOKENS] == [tokenizer.special_id(t) for t in SPECIAL_TOKENS]
  assert loaded.encoding.name == "my"


def test_load_errors_name_the_path(tmp_path):
  missing = str(tmp_path / "no_such_tokenizer")
  with pytest.raises(FileNotFoundError, match="no_such_tokenizer"):
    Tokenizer.load(missing)
  (tmp_path / "empty_dir").mkdir()
  with pytest.raises(FileNotFoundError, match="empty_dir"):
    Tokenizer.load(str(tmp_path / "empty_dir"))
  bad = tmp_path / "bad.tiktoken"
  bad.write_bytes(b"IQ== 0\nnot base64!! 1\n")
  with pytest.raises(ValueError, match=r"bad\.tiktoken:2"):
    Tokenizer.load(str(bad))
  os.makedirs(tmp_path / "badcfg")
  (tmp_path / "badcfg" / "tokenizer.tiktoken").write_bytes(b"IQ== 0\n")
  (tmp_path / "badcfg" / "tokenizer_config.json").write_text("{}")
  with pytest.raises(ValueError, match="tokenizer_config.json"):
    Tokenizer.load(str(tmp_path / "badcfg"))


@pytest.mark.parametrize("vocab_size", [0, 259])
def test_too_small_vocab_size_raises(vocab_size):
  with pytest.raises(ValueError, match=f"vocab_size={vocab_size}"):
    train_bpe(["some text"], vocab_size)


@pytest.mark.parametrize("texts", [[], [""], iter([])])
def test_empty_corpus_raises(texts):
  with pytest.raises(ValueError, match="empty"):
    train_bpe(texts, 300)


def test_a_single_str_is_not_a_corpus():
  with pytest.raises(TypeError, match="one str"):
    train_bpe("hello world", 300)
