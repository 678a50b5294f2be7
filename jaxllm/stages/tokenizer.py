"""Stage `tokenizer`: train a byte-level BPE on the configured corpus and save it to workdir/tokenizer.

  python run.py --config=configs/tokenizer.py --config.workdir=W   # later stages: --config.tokenizer.path=W
"""
from __future__ import annotations

import json
import os
import time

import ml_collections

from jaxllm import runtime
from jaxllm.data import sources, synthetic, text
from jaxllm.tokenizer import Tokenizer, train_bpe


def _builtin_corpus(config: ml_collections.ConfigDict) -> list[str]:
  """The task world's prose plus its chat turns, so role names and answer formats get their own tokens."""
  n = config.tokenizer.train_docs
  docs = synthetic.pretrain_documents(config.seed, "train", n)
  for messages in synthetic.sft_examples(config.seed, "train", max(n // 4, 1)):
    docs.append("\n".join(f"{m['role']}\n{m['content']}" for m in messages))
  return docs


def corpus(config: ml_collections.ConfigDict) -> list[str]:
  if not config.data.name:
    return _builtin_corpus(config)
  texts, budget = [], config.tokenizer.max_chars
  if config.data.streaming:  # a corpus larger than memory: read only the first max_chars characters of it
    open_stream, text_of, _ = sources.text_stream(config.data)
    rows = (text_of(row) for row in open_stream())
    docs = (t for t in rows if t)
  else:
    docs = text.load_texts(config.data)
  for t in docs:
    texts.append(t[:budget])
    budget -= len(texts[-1])
    if budget <= 0:
      break
  return texts


def build(config: ml_collections.ConfigDict) -> Tokenizer:
  return train_bpe(corpus(config), config.tokenizer.vocab_size)


def run(config: ml_collections.ConfigDict) -> dict:
  workdir = runtime.default_workdir(config)
  start = time.perf_counter()
  tokenizer = build(config)
  seconds = time.perf_counter() - start
  os.makedirs(workdir, exist_ok=True)
  tokenizer.save(os.path.join(workdir, "tokenizer"))
  with open(os.path.join(workdir, "config.json"), "w") as f:
    json.dump({**config.to_dict(), "workdir": workdir}, f, indent=2, sort_keys=True)
  sample = "Mia has 7 apples. 判断这条评论 <|im_end|> 🙂"
  ids = tokenizer.encode(sample)
  print(f"tokenizer: {tokenizer.n_vocab} tokens, trained in {seconds:.1f}s; {sample!r} -> {len(ids)} ids")
  return {"n_vocab": tokenizer.n_vocab, "train_seconds": seconds}
