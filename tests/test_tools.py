"""Tool use: the calculator computes exact arithmetic and refuses everything else with an error string; the
lookup table and call parsing; the loss mask of tool turns in SFT data and the policy-gradient mask of GRPO
rows, each against a hand computation; the engine loop end to end on a forced sequence; refusals."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from jaxllm import chat_template, tools
from jaxllm.data import sft as sft_data, synthetic_tools
from jaxllm.tokenizer import Tokenizer
from jaxllm.tools import calculator, calls, loop

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("expression, want", [
    ("7 + 5", "12"), ("12 - 3", "9"), ("8 * 9", "72"), ("(7 + 5) * 3 / 4", "9"), ("3 / 4", "0.75"),
    ("10 // 3", "3"), ("10 % 4", "2"), ("2 ** 10", "1024"), ("2 ^ 3 ^ 2", "512"), ("-2 ** 2", "-4"),
    ("1.5 * 2", "3"), ("  -(-3)  ", "3"), ("1 / 3", "0.333333"), ("9 ** 9 ** 2", str(9 ** 81))])
def test_calculator_computes_exact_arithmetic(expression, want):
  assert calculator.evaluate(expression) == want


@pytest.mark.parametrize("expression, why", [
    ("1 / 0", "division by zero"), ("5 % 0", "division by zero"), ("7 // (3 - 3)", "division by zero"),
    ("0 ** -1", "division by zero"),
    ("2 ** 100000", "exponent"), ("9 ** 9 ** 9", "exponent"), ("10 ** 300 * 10 ** 300", "too large"),
    ("7 ** 999", "too large"), ("2 ** 0.5", "whole-number"),
    ("__import__('os').system('true')", "unexpected character"), ("import os", "unexpected character"),
    ("x + 1", "unexpected character"), ("1 +", "end of expression"), ("(1 + 2", "end of expression"),
    ("1 + 2)", "unexpected ')'"), ("", "empty"), ("   ", "empty"), ("1" * 201, "longer than 200"),
    ("(" * 60 + "1" + ")" * 60, "nested deeper"), ("-" * 100 + "1", "nested deeper"), ("1" * 199 + "0" * 0, ""),
    (12, "must be a string")])
def test_calculator_refuses_with_an_error_string(expression, why):
  out = calculator.evaluate(expression)
  if not why:  # 199 digits is a valid number
    assert out == "1" * 199
    return
  assert out.startswith("error: ") and why in out, out


def test_run_call_turns_every_failure_into_an_error_string(tmp_path):
  csv_path = tmp_path / "table.csv"
  csv_path.write_text("key,value\nParis,France\nRome,Italy\n")
  json_path = tmp_path / "table.json"
  json_path.write_text(json.dumps({"apple": "2 dollars"}))
  registry = tools.registry("calculator,lookup", str(csv_path))
  call = lambda name, args: calls.format_call(name, args)
  assert tools.run_call(registry, call("lookup", {"key": " paris "})) == "France"
  assert tools.run_call(tools.registry("lookup", str(json_path)), call("lookup", {"key": "Apple"})) == "2 dollars"
  assert tools.run_call(tools.registry("lookup"), call("lookup", {"key": "apples"})).endswith("dollars")  # built-in
  assert tools.run_call(registry, call("lookup", {"key": "Oslo"})) == "error: no entry for 'Oslo'"
  assert tools.run_call(registry, call("calculator", {"expression": "6 * 7"})) == "42"
  assert tools.run_call(registry, call("calculator", {"expr": "6 * 7"})).startswith("error: calculator takes")
  assert tools.run_call(registry, call("search", {})).startswith("error: unknown tool 'search'")
  assert tools.run_call(registry, "<tool_call>{not json}</tool_call>").startswith("error: the call is not JSON")
  assert tools.run_call(registry, "no call at all").startswith("error: no <tool_call>")
  broken = {"boom": tools.Tool("boom", "", {}, lambda args: 1 / 0)}
  assert tools.run_call(broken, call("boom", {})) == "error: boom failed: ZeroDivisionError: division by zero"
  with pytest.raises(ValueError, match="unknown tool 'serch'"):
    tools.registry("calculator,serch")
  bad = tmp_path / "bad.csv"
  bad.write_text("a,b,c\n")
  with pytest.raises(ValueError, match="row 1 has 3 columns"):
    tools.registry("lookup", str(bad))


@pytest.fixture(scope="module")
def tok(tokenizer_dir) -> Tokenizer:
  return Tokenizer.load(tokenizer_dir)


def test_sft_tool_turns_carry_no_loss(tok):
  """The loss mask of a calculator demonstration, written out turn by turn: calls and the answer are learnt,
  the tool's results, the prompt and every header are not."""
  record = synthetic_tools.chats(0, "train", 40, tools=["calculator"])
  record = next(r for r in record if sum(m["role"] == "tool" for m in r["messages"]) == 2)
  messages = record["messages"]
  want_ids, want_mask = [], []
  for m in messages:
    header = [tok.im_start_id] + tok.encode(("assistant" if m["role"] == "function_call" else m["role"]) + "\n")
    content = calls.render_function_call(m["content"]) if m["role"] == "function_call" else m["content"]
    body = tok.encode(content) + [tok.im_end_id]
    learnt = int(m["role"] in ("function_call", "assistant"))
    want_ids += header + body + tok.encode("\n")
    want_mask += [0] * len(header) + [learnt] * len(body) + [0] * len(tok.encode("\n"))
  examples, _ = sft_data.encode(tok, [record], seq_len=1024, train_on="all")
  n = len(examples[0].ids)  # trimmed after the final <|im_end|>
  assert examples[0].ids.tolist() == want_ids[:n] and examples[0].loss_mask.tolist() == want_mask[:n]
  learnt = tok.decode([i for i, m in zip(want_ids, want_mask) if m])
  assert learnt.count("<tool_call>") == 2 and "#### " in learnt
  tool_results = [m["content"] for m in messages if m["role"] == "tool"]
  assert sum(want_mask) == sum(len(tok.encode(calls.render_function_call(m["content"]) if m["role"] ==
                                          "function_call" else m["content"])) + 1
                               for m in messages if m["role"] in ("function_call", "assistant"))
  assert all(r.isdigit() for r in tool_results)


