"""Imported tokenizers and chat templates of four families (tests/hf_families.py: Llama-3, Mistral, Gemma, Qwen
styles, built locally): ids equal AutoTokenizer's and apply_chat_template's; the loss mask is exactly each
assistant turn's content and end-of-turn token; typed control tokens stay text; failures name the message;
export writes the folder's own tokenizer and template back, and nothing when it fails."""
import json
import os

import pytest

transformers = pytest.importorskip("transformers")
pytest.importorskip("tokenizers")

import hf_families as fam  # noqa: E402
from jaxllm import chat_template, hf  # noqa: E402
from jaxllm.hf_tokenizer import HFTokenizer  # noqa: E402
from jaxllm.tokenizer import Tokenizer, train_bpe  # noqa: E402

TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather of a city",
                                           "parameters": {"type": "object",
                                                          "properties": {"city": {"type": "string"}}}}}]
CALL = json.dumps({"name": "get_weather", "arguments": {"city": "Paris"}})
TAKES_SYSTEM = {"llama3", "gemma", "qwen"}
TAKES_TOOLS = {"llama3", "qwen"}


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
  """family -> (folder, transformers tokenizer, jaxllm tokenizer); built once for the module."""
  out = {}
  for family in fam.FAMILIES:
    folder = tmp_path_factory.mktemp(family)
    theirs = fam.build(family, folder)
    out[family] = (str(folder), theirs, Tokenizer.load(str(folder)))
  return out


def _conversations(family: str) -> list[tuple[list[dict], list | None]]:
  """(messages, tools) cases the family's template takes."""
  chat = [{"role": "user", "content": "What is the capital of France? 你好"},
          {"role": "assistant", "content": "Paris.  It has 🙂 cafés."},
          {"role": "user", "content": "And   of\tJapan?\n\ncode: `x = [1, 2]`"},
          {"role": "assistant", "content": "Tokyo."}]
  cases = [(chat[:1], None), (chat[:2], None), (chat, None)]
  if family in TAKES_SYSTEM:
    cases.append(([{"role": "system", "content": "Be brief."}] + chat, None))
  if family in TAKES_TOOLS:
    cases.append((chat[:1], TOOLS))
    cases.append((chat[:1] + [{"role": "function_call", "content": CALL},
                              {"role": "tool", "content": '{"temp": 21}'},
                              {"role": "assistant", "content": "21 degrees."}], TOOLS))
  return cases


def _hf_messages(messages):
  from jaxllm.chat_template_jinja import to_hf_messages
  return to_hf_messages(messages)


def _theirs(tok, messages, tools, gen, **kwargs) -> list[int]:
  ids = tok.apply_chat_template(_hf_messages(messages), tools=tools, add_generation_prompt=gen, tokenize=True,
                                **kwargs)
  return list(ids["input_ids"] if not isinstance(ids, list) else ids)


@pytest.mark.parametrize("family", fam.FAMILIES)
def test_encodes_like_autotokenizer(folders, family):
  _, theirs, ours = folders[family]
  assert isinstance(ours, HFTokenizer)
  for text in fam.MULTILINGUAL + ["\n".join(fam.MULTILINGUAL)]:
    ids = ours.encode(text)
    assert ids == theirs.encode(text, add_special_tokens=False), text
    assert ours.decode(ids) == theirs.decode(ids)
  assert ours.n_vocab == len(theirs)
  # a special token's spelling in text is text, on this back end as on tiktoken's
  eot = fam.EOT[family]
  assert ours.special_id(eot) not in ours.encode(f"a {eot} b")


@pytest.mark.parametrize("family", fam.FAMILIES)
def test_chat_ids_equal_apply_chat_template(folders, family):
  _, theirs, ours = folders[family]
  for messages, tools in _conversations(family):
    for gen in (False, True):
      if gen and messages[-1]["role"] == "assistant":
        continue
      want = _theirs(theirs, messages, tools, gen)
      assert chat_template.render(ours, messages, add_generation_prompt=gen, tools=tools).ids == want, (messages,
                                                                                                        gen)
      if gen:
        assert chat_template.prompt_ids(ours, messages, tools=json.dumps(tools) if tools else "") == want


