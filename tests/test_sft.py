"""SFT data and stage: truncation keeps the answer, packing isolates examples, the loss is a mean over every
target token of the batch, every chat/classification dataset renders into batches, a tiny run end to end."""
import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import tiny_config
from jaxllm import chat_template, losses
from jaxllm.data import sft as sft_data
from jaxllm.data import sources, synthetic
from jaxllm.metrics import read_metrics
from jaxllm.model import ModelConfig, Transformer
from jaxllm.data import chats as chats_data
from jaxllm.stages import sft as sft_stage
from jaxllm.tokenizer import Tokenizer


@pytest.fixture(scope="module")
def tok(tokenizer_dir) -> Tokenizer:
  return Tokenizer.load(tokenizer_dir)


def _chat(system: str | None, user: str, answer: str) -> dict:
  messages = ([{"role": "system", "content": system}] if system else []) + [
      {"role": "user", "content": user}, {"role": "assistant", "content": answer}]
  return {"messages": messages, "tools": ""}


# ------------------------------------------------------------------------------------------------ truncation

def test_short_examples_are_kept_whole_minus_the_trailing_newline(tok):
  chat = _chat("S", "What is 2 + 3?", "#### 5")
  (ex,), stats = sft_data.encode(tok, [chat], seq_len=64)
  full = chat_template.render(tok, chat["messages"])
  assert ex.ids.tolist() == full.ids[:-len(tok.encode("\n"))]  # ends with the learnt <|im_end|>
  assert ex.ids[-1] == tok.im_end_id and ex.loss_mask[-1] == 1
  assert stats.truncated == 0 and stats.dropped == 0


def test_truncation_cuts_the_prompt_from_the_left_and_keeps_system_and_answer(tok):
  system, answer = "Be exact.", "7 + 5 = 12\n#### 12"
  user = " ".join(f"word{i}" for i in range(200)) + " final question?"
  chat = _chat(system, user, answer)
  seq_len = 48
  (ex,), stats = sft_data.encode(tok, [chat], seq_len=seq_len)
  assert stats.truncated == 1 and stats.dropped == 0
  assert len(ex.ids) == seq_len + 1  # uses every slot
  text = tok.decode(ex.ids.tolist())
  assert text.startswith(f"<|im_start|>system\n{system}<|im_end|>\n")  # the system turn survives whole
  assert text.endswith(f"final question?<|im_end|>\n<|im_start|>assistant\n{answer}<|im_end|>")  # prompt end
  assert "word0 " not in text  # ... the prompt's beginning is what was cut
  assert tok.decode([i for i, m in zip(ex.ids, ex.loss_mask) if m]) == answer + "<|im_end|>"


def test_system_turn_is_cut_too_when_it_does_not_fit_beside_the_answer(tok):
  chat = _chat("long system prompt " * 30, "question?", "#### 3")
  (ex,), stats = sft_data.encode(tok, [chat], seq_len=40)
  text = tok.decode(ex.ids.tolist())
  assert stats.truncated == 1 and len(ex.ids) == 41
  assert text.endswith("question?<|im_end|>\n<|im_start|>assistant\n#### 3<|im_end|>")


def test_examples_whose_answer_alone_is_too_long_are_truncated_or_dropped_and_counted(tok):
  long_answer = " ".join(["long"] * 100)
  chats = [_chat(None, "q" * 40, "#### 1"), _chat(None, "question " * 30, long_answer), _chat(None, "q", "#### 2")]
  examples, stats = sft_data.encode(tok, chats, seq_len=32, on_long="drop")
  assert len(examples) == 2 and stats.dropped == 1 and stats.examples == 2
  assert "1 dropped" in stats.describe()
  examples, stats = sft_data.encode(tok, chats, seq_len=32, prompt_fraction=0.25)  # on_long="truncate"
  assert len(examples) == 3 and stats.dropped == 0 and stats.truncated == 2
  cut = examples[1]
  assert len(cut.ids) == 33 and 8 <= int(np.argmax(cut.loss_mask)) <= 11  # the prompt's last 8 ids, a header
  assert tok.decode(cut.ids[-5:].tolist()) in long_answer and cut.loss_mask[-1] == 1  # the answer's head


def test_a_malformed_record_is_named_or_skipped(tok):
  chats = [_chat(None, "q", "a"), {"messages": [{"role": "robot", "content": "x"}], "tools": ""}]
  with pytest.raises(ValueError, match=r"mydata: record 1: .*unknown role 'robot'"):
    sft_data.encode(tok, chats, seq_len=32, source="mydata")
  examples, stats = sft_data.encode(tok, chats, seq_len=32, on_bad="skip")
  assert len(examples) == 1 and stats.skipped == 1
  no_answer = [{"messages": [{"role": "user", "content": "q"}], "tools": ""}]
  with pytest.raises(ValueError, match="record 0: .*no assistant turn"):
    sft_data.encode(tok, no_answer, seq_len=32)


