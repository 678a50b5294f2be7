"""Fine-tune a classification head (a `num_classes` linear layer on the trunk's last-token or mean-pooled hidden
state, cross-entropy) on labelled texts, full or LoRA, from a jaxllm workdir or a Hugging Face model folder.

  python run.py --config=configs/classify.py --config.init_from=SFT_WORKDIR --config.workdir=/tmp/jaxllm/cls
  python run.py --config=configs/classify.py --config.init_from=HF_FOLDER --config.workdir=W \
      --config.data.name=reviews.csv --config.lora.rank=8           # CSV / JSON(L) / Parquet: a text + a label column
  python run.py --config=configs/classify.py:tiny --config.init_from=W --config.workdir=W2    # smoke test
  python run.py --config=configs/export.py --config.init_from=/tmp/jaxllm/cls --config.export.path=OUT
      # -> a transformers ...ForSequenceClassification folder (score.weight, num_labels, id2label)

With no data.name the texts are the built-in world's problems with a worked answer, labelled `correct` or
`wrong` (the reward model's pairs, split into single answers). Held-out metrics: `accuracy`, `macro_f1` and the
confusion matrix (metrics.jsonl, the summary, workdir/classify_report.md). The default size on the built-in
world has not been measured yet; :tiny is a smoke test (~1 min on 2 busy cores, 10 steps, no learning expected).
On waimai_10k (configs/classify_sentiment.py) the head reached 87.7% held-out accuracy / macro-F1 0.863 against
generated-label SFT's 88.4% / 0.871 from the same trunk, steps and data (experiments/classify_sentiment.py,
docs/classify.md).
"""

import ml_collections

from configs import base


def get_config(arg: str | None = None):
  c = base.get_config()
  c.stage = "classify"
  c.steps = 200
  c.optim.lr = 1e-4  # fine-tuning a trained trunk (a fresh head learns at the same rate)
  c.optim.warmup_steps = 20
  c.data.seq_len = 128  # a built-in problem with its worked answer is <= ~100 tokens
  c.data.train_examples = 8000  # built-in world: training rows (half correct, half wrong answers)
  c.data.eval_examples = 400  # built-in world: held-out rows
  c.eval.every = 100
  c.checkpoint.every = 100
  c.sample.num = 0

  c.classify = ml_collections.ConfigDict()
  c.classify.pooling = "last"  # last (real token's hidden state: transformers' ...ForSequenceClassification) | mean
  c.classify.labels = ""  # class names in class-index order, comma-separated; '' = the training split's labels
  c.classify.num_classes = 0  # 0 = the number of labels; else must equal it
  c.classify.class_weights = ""  # '' = equal | balanced (n / (C * count)) | one weight per class, comma-separated
  c.classify.head_init = 0.0  # std of the normal init of the head; 0 = zeros (every class starts equally likely)
  c.classify.eval_examples = 0  # held-out rows classified at each evaluation; 0 = all
  c.classify.text_column = ""  # a file's text column ('' = told from the rows: the one text column beside a label)
  c.classify.label_column = ""  # a file's label column ('' = `label`)
  if arg == "tiny":
    c.steps = 10
    base.use_tiny_model(c)
    c.optim.lr = 1e-3
    c.data.update(batch_size=8, seq_len=128, train_examples=200, eval_examples=32)
    c.eval.every = 5
    c.checkpoint.every = 5
    c.log.every = 5
  c.lock()
  return c
