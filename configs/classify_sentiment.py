"""Sentiment classification with a classification head: waimai_10k reviews (label 1 = positive, 0 = negative),
the same 90/10 split by seed, model, tokenizer, steps and learning rate as configs/sft_sentiment.py, which
instead generates the label.

  python run.py --config=configs/tokenizer.py --config.workdir=/tmp/jaxllm/tok_waimai \\
      --config.data.name=https://raw.githubusercontent.com/SophonPlus/ChineseNlpCorpus/master/datasets/waimai_10k/waimai_10k.csv \\
      --config.tokenizer.vocab_size=4096
  python run.py --config=configs/classify_sentiment.py --config.workdir=/tmp/jaxllm/sentiment_head \\
      --config.tokenizer.path=/tmp/jaxllm/tok_waimai

The data is read from its public origin (so these commands need the network); offline, pass a local copy:
--config.data.name=waimai_10k.csv. Each row is one review's tokens (no instruction, no chat template), the head
reads its last token (classify.pooling=last). 64 reviews a step: SFT's 32 packed rows hold ~61. Both runs start
from the same random init (seed 0); experiments/classify_sentiment.py runs the pair and prints both results:
on 2026-12-05, 300 steps gave the head 87.7% held-out accuracy / macro-F1 0.863 and SFT 88.4% / 0.871 (88.9% /
88.7% at step 200; docs/classify.md), 193 s of CPU time for the head's run on the shared 2-core machine.
"""

from configs import classify
from configs.sft_sentiment import WAIMAI_10K


def get_config(arg: str | None = None):
  c = classify.get_config(arg)
  c.unlock()
  c.data.update(name=WAIMAI_10K, eval_fraction=0.1, seq_len=128, batch_size=64)
  c.classify.labels = "0,1"  # class 0 = negative, 1 = positive (waimai's own label values)
  c.model.update(d_model=128, n_layers=2, n_heads=4, n_kv_heads=2, mlp_dim=384, max_seq_len=128)
  c.steps = 300
  c.optim.update(lr=2e-3, warmup_steps=30)
  c.eval.every = 100
  c.checkpoint.every = 100
  c.log.every = 50
  if arg == "tiny":
    c.steps = 10
    c.data.update(max_examples=400, batch_size=8)
    c.model.update(d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, mlp_dim=128, max_seq_len=128)
    c.eval.every = 10
    c.checkpoint.every = 10
  c.lock()
  return c
