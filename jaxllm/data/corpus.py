"""The text a tokenizer is trained on (the built-in task world, or data.name's texts), and the training: what
the tokenizer stage saves, and what runtime builds when a run names no tokenizer."""
from __future__ import annotations

import ml_collections

from jaxllm.data import sources, synthetic, text
from jaxllm.tokenizer import Tokenizer, train_bpe


def _builtin(config: ml_collections.ConfigDict) -> list[str]:
  """The task world's prose plus its chat turns, so role names and answer formats get their own tokens."""
  n = config.tokenizer.train_docs
  docs = synthetic.pretrain_documents(config.seed, "train", n)
  for messages in synthetic.sft_examples(config.seed, "train", max(n // 4, 1)):
    docs.append("\n".join(f"{m['role']}\n{m['content']}" for m in messages))
  return docs


def corpus(config: ml_collections.ConfigDict) -> list[str]:
  if not config.data.name:
    return _builtin(config)
  texts, budget = [], config.tokenizer.max_chars
  if config.data.streaming:  # a corpus larger than memory: read only the first max_chars characters of it
    open_stream, text_of, _, _ = sources.text_stream(config.data)
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


def train_tokenizer(config: ml_collections.ConfigDict) -> Tokenizer:
  return train_bpe(corpus(config), config.tokenizer.vocab_size)
