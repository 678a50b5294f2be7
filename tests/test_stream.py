"""Streamed pretraining (data/stream.py): resume is bitwise (2N steps = N + resumed N), and two processes of four
devices each read disjoint shares of the corpus that together cover it (checked by document ids)."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO, tiny_config
from jaxllm.metrics import read_metrics
from jaxllm.stages import pretrain

N_FILES, DOCS_PER_FILE = 4, 40


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
  """4 JSONL shards of documents "document <id> ..." of varied length (ids 0..159, in file order)."""
  root = tmp_path_factory.mktemp("stream_corpus")
  words = "apples pears seven plus three equals ten".split()
  for f in range(N_FILES):
    with open(root / f"shard-{f}.jsonl", "w") as out:
      for i in range(DOCS_PER_FILE):
        doc = f * DOCS_PER_FILE + i
        out.write(json.dumps({"text": f"document {doc} " + " ".join(words[:1 + doc % 7]) + "."}) + "\n")
  return root


def test_streamed_pretraining_resumes_bitwise(corpus, tmp_path, tokenizer_dir):
  def run(workdir, steps):
    config = tiny_config("pretrain", workdir, tokenizer_dir, steps=steps, **{
        "data.name": str(corpus / "*.jsonl"), "data.streaming": True, "data.eval_examples": 8,
        "log.every": 1, "eval.every": 100, "checkpoint.every": 2, "sample.num": 0, "optim.decay_steps": 4})
    return pretrain.run(config)

  straight = run(tmp_path / "straight", 4)
  run(tmp_path / "resumed", 2)
  resumed = run(tmp_path / "resumed", 4)
  losses = lambda w: [(r["step"], r["loss"]) for r in read_metrics(str(w)) if r["split"] == "train"]
  assert losses(tmp_path / "resumed")[-2:] == losses(tmp_path / "straight")[-2:]  # steps 3 and 4, exactly
  assert resumed["eval_loss"] == straight["eval_loss"] and np.isfinite(straight["eval_loss"])


_READER = """
import json, re, sys
import jax
jax.distributed.initialize(coordinator_address="127.0.0.1:{port}", num_processes=2, process_id={pid})
import ml_collections
import numpy as np
from jaxllm.data import sources, stream
from jaxllm.tokenizer import Tokenizer
tok = Tokenizer.load({tok!r})
data = ml_collections.ConfigDict(dict(name={name!r}, dataset_info="", subset="", split="train", on_bad_row="fail"))
open_stream, text_of, _, _ = sources.text_stream(data)
batches = stream.StreamedLMBatches(open_stream, text_of, tok.encoding.encode_ordinary, tok.eot_id, 32,
                                   8 // jax.process_count(), jax.process_index(), jax.process_count(), 4)
rows = [batches.next()["tokens"].reshape(-1) for _ in range({batches})]
text = tok.decode(np.concatenate(rows).tolist())
ids = [int(i) for i in re.findall(r"document (\\d+)", text)]
print(json.dumps({{"devices": jax.local_device_count(), "ids": ids}}))
"""


@pytest.mark.slow
def test_two_processes_read_disjoint_shards(corpus, tokenizer_dir):
  import socket
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4", "JAX_PLATFORMS": "cpu",
         "PYTHONPATH": str(REPO)}
  # a share's 80 documents are ~1900 tokens (~15 batches of 4 x 32): 20 batches read it once and start over
  procs = [subprocess.Popen([sys.executable, "-c", _READER.format(port=port, pid=pid, tok=tokenizer_dir,
                                                                  name=str(corpus / "*.jsonl"), batches=20)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
           for pid in range(2)]
  outs = [p.communicate(timeout=300) for p in procs]
  for p, (_, err) in zip(procs, outs):
    assert p.returncode == 0, err[-3000:]
  results = [json.loads(out.strip().splitlines()[-1]) for out, _ in outs]
  assert [r["devices"] for r in results] == [4, 4]
  first_pass = []
  for r in results:  # a share's documents in order until the share starts over (the next epoch)
    ids = r["ids"]
    first_pass.append(ids[:ids.index(ids[0], 1)] if ids[0] in ids[1:] else ids)
  shares = [set(ids) for ids in first_pass]
  assert all(len(ids) == len(set(ids)) for ids in first_pass)  # no document read twice in a pass
  assert not shares[0] & shares[1]  # no document read by both processes
  held_out = set(range(4))  # the first eval_examples documents of process 0's share
  assert shares[0] | shares[1] | held_out == set(range(N_FILES * DOCS_PER_FILE))  # none skipped
  assert not shares[0] & held_out
  # whole files per process (4 shards over 2 processes): process 0 reads files 0 and 2
  assert {i // DOCS_PER_FILE for i in shares[0]} == {0, 2} and {i // DOCS_PER_FILE for i in shares[1]} == {1, 3}


def test_tokenizer_reads_only_the_start_of_a_streamed_corpus(corpus):
  from configs import tokenizer as tokenizer_config
  from jaxllm.data.corpus import corpus as tokenizer_corpus

  config = tokenizer_config.get_config()
  config.data.update(name=str(corpus / "*.jsonl"), streaming=True)
  config.tokenizer.max_chars = 300
  docs = tokenizer_corpus(config)
  assert docs[0].startswith("document 0 ") and sum(map(len, docs)) == 300 and len(docs) < 20


def test_a_bad_streamed_row_is_named_or_skipped_and_counted(tmp_path):
  import ml_collections
  from jaxllm.data import sources

  path = tmp_path / "c.jsonl"
  path.write_text('{"text": "fine"}\n{"text": 5}\n{"text": ""}\n')
  data = ml_collections.ConfigDict(dict(name=str(path), dataset_info="", subset="", split="train",
                                        on_bad_row="fail"))
  open_stream, text_of, _, _ = sources.text_stream(data)
  rows = list(open_stream())
  assert text_of(rows[0]) == "fine" and text_of(rows[2]) is None  # an empty document carries nothing
  with pytest.raises(sources.DataError, match=r"c\.jsonl: streamed row \{'text': 5\}: column 'text' must be a str"):
    text_of(rows[1])
  data.on_bad_row = "skip"
  _, text_of, _, skipped = sources.text_stream(data)
  assert text_of(rows[1]) is None and skipped.skipped == 1