def _ids(tok, text):
  return tok.encode(text)


def test_engine_loop_on_a_forced_sequence(tok):
  """Row 0 calls the calculator twice (the second call with junk after its closing marker, which is cut), row
  1 answers at once, row 2 keeps calling past max_calls. Each round's inputs are checked against the ChatML
  pieces written by hand, and the sampled flags against the tokens the script emitted."""
  end = tok.im_end_id
  call_a = _ids(tok, calls.format_call("calculator", {"expression": "7 + 5"})) + [end]
  call_b = _ids(tok, calls.format_call("calculator", {"expression": "12 - 3"}))
  junk = _ids(tok, " and more")
  answer = _ids(tok, "7 + 5 = 12\n12 - 3 = 9\n#### 9") + [end]
  script = {0: [call_a, _ids(tok, "#### 4") + [end], call_a], 1: [call_b + junk + [end], call_a],
            2: [answer, call_a]}
  prompts = [[tok.im_start_id, 5, 6], [tok.im_start_id, 7], [tok.im_start_id, 8, 9, 10]]
  seen = []

  def generate_fn(rows, inputs, round_):
    seen.append((list(rows), [list(x) for x in inputs]))
    return [loop.Sampled(script[round_][k], [-0.5] * len(script[round_][k]), True) for k in range(len(rows))]

  registry = tools.registry("calculator")
  out = loop.run(generate_fn, tok, registry, prompts, max_calls=2, max_len=4096, max_new_tokens=8)
  nl, head = _ids(tok, "\n"), lambda role: [tok.im_start_id] + _ids(tok, role + "\n")
  turn = lambda result, closed: ((nl if closed else [end] + nl) + head("tool") + _ids(tok, result) + [end] + nl
                                 + head("assistant"))
  assert chat_template.tool_turn_ids(tok, "12", True) == turn("12", True)
  assert seen[0][0] == [0, 1, 2]
  assert seen[1] == ([0, 2], [prompts[0] + call_a + turn("12", True), prompts[2] + call_a + turn("12", True)])
  assert seen[2][0] == [0, 2]
  row0 = call_a + turn("12", True) + call_b + turn("9", False) + answer
  assert out[0].ids == row0 and out[0].calls == 2 and out[0].results == ["12", "9"] and out[0].stopped
  assert out[0].sampled == [1] * len(call_a) + [0] * len(turn("12", True)) + [1] * len(call_b) + \
      [0] * len(turn("9", False)) + [1] * len(answer)
  assert out[0].logprobs == [-0.5 if s else 0.0 for s in out[0].sampled]
  assert tok.decode(out[0].reply_ids) == "7 + 5 = 12\n12 - 3 = 9\n#### 9"
  assert out[1].ids == script[0][1] and out[1].calls == 0 and tok.decode(out[1].reply_ids) == "#### 4"
  assert out[2].calls == 3 and len(out[2].results) == 2  # the third call is past max_calls: unanswered, row ends
  # The GRPO mask over rows laid out as rl.layout does (targets shifted by one): 0 exactly on tool-turn targets.
  seq_len = len(prompts[0]) + len(row0) + 3
  mask = loop.sampled_mask([len(p) for p in prompts], out, seq_len)
  hand = np.ones(seq_len, np.float32)
  p = len(prompts[0])
  first = p - 1 + len(call_a)
  hand[first:first + len(turn("12", True))] = 0
  second = first + len(turn("12", True)) + len(call_b)
  hand[second:second + len(turn("9", False))] = 0
  np.testing.assert_array_equal(mask[0], hand)
  assert mask[1].all()