# --------------------------------------------------------------------------------------------------- packing

def test_first_fit_places_each_item_in_the_lowest_bin_with_room():
  assert sft_data.first_fit([5, 7, 3, 2, 6, 1], 10) == [[0, 2, 3], [1, 5], [4]]
  rng = np.random.default_rng(0)
  lengths = rng.integers(1, 33, 500).tolist()
  bins = sft_data.first_fit(lengths, 32)
  assert sorted(i for b in bins for i in b) == list(range(500))
  loads = [sum(lengths[i] for i in b) for b in bins]
  assert max(loads) <= 32
  for j, b in enumerate(bins):  # no item fitted into an earlier bin at the time it was placed
    for i in b:
      for k in range(j):
        assert sum(lengths[x] for x in bins[k] if x < i) + lengths[i] > 32


def test_rows_batch_layout(tok):
  examples, _ = sft_data.encode(tok, [_chat(None, "a", "b"), _chat(None, "cc dd", "ee")], seq_len=64)
  batch = sft_data.rows_batch(examples, [[0, 1], []], 64, tok.pad_id)
  n0, n1 = len(examples[0].ids) - 1, len(examples[1].ids) - 1
  seg, pos = batch["segment_ids"][0], batch["positions"][0]
  assert seg.tolist() == [1] * n0 + [2] * n1 + [0] * (64 - n0 - n1)
  assert pos[:n0].tolist() == list(range(n0)) and pos[n0:n0 + n1].tolist() == list(range(n1))
  assert batch["tokens"][0, :n0].tolist() == examples[0].ids[:-1].tolist()
  assert batch["targets"][0, :n0].tolist() == examples[0].ids[1:].tolist()
  assert batch["loss_mask"][0, :n0].tolist() == examples[0].loss_mask[1:].tolist()
  assert not batch["loss_mask"][1].any() and not batch["segment_ids"][1].any()  # an empty row is padding