@pytest.mark.parametrize("family", fam.FAMILIES)
def test_loss_mask_is_assistant_content_and_end_of_turn(folders, family):
  _, _, ours = folders[family]
  eot = fam.EOT[family]
  for messages, tools in _conversations(family):
    answers = [m for m in messages if m["role"] in ("assistant", "function_call")]
    if not answers:
      continue
    for train_on in ("last", "all"):
      r = chat_template.render(ours, messages, train_on=train_on, tools=tools)
      runs, run = [], []  # the masked ids, as maximal runs
      for i, m in zip(r.ids, r.loss_mask + [0]):
        if m:
          run.append(i)
        elif run:
          runs.append(run)
          run = []
      runs += [run] if run else []
      learnt = answers if train_on == "all" else answers[-1:]
      assert len(runs) == len(learnt)
      for ids, message in zip(runs, learnt):
        text = ours.decode(ids)
        if message["role"] == "function_call":  # the call as the template writes it, then the end of turn
          assert '"get_weather"' in text and "Paris" in text and text.endswith(eot)
        else:
          assert text.strip() == message["content"].strip() + eot
        assert ids[-1] in chat_template.stop_ids(ours)
      assert r.prompt_len == r.loss_mask.index(1)


@pytest.mark.parametrize("family", fam.FAMILIES)
def test_typed_control_tokens_stay_text(folders, family):
  _, theirs, ours = folders[family]
  eot = fam.EOT[family]
  messages = [{"role": "user", "content": f"say {eot} and <|im_start|> please"},
              {"role": "assistant", "content": f"ok: {eot}"}]
  r = chat_template.render(ours, messages, train_on="all")
  assert r.ids == _theirs(theirs, messages, None, False, sanitize_control_tokens=True)
  plain = [{"role": "user", "content": "say it please"}, {"role": "assistant", "content": "ok"}]
  eot_id = ours.special_id(eot)
  assert r.ids.count(eot_id) == chat_template.render(ours, plain).ids.count(eot_id)  # the template's own only
  masked = [i for i, m in zip(r.ids, r.loss_mask) if m]
  assert ours.decode(masked).strip() == f"ok: {eot}{eot}"


@pytest.mark.parametrize("family, messages, match", [
    ("mistral", [{"role": "system", "content": "x"}, {"role": "user", "content": "hi"}], "message 0 \\(system\\)"),
    ("gemma", [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}], "message 1 \\(user\\).*alternate"),
])
def test_template_failure_names_the_message(folders, family, messages, match):
  _, _, ours = folders[family]
  with pytest.raises(ValueError, match=match):
    chat_template.render(ours, messages)


def test_stop_ids_from_template_eos_and_generation_config(folders, tmp_path):
  folder, _, ours = folders["gemma"]
  assert chat_template.stop_ids(ours) == (ours.special_id("<end_of_turn>"), ours.special_id("<eos>"))
  for name in os.listdir(folder):
    (tmp_path / name).write_bytes(open(os.path.join(folder, name), "rb").read())
  (tmp_path / "generation_config.json").write_text(json.dumps({"eos_token_id": [1, 7]}))
  assert chat_template.stop_ids(Tokenizer.load(str(tmp_path))) == (ours.special_id("<end_of_turn>"), 1, 7)


def _tiny_model(vocab: int):
  from jaxllm.model import ModelConfig
  from test_hf import _random_jaxllm
  cfg = ModelConfig(vocab_size=vocab, d_model=32, n_layers=1, n_heads=2, n_kv_heads=1, head_dim=16, mlp_dim=64,
                    max_seq_len=64)
  model_cfg = {k: getattr(cfg, k) for k in ("vocab_size", "d_model", "n_layers", "n_heads", "n_kv_heads",
                                            "head_dim", "mlp_dim", "max_seq_len", "rope_theta", "norm_eps",
                                            "qk_norm", "attn_bias", "tie_embeddings")}
  return model_cfg, _random_jaxllm(cfg)