def test_unanswerable_problems_lack_exactly_one_given_number():
  plain = synthetic_tools.answer_items(0, "eval", 30)[0]
  probes = synthetic_tools.unanswerable_prompts(0, "eval", 30)
  digits = lambda text: sum(w.isdigit() for w in text.replace(".", " ").split())
  for (_, q), (_, u) in zip(plain, probes):
    assert digits(u["content"]) == digits(q["content"]) - 1
    assert any(v in u["content"] for v in ("some", "a few", "several"))
  mixed = synthetic_tools.chats(0, "train", 400, unanswerable=0.25)
  refused = [c for c in mixed if c["messages"][-1]["content"] == synthetic_tools.REFUSAL]
  assert 60 < len(refused) < 140
  answered = [c for c in mixed if c not in refused]
  same = synthetic_tools.chats(0, "train", 400)
  assert all(c in same for c in answered)  # answerable problems are exactly those without the setting
  assert synthetic_tools.is_refusal("Sorry, I don't know.") and not synthetic_tools.is_refusal("#### 4")


def _forced_rollout(tmp_path, tokenizer_dir, monkeypatch):
  sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
  from conftest import tiny_config
  from jaxllm import rewards, rl, runtime, train
  from jaxllm.state import make_optimizer
  from tool_grpo_worker import forced_generate

  env = runtime.prepare(tiny_config("grpo", tmp_path, tokenizer_dir, **{
      "tools.names": "calculator", "sampling.max_new_tokens": 96, "data.seq_len": 256, "model.max_seq_len": 256}))
  monkeypatch.setattr(rl.tool_rollouts.sampling, "generate", forced_generate(env.tokenizer))
  state, _ = train.init_state(env, train.Task(loss="grpo", batches=None), make_optimizer(env.config.optim, 1))
  records = synthetic_tools.rl_prompts(0, "train", env.config.rl.prompts_per_step)
  prompts, _ = rl.encode_prompts(env.tokenizer, records, env.config.rl.max_prompt_len)
  import jax
  return env, prompts, rl.rollout(env, state, prompts, rewards.build(env.config.rl), jax.random.PRNGKey(0))


