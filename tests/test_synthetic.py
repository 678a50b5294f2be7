"""The built-in task world: determinism, disjoint splits, correct worked arithmetic, wrong answers that are
really wrong, and the shape of every stage format."""
import os
import random
import re
import subprocess
import sys

import pytest

from conftest import REPO
from jaxllm import answers
from jaxllm.data import synthetic

STEP = re.compile(r"^(\d+) ([-+*]) (\d+) = (-?\d+)$")
OPS = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b}


def _parse_solution(solution: str) -> tuple[list[tuple[int, str, int, int]], int]:
  *lines, last = solution.split("\n")
  assert last.startswith("#### "), solution
  steps = []
  for line in lines:
    m = STEP.match(line)
    assert m is not None, f"unparseable step {line!r} in {solution!r}"
    steps.append((int(m[1]), m[2], int(m[3]), int(m[4])))
  return steps, int(last[len("#### "):])


def test_same_seed_same_problems_and_prefix_stable():
  assert synthetic.problems(3, "train", 300) == synthetic.problems(3, "train", 300)
  assert synthetic.problems(3, "train", 500)[:300] == synthetic.problems(3, "train", 300)
  for fn in (synthetic.pretrain_documents, synthetic.sft_examples, synthetic.preference_pairs,
             synthetic.rl_prompts):
    assert fn(3, "eval", 50) == fn(3, "eval", 50), fn.__name__


def test_different_seeds_differ():
  a = [p.question for p in synthetic.problems(0, "train", 200)]
  b = [p.question for p in synthetic.problems(1, "train", 200)]
  assert a != b
  assert len(set(a) & set(b)) < 20  # not the same list shuffled either


@pytest.mark.slow
def test_independent_of_python_hash_seed():
  code = ("from jaxllm.data import synthetic; "
          "print([p.question for p in synthetic.problems(5, 'eval', 20)])")
  outs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONHASHSEED": hs}).stdout for hs in ("1", "2")}
  assert len(outs) == 1
  assert outs.pop().strip() == str([p.question for p in synthetic.problems(5, "eval", 20)])


@pytest.mark.parametrize("mix", [synthetic.DEFAULT_MIX, {"mul": 1.0}])
def test_train_and_eval_are_disjoint(mix):
  # The mul-only world has ~60k problems, so 3000 + 3000 draws would share ~150 questions if the split
  # did not separate them.
  train = {p.question for s in (0, 1) for p in synthetic.problems(s, "train", 3000, mix=mix)}
  evals = {p.question for s in (0, 2) for p in synthetic.problems(s, "eval", 3000, mix=mix)}
  assert len(train) > 2000 and len(evals) > 2000
  assert not train & evals


def test_unknown_split_or_kind_raises():
  with pytest.raises(ValueError, match="validation"):
    synthetic.problems(0, "validation", 3)
  with pytest.raises(ValueError, match="division"):
    synthetic.problems(0, "train", 3, mix={"division": 1.0})


@pytest.mark.parametrize("split", ["train", "eval"])
def test_solutions_are_correct_worked_arithmetic(split):
  for p in synthetic.problems(7, split, 2000):
    steps, final = _parse_solution(p.solution)
    assert p.solution.endswith(f"\n#### {p.answer}")
    assert final == p.answer and p.steps == tuple(p.solution.split("\n")[:-1])
    assert 1 <= len(steps) <= 2
    for a, op, b, c in steps:
      assert OPS[op](a, b) == c, p
      assert a <= 40 and b <= 20  # small numbers a tiny model can learn
    for (_, _, _, prev), (a, _, _, _) in zip(steps, steps[1:]):
      assert a == prev, p  # two-step problems chain the first result
    assert steps[-1][3] == p.answer > 0
    assert answers.extract_final_answer(p.solution) == str(p.answer)
    assert answers.has_answer_format(p.solution)


def test_mix_controls_the_difficulty():
  def ops(ps):
    return {tuple(op for _, op, _, _ in _parse_solution(p.solution)[0]) for p in ps}

  assert ops(synthetic.problems(0, "train", 300, mix={"add": 1.0})) == {("+",)}
  assert ops(synthetic.problems(0, "train", 300, mix={"sub": 1.0})) == {("-",)}
  assert ops(synthetic.problems(0, "train", 300, mix={"mul": 1.0})) == {("*",)}
  two = synthetic.problems(0, "train", 300, mix={"two_step": 1.0})
  assert ops(two) == {("+", "-"), ("-", "+"), ("*", "+")}
  default = synthetic.problems(0, "train", 4000)
  two_step = sum(len(p.steps) == 2 for p in default) / len(default)
  assert abs(two_step - synthetic.DEFAULT_MIX["two_step"]) < 0.05


def test_vocabulary_is_small():
  words = {w.strip(".?,") for p in synthetic.problems(0, "train", 5000) for w in p.question.split()}
  words = {w for w in words if not w.isdigit()}
  assert len(words) < 120, sorted(words)


