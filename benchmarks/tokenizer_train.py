"""Time `train_bpe` on ~10 MB of text with an 8k vocabulary (the target is under 120 s on 2 CPU cores).

  python benchmarks/tokenizer_train.py [--mb=10] [--vocab_size=8192]

The text is ../shared/data/pretrain/{tinyshakespeare,wiki_demo}.txt when present (lines shuffled, repeated up
to the size), else seeded synthetic words. Prints the corpus size, the seconds and the resulting compression.
"""
import argparse
import os
import random
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
from jaxllm.tokenizer import train_bpe  # noqa: E402

SOURCES = [os.path.join(REPO, "..", "shared", "data", "pretrain", name)
           for name in ("tinyshakespeare.txt", "wiki_demo.txt")]
DOC_LINES = 50  # lines per document handed to the trainer, roughly a page


def _lines(rng: random.Random) -> list[str]:
  lines = []
  for path in SOURCES:
    if os.path.exists(path):
      with open(path, encoding="utf-8") as f:
        lines += f.read().splitlines()
  if lines:
    return lines
  lexicon = ["".join(rng.choices("etaoinshrdlucmfwyp", k=rng.randint(1, 9))) for _ in range(20_000)]
  weights = [1 / (rank + 1) for rank in range(len(lexicon))]
  return [" ".join(rng.choices(lexicon, weights, k=12)) for _ in range(20_000)]


def corpus(megabytes: float, seed: int = 0) -> list[str]:
  """Documents of DOC_LINES shuffled lines, about `megabytes` of UTF-8 in all."""
  rng = random.Random(seed)
  lines, docs, size = _lines(rng), [], 0
  while size < megabytes * 1e6:
    rng.shuffle(lines)
    for start in range(0, len(lines), DOC_LINES):
      docs.append("\n".join(lines[start:start + DOC_LINES]))
      size += len(docs[-1].encode("utf-8"))
      if size >= megabytes * 1e6:
        break
  return docs


def main() -> None:
  parser = argparse.ArgumentParser()
  parser.add_argument("--mb", type=float, default=10.0)
  parser.add_argument("--vocab_size", type=int, default=8192)
  args = parser.parse_args()
  docs = corpus(args.mb)
  n_bytes = sum(len(d.encode("utf-8")) for d in docs)
  start = time.perf_counter()
  tok = train_bpe(docs, args.vocab_size)
  seconds = time.perf_counter() - start
  n_tokens = sum(len(ids) for ids in tok.encoding.encode_ordinary_batch(docs[:200]))
  sample_bytes = sum(len(d.encode("utf-8")) for d in docs[:200])
  print(f"train_bpe: {n_bytes / 1e6:.1f} MB in {len(docs)} docs, vocab {tok.n_vocab}: {seconds:.1f} s on "
        f"{os.cpu_count()} CPUs; {sample_bytes / n_tokens:.2f} bytes/token")


if __name__ == "__main__":
  main()