def test_packing_and_padding_hold_the_same_examples_and_report_the_loss_share(tok):
  chats = [{"messages": m, "tools": ""} for m in synthetic.sft_examples(0, "train", 60)]
  out = {}
  for packing in (True, False):
    examples, stats = sft_data.encode(tok, chats, seq_len=128)
    batches = sft_data.train_batches(examples, stats, 128, 4, seed=0, pad_id=tok.pad_id, packing=packing)
    first_epoch = [batches.next() for _ in range(-(-stats.rows // 4))]
    loss_tokens = sum(b["loss_mask"].sum() for b in first_epoch[:stats.rows // 4])
    out[packing] = stats
    assert stats.loss_tokens == sum(int(e.loss_mask[1:].sum()) for e in examples)
    share = stats.as_dict()["loss_token_share"]
    assert share == pytest.approx(stats.loss_tokens / (stats.rows * 128))
    assert 0 < loss_tokens
  assert out[False].rows == 60 and out[True].rows < 60  # packing fills rows
  assert out[True].as_dict()["loss_token_share"] > out[False].as_dict()["loss_token_share"]


def test_batches_are_deterministic_and_resume_from_their_state(tok):
  chats = [{"messages": m, "tools": ""} for m in synthetic.sft_examples(0, "train", 40)]
  examples, stats = sft_data.encode(tok, chats, seq_len=128)

  def make(seed):
    return sft_data.train_batches(examples, stats, 128, 4, seed=seed, pad_id=tok.pad_id)

  a, b = make(0), make(0)
  for _ in range(3):
    a.next()
    b.next()
  state = a.get_state()
  rest = [a.next()["tokens"] for _ in range(12)]  # crosses an epoch boundary
  c = make(0)
  c.set_state(json.loads(json.dumps(state)))
  np.testing.assert_array_equal(np.stack(rest), np.stack([c.next()["tokens"] for _ in range(12)]))
  assert not np.array_equal(make(1).next()["tokens"], make(0).next()["tokens"])


# ------------------------------------------------------------------------------- model-level properties

def _tiny_model(vocab: int):
  """A small random model. Params drawn with numpy into eval_shape's structure: compiling an init costs more
  than these tests."""
  cfg = ModelConfig(vocab_size=vocab, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=8, mlp_dim=48,
                    max_seq_len=128)
  model = Transformer(cfg)
  shapes = jax.eval_shape(lambda: nn.meta.unbox(model.init(jax.random.PRNGKey(0), jnp.zeros((1, 4), jnp.int32))))
  rng = np.random.default_rng(0)
  params = jax.tree.map(lambda s: rng.normal(0.0, 0.2, s.shape).astype(np.float32), shapes["params"])
  return model, params


def test_packed_examples_do_not_attend_to_each_other(tok):
  chats = [_chat(None, "first neighbour here", "#### 1"), _chat("S", "the example we watch", "#### 2"),
           _chat(None, "after it", "#### 3")]
  examples, _ = sft_data.encode(tok, chats, seq_len=128)
  model, params = _tiny_model(tok.n_vocab)
  packed = sft_data.rows_batch(examples, [[0, 1, 2]], 128, tok.pad_id)
  alone = sft_data.rows_batch(examples, [[1]], 128, tok.pad_id)

  apply = jax.jit(model.apply)

  def logits(batch):
    return np.asarray(apply({"params": params}, batch["tokens"], batch["positions"], batch["segment_ids"]))

  n0, n1 = len(examples[0].ids) - 1, len(examples[1].ids) - 1
  np.testing.assert_allclose(logits(packed)[0, n0:n0 + n1], logits(alone)[0, :n1], atol=1e-5, rtol=1e-5)
  # The test can fail: with one segment for the whole row, the neighbour changes the logits.
  merged = dict(packed, segment_ids=np.where(packed["segment_ids"] > 0, 1, 0).astype(np.int32))
  assert not np.allclose(logits(merged)[0, n0:n0 + n1], logits(alone)[0, :n1], atol=1e-3)


def test_sft_loss_is_the_mean_over_every_target_token_of_the_batch(tok):
  chats = [_chat(None, "q", "#### 1"), _chat(None, "a longer question here", "1 + 2 = 3\n3 + 4 = 7\n#### 7"),
           _chat(None, "x", "y")]
  examples, _ = sft_data.encode(tok, chats, seq_len=64)
  batch = sft_data.rows_batch(examples, [[0, 2], [1]], 64, tok.pad_id)
  model, params = _tiny_model(tok.n_vocab)
  cfg = tiny_config("sft", "/tmp/unused", "")
  loss_fn = jax.jit(lambda p, b: losses.get("sft").loss({"model": p}, {}, b, None, model=model, cfg=cfg))
  loss, metrics = loss_fn(params, batch)

  logits = np.asarray(jax.jit(model.apply)({"params": params}, batch["tokens"], batch["positions"],
                                          batch["segment_ids"]), np.float64)
  logp = logits - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1, keepdims=True)) \
      - logits.max(-1, keepdims=True)
  nll = -np.take_along_axis(logp, batch["targets"][..., None], -1)[..., 0]
  mask = batch["loss_mask"]
  expected = (nll * mask).sum() / mask.sum()
  np.testing.assert_allclose(float(loss), expected, rtol=1e-5)
  assert float(metrics["target_tokens"]) == mask.sum()
  per_sequence = np.mean([(nll[r] * mask[r]).sum() / mask[r].sum() for r in range(2)])
  assert abs(per_sequence - expected) > 1e-3  # the two normalisations really differ on this batch
  empty = dict(batch, loss_mask=np.zeros_like(mask))
  assert float(loss_fn(params, empty)[0]) == 0.0


# -------------------------------------------------------------------------------------------- real datasets

def _chat_like(entry: dict) -> str | None:
  """The record kind SFT reads from a dataset_info entry, or None for a plain-text corpus."""
  formatting = entry.get("formatting", "alpaca")
  if formatting == "classification":
    return "classification"
  if formatting == "text" or ("columns" in entry and formatting == "alpaca" and "response" not in entry["columns"]):
    return None
  return "chat"


def test_every_chat_and_classification_dataset_renders_into_batches(tok, shared_data):
  info = str(shared_data / "dataset_info.json")
  registry = json.load(open(info))
  rendered = []
  for name, entry in registry.items():
    kind = _chat_like(entry)
    if kind is None:
      continue
    result = sources.load(name, info, kind, limit=64)
    records = result.records
    if kind == "classification":
      records = [chats_data.classification_chat(r, "Label it.") for r in records]
    examples, stats = sft_data.encode(tok, records, seq_len=128, source=name)
    assert stats.examples + stats.dropped == len(records), name
    assert examples, f"{name}: every example was dropped"
    batches = sft_data.train_batches(examples, stats, 128, 4, seed=0, pad_id=tok.pad_id)
    batch = batches.next()
    assert batch["tokens"].shape == (4, 128) and batch["loss_mask"].sum() > 0, name
    assert int(batch["tokens"].max()) < tok.n_vocab
    rendered.append(name)
  assert {"alpaca_en_demo", "alpaca_zh_demo", "identity", "glaive_toolcall_en_demo", "waimai_10k"} <= set(rendered)


def test_glaive_tools_reach_the_system_turn(tok, shared_data):
  records = sources.load("glaive_toolcall_en_demo", str(shared_data / "dataset_info.json"), "chat", limit=5).records
  with_tools = next(r for r in records if r["tools"])
  (ex,), _ = sft_data.encode(tok, [with_tools], seq_len=4096)
  assert tok.decode(ex.ids.tolist()).startswith("<|im_start|>system\n" + chat_template.TOOLS_HEADER)


def test_classification_split_is_seeded_and_disjoint(tmp_path, tokenizer_dir, shared_data):
  config = tiny_config("sft", tmp_path, tokenizer_dir, **{
      "data.name": "waimai_10k", "data.dataset_info": str(shared_data / "dataset_info.json"),
      "data.eval_fraction": 0.1, "data.max_examples": 200, "sft.instruction": "Label:"})
  chats = chats_data.load_chats(config)
  assert chats.kind == "classification" and len(chats.eval) == 20 and len(chats.train) == 180
  user = chats.train[0]["messages"][0]["content"]
  assert user.startswith("Label:\n") and chats.train[0]["messages"][1]["content"] in ("0", "1")
  assert not {c["messages"][0]["content"] for c in chats.eval} & {c["messages"][0]["content"] for c in chats.train}
  assert chats_data.load_chats(config).eval == chats.eval


def test_a_file_is_read_with_sft_formatting(tmp_path, tokenizer_dir):
  path = tmp_path / "mine.jsonl"
  rows = [{"instruction": f"Say {i}.", "input": "", "output": str(i)} for i in range(10)]
  path.write_text("\n".join(json.dumps(r) for r in rows))
  config = tiny_config("sft", tmp_path, tokenizer_dir, **{"data.name": str(path), "data.eval_fraction": 0.2})
  chats = chats_data.load_chats(config)
  assert len(chats.train) == 8 and len(chats.eval) == 2 and chats.kind == ""  # free text: held-out loss only
  assert chats.train[0]["messages"][-1]["role"] == "assistant"
  path.write_text(json.dumps({"instruction": "x"}) + "\n" + json.dumps({"instruction": "y", "output": "z"}))
  with pytest.raises(sources.DataError, match=r"mine\.jsonl.*(row|line) 1"):
    chats_data.load_chats(config)


def test_first_step_only_flaws_training_demonstrations_and_never_held_out_references(tmp_path, tokenizer_dir):
  config = tiny_config("sft", tmp_path, tokenizer_dir, **{"sft.first_step_only": 1.0})
  chats = chats_data.load_chats(config)
  problems = synthetic.problems(config.seed, "train", config.data.train_examples)
  multi = [p for p in problems if len(p.steps) > 1]
  assert multi and all(c["messages"][-1]["content"] == f"{p.steps[0]}\n#### {p.steps[0].rsplit(' = ', 1)[1]}"
                       for c, p in zip(chats.train, problems) if len(p.steps) > 1)
  held = synthetic.problems(config.seed, "eval", config.data.eval_examples)
  assert [c["messages"][-1]["content"] for c in chats.eval] == [p.solution for p in held]


# ------------------------------------------------------------------------------------------------ end to end

def test_tiny_sft_run_from_a_pretrain_workdir(tmp_path, tokenizer_dir, initial_pretrain_workdir):
  config = tiny_config("sft", tmp_path, "", init_from=initial_pretrain_workdir, steps=6,
                       **{"eval.every": 6, "sample.num": 0})
  summary = sft_stage.run(config)
  rows = read_metrics(str(tmp_path))
  train_rows = [r for r in rows if r["split"] == "train"]
  evals = [r for r in rows if r["split"] == "eval"]
  assert train_rows and all(np.isfinite(r["loss"]) and "tokens_per_sec" in r for r in train_rows)
  assert evals[-1]["step"] == 6
  assert {"loss", "ppl", "accuracy", "answer_format", "gen_tokens", "stopped"} <= set(evals[-1])
  assert 0.0 < summary["data_loss_token_share"] < 1.0 and summary["data_examples"] == 400
  assert summary["step"] == 6 and np.isfinite(summary["eval_loss"])
  saved = json.load(open(tmp_path / "config.json"))
  assert saved["model"]["d_model"] == 64 and saved["sft"]["packing"] is True  # the architecture of init_from


@pytest.mark.parametrize("key, value", [("sft.train_on", "history"), ("sft.eval_kind", "bleu"),
                                        ("sampling.max_new_tokens", 500), ("sft.formatting", "xml"),
                                        ("sft.first_step_only", 1.5)])
def test_bad_sft_keys_are_named(key, value):
  from jaxllm.config import ConfigError, validate
  config = tiny_config("sft", "/tmp/unused", "", **{key: value})
  with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
    validate(config)