@pytest.mark.slow  # > 5 s: a tiny GRPO state and its reference log-probs compile
def test_grpo_rows_give_tool_results_no_policy_gradient(tmp_path, tokenizer_dir, monkeypatch):
  """Every sample calls the calculator once, reads "5" and answers: its loss mask, by hand, is 1 on the call
  and the answer and 0 on the tool turn between them."""
  env, prompts, roll = _forced_rollout(tmp_path, tokenizer_dir, monkeypatch)
  tok, g = env.tokenizer, env.config.rl.group_size
  call = tok.encode(calls.format_call("calculator", {"expression": "2 + 3"})) + [tok.im_end_id]
  turn = chat_template.tool_turn_ids(tok, "5", True)
  mask = roll.batch["loss_mask"]
  for r in range(len(prompts) * g):
    p = len(prompts[r // g].ids)
    answer = tok.encode(f"#### {5 if r % 2 else 4}") + [tok.im_end_id]
    hand = np.zeros(mask.shape[1], np.float32)
    hand[p - 1:p - 1 + len(call)] = 1
    hand[p - 1 + len(call) + len(turn):p - 1 + len(call) + len(turn) + len(answer)] = 1
    np.testing.assert_array_equal(mask[r], hand, err_msg=f"row {r}")
  # The reference log-probs (the KL term) are zero off the mask: tool tokens get no KL either.
  assert not np.any(roll.batch["ref_logprobs"][mask == 0])


@pytest.mark.slow
def test_grpo_with_tools_on_eight_devices_matches_one(tmp_path, tokenizer_dir):
  """The forced tool-calling GRPO run (tests/tool_grpo_worker.py) trains the same on a 2x2x2 mesh of 8 fake
  devices as on one."""
  losses = []
  for devices, mesh in ((1, ("1", "1", "1")), (8, ("2", "2", "2"))):
    env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}", "JAX_PLATFORMS": "cpu",
           "PYTHONPATH": REPO}
    workdir = tmp_path / f"d{devices}"
    proc = subprocess.run([sys.executable, os.path.join(REPO, "tests", "tool_grpo_worker.py"), str(workdir),
                           tokenizer_dir, *mesh], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [json.loads(line) for line in open(workdir / "metrics.jsonl")]
    losses.append([r["loss"] for r in rows if r["split"] == "train"])
  assert len(losses[0]) == 2 and all(np.isfinite(losses[0]))
  np.testing.assert_allclose(losses[1], losses[0], rtol=1e-4)


@pytest.mark.slow  # ~20 s: a tiny workdir is written and loaded
def test_chat_runs_the_call_and_speaks_again(tmp_path, monkeypatch):
  """A chat model forced to call the calculator and then answer: the result is printed, the history holds the
  call and the tool turn, and the second reply is what the user gets."""
  import io

  from configs import chat as chat_config
  from conftest import write_tiny_workdir
  from jaxllm import sampling
  from jaxllm.stages import chat

  workdir = write_tiny_workdir(str(tmp_path), max_seq_len=1024)  # the schema is ~300 tokens
  config = chat_config.get_config()
  config.init_from = workdir
  config.tools.names = "calculator"
  config.sampling.max_new_tokens = 96
  tok = Tokenizer.load(os.path.join(workdir, "tokenizer"))
  replies = iter([calls.format_call("calculator", {"expression": "6 * 7"}), "it is 42"])
  prompts = []

  def forced(model, weights, batch, params, rng, on_token=None, **_):
    prompts.append(list(batch[0]))
    ids = tok.encode(next(replies)) + [tok.im_end_id]
    tokens = np.zeros((1, params.max_new_tokens), np.int32)
    tokens[0, :len(ids)] = ids
    return sampling.Generation(tokens, np.zeros_like(tokens, np.float32), np.array([len(ids)]), np.array([True]))

  monkeypatch.setattr(chat.sampling, "generate", forced)
  out = io.StringIO()
  conversation = chat.Chat(config, out)
  assert conversation.reply("what is 6 times 7?") == "it is 42"
  assert "[tool] 42" in out.getvalue()
  assert [m["role"] for m in conversation.messages] == ["user", "function_call", "tool", "assistant"]
  assert conversation.messages[2]["content"] == "42"
  schema = tools.describe(tools.registry("calculator"))
  assert prompts[1] == chat_template.prompt_ids(tok, conversation.messages[:3], tools=schema)