def test_wrong_solution_is_wrong_but_well_formed():
  rng = random.Random(0)
  for p in synthetic.problems(11, "train", 2000):
    wrong = synthetic.wrong_solution(p, rng)
    steps, final = _parse_solution(wrong)  # same format: parseable steps then "#### n"
    assert len(steps) == len(p.steps)
    assert final != p.answer and final >= 0
    assert answers.extract_final_answer(wrong) == str(final)
    assert wrong != p.solution
  p = synthetic.problems(0, "train", 1)[0]
  assert synthetic.wrong_solution(p, random.Random(4)) == synthetic.wrong_solution(p, random.Random(4))


def test_pretrain_documents():
  n = 400
  docs = synthetic.pretrain_documents(2, "train", n)
  probs = synthetic.problems(2, "train", n)
  assert len(docs) == n and all(isinstance(d, str) and d for d in docs)
  qa = [d for d in docs if d.startswith("Question: ")]
  assert 0.3 * n < len(qa) < 0.9 * n  # both the Q/A style and the story style occur
  for doc, p in zip(docs, probs):
    setup = p.question.rsplit(" How many", 1)[0]
    assert setup in doc and str(p.answer) in doc
    if doc.startswith("Question: "):
      assert doc == f"Question: {p.question}\nAnswer: {p.solution}"
    else:
      assert all(f"{s}." in doc for s in p.steps)


def test_sft_examples():
  probs = synthetic.problems(4, "train", 50)
  for msgs, p in zip(synthetic.sft_examples(4, "train", 50), probs, strict=True):
    assert [m["role"] for m in msgs] == ["system", "user", "assistant"]
    assert msgs[0]["content"] == synthetic.SYSTEM_PROMPT
    assert msgs[1]["content"] == p.question and msgs[2]["content"] == p.solution


def test_sft_examples_first_step_only_flaws_a_share_of_multi_step_demonstrations():
  probs = synthetic.problems(4, "train", 3000)
  chats = synthetic.sft_examples(4, "train", 3000, first_step_only=0.7)
  assert [m[1]["content"] for m in chats] == [p.question for p in probs]  # the same problems as without flaws
  flawed = 0
  for msgs, p in zip(chats, probs, strict=True):
    reply = msgs[2]["content"]
    if len(p.steps) == 1 or reply == p.solution:
      assert reply == p.solution
      continue
    flawed += 1
    first, mid = p.steps[0], p.steps[0].rsplit(" = ", 1)[1]
    assert reply == f"{first}\n#### {mid}" and not answers.answers_match(mid, str(p.answer))
  assert 0.65 < flawed / sum(len(p.steps) > 1 for p in probs) < 0.75
  assert chats == synthetic.sft_examples(4, "train", 3000, first_step_only=0.7)
  with pytest.raises(ValueError, match="first_step_only"):
    synthetic.sft_examples(4, "train", 5, first_step_only=1.5)


def test_preference_pairs():
  probs = synthetic.problems(4, "eval", 50)
  for pair, p in zip(synthetic.preference_pairs(4, "eval", 50), probs, strict=True):
    assert set(pair) == {"messages", "chosen", "rejected"}
    assert [m["role"] for m in pair["messages"]] == ["system", "user"]
    assert pair["messages"][1]["content"] == p.question and pair["chosen"] == p.solution
    assert not answers.answers_match(answers.extract_final_answer(pair["rejected"]), str(p.answer))


def test_rl_prompts():
  probs = synthetic.problems(4, "eval", 50)
  for item, p in zip(synthetic.rl_prompts(4, "eval", 50), probs, strict=True):
    assert set(item) == {"messages", "answer"}
    assert [m["role"] for m in item["messages"]] == ["system", "user"]
    assert item["messages"][1]["content"] == p.question and item["answer"] == str(p.answer)


def test_answer_breakdown_classifies_wrong_replies():
  """experiments/answer_breakdown.py's per-kind shares and slip kinds (docs/results.md quotes them) on hand-made replies."""
  sys.path.insert(0, str(REPO / "experiments"))
  import answer_breakdown

  two = synthetic.Problem("q2", ("1 + 14 = 15", "15 - 7 = 8"), 8)
  one = synthetic.Problem("q1", ("9 * 7 = 63",), 63)
  assert answer_breakdown._slip(two, "1 + 14 = 15\n#### 15") == "steps missing"
  assert answer_breakdown._slip(two, "1 + 14 = 14\n14 - 7 = 7\n#### 7") == "step 1: arithmetic slip"
  assert answer_breakdown._slip(two, "1 + 14 = 15\n15 - 7 = 9\n#### 9") == "step 2: arithmetic slip"
  assert answer_breakdown._slip(two, "1 - 14 = -13\n#### -13") == "step 1: operands or operation"
  assert answer_breakdown._slip(one, "nine sevens\n#### 63") == "step 1: not 'a op b = c'"
  replies = ["1 + 14 = 15\n#### 15", "9 * 7 = 63\n#### 63", "1 + 14 = 15\n15 - 7 = 8\n#### 8",
             "9 * 7 = 64\n#### 64"]
  stats = answer_breakdown._stats(replies, [two, one, two, one])
  assert stats["pass@1"] == 0.5 and stats["one-step right"] == 0.5
  assert stats["two-step finished"] == 0.5 and stats["two-step right"] == 0.5
  assert stats["right when finished"] == 1.0