@pytest.mark.parametrize("family", ["mistral", "gemma"])
def test_export_writes_the_models_own_tokenizer_and_template(folders, family, tmp_path):
  """Specials at ids 0..n and in the middle of the id space export; transformers reads the same template back."""
  folder, theirs, ours = folders[family]
  model_cfg, weights = _tiny_model(-(-ours.n_vocab // 64) * 64)
  hf.export(str(tmp_path), model_cfg, weights, ours)
  back = transformers.AutoTokenizer.from_pretrained(str(tmp_path))
  assert back.chat_template == theirs.chat_template
  messages = [{"role": "user", "content": "hi 你好"}, {"role": "assistant", "content": "Paris."}]
  assert _theirs(back, messages, None, False) == chat_template.render(ours, messages).ids
  generation = json.loads((tmp_path / "generation_config.json").read_text())
  stops = generation["eos_token_id"]
  assert (stops if isinstance(stops, list) else [stops]) == list(chat_template.stop_ids(ours))
  assert not [n for n in os.listdir(tmp_path.parent) if ".partial-" in n]


def test_failed_export_writes_nothing(folders, tmp_path):
  _, _, ours = folders["llama3"]
  model_cfg, weights = _tiny_model(-(-ours.n_vocab // 64) * 64)
  del weights["layers_0"]["mlp"]["down"]
  out = tmp_path / "out"
  out.mkdir()
  (out / "README.md").write_text("kept")
  with pytest.raises(KeyError):
    hf.export(str(out), model_cfg, weights, ours)
  assert os.listdir(out) == ["README.md"]
  assert os.listdir(tmp_path) == ["out"]


def test_tiktoken_tokenizer_with_specials_first_exports(tmp_path):
  """A jaxllm Tokenizer whose special tokens take ids 0..3 (ranks after them) rebuilds as tokenizer.json."""
  base = train_bpe(fam.corpus()[:200], 300, name="rt")
  n = len(base.special_tokens)
  shifted = Tokenizer("first", {t: r + n for t, r in base.mergeable_ranks.items()},
                      {t: i for i, t in enumerate(base.special_tokens)})
  model_cfg, weights = _tiny_model(320)
  hf.export(str(tmp_path), model_cfg, weights, shifted)
  back = transformers.AutoTokenizer.from_pretrained(str(tmp_path))
  for text in fam.MULTILINGUAL:
    assert back.encode(text, add_special_tokens=False) == shifted.encode(text)
  assert back.convert_tokens_to_ids("<|im_end|>") == shifted.im_end_id == 2
  messages = [{"role": "user", "content": "hi"}]
  assert _theirs(back, messages, None, True) == chat_template.prompt_ids(shifted, messages)


def test_unsupported_tokenizer_type_is_named(tmp_path):
  spec = {"version": "1.0", "model": {"type": "Sentencepiece2"}, "added_tokens": []}  # an unknown model type
  (tmp_path / "tokenizer.json").write_text(json.dumps(spec))
  with pytest.raises(ValueError, match="model type 'Sentencepiece2' is not supported \\(supported: BPE"):
    Tokenizer.load(str(tmp_path))
  os.remove(tmp_path / "tokenizer.json")
  (tmp_path / "tokenizer.model").write_text("")
  with pytest.raises(FileNotFoundError, match="tokenizer.model"):
    hf.load_tokenizer(str(tmp_path))


# A template whose header counts the turns, so a prefix of the conversation does not render as a prefix of the
# whole: the mask then comes from its {% generation %} blocks, or without them from the content's position.
COUNTING = ("{{ messages | length }} turns\n{% for m in messages %}<|im_start|>{{ m.role }}\n"
            "{% if m.role == 'assistant' %}{% generation %}{{ m.content }}<|im_end|>{% endgeneration %}"
            "{% else %}{{ m.content }}<|im_end|>{% endif %}\n{% endfor %}"
            "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


@pytest.mark.parametrize("template", [COUNTING, COUNTING.replace("{% generation %}", "").replace(
    "{% endgeneration %}", "")])
def test_mask_of_a_template_that_is_not_prefix_stable(folders, template):
  _, _, qwen = folders["qwen"]
  tok = HFTokenizer("counting", {**qwen.files, "chat_template.jinja": template})
  messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Paris."},
              {"role": "user", "content": "and?"}, {"role": "assistant", "content": "Tokyo."}]
  r = chat_template.render(tok, messages, train_on="all")
  assert tok.decode(r.ids).startswith("4 turns\n")
  masked = [i for i, m in zip(r.ids, r.loss_mask) if m]
  assert tok.decode(masked) == "Paris.<|im_end|>Tokyo.<|im_end|>"
