"""Sentiment classification as SFT: waimai_10k reviews (label 1 = positive, 0 = negative), 90/10 split by seed.

  python run.py --config=configs/tokenizer.py --config.workdir=/tmp/jaxllm/tok_waimai \\
      --config.data.name=https://raw.githubusercontent.com/SophonPlus/ChineseNlpCorpus/master/datasets/waimai_10k/waimai_10k.csv \\
      --config.tokenizer.vocab_size=4096
  python run.py --config=configs/sft_sentiment.py --config.workdir=/tmp/jaxllm/sentiment \\
      --config.tokenizer.path=/tmp/jaxllm/tok_waimai

The data is read from its public origin (WAIMAI_10K, a CSV with columns label,review: classification is told
from them), so these commands need the network; offline, pass a local copy: --config.data.name=waimai_10k.csv.

Each review becomes a user turn "判断这条评论是好评还是差评，好评输出1，差评输出0\\n<review>" answered by
the label; the held-out metric is the accuracy of the greedily generated label (evals kind `classification`). Trained
from scratch with a tokenizer fitted to the reviews (or pass --config.init_from=W for a pretrained model).
experiments/sft_sentiment.py runs the whole recipe: 300 steps reach 88.3% held-out accuracy (majority class:
66.6%) in 11 min wall / 4.2 min CPU on 2 busy shared CPU cores.
"""

from configs import sft

WAIMAI_10K = ("https://raw.githubusercontent.com/SophonPlus/ChineseNlpCorpus/master/datasets/waimai_10k/"
              "waimai_10k.csv")


def get_config(arg: str | None = None):
  c = sft.get_config(arg)
  c.unlock()
  c.data.update(name=WAIMAI_10K, eval_fraction=0.1, seq_len=128, batch_size=32)
  c.sft.update(instruction="判断这条评论是好评还是差评，好评输出1，差评输出0", eval_examples=1200,
               eval_batch_size=100)
  c.sampling.max_new_tokens = 4  # the label
  c.model.update(d_model=128, n_layers=2, n_heads=4, n_kv_heads=2, mlp_dim=384, max_seq_len=128)
  c.steps = 300
  c.optim.update(lr=2e-3, warmup_steps=30)
  c.eval.update(every=100, batches=8)
  c.checkpoint.every = 100
  c.log.every = 50
  c.sample.num = 5
  if arg == "tiny":
    c.steps = 10
    c.data.update(max_examples=400, batch_size=8)
    c.model.update(d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, mlp_dim=128, max_seq_len=128)
    c.sft.update(eval_examples=16, eval_batch_size=16)
    c.eval.update(every=10, batches=2)
    c.checkpoint.every = 10
    c.sample.num = 1
  c.lock()
  return c
