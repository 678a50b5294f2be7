"""The built-in task world: deterministic, seed-driven arithmetic word problems.

Every stage runs on this when no dataset is named, so the pipeline needs no download and each stage has a
measurable target. Problems are short, templated and use small numbers so that a tiny model (2-4 layers,
a ~1k-token vocabulary, minutes on a CPU) can learn them:

  add       one step, a + b with a, b in 1..20        ("buys 5 more", "in total")
  sub       one step, a - b with 1 <= b < a <= 20     ("gives away", "how many more ... than")
  mul       one step, a * b with a, b in 2..9         ("3 boxes, each box has 4", "costs 4 dollars each")
  two_step  two chained steps: + then -, - then +, or a small product (2..6 * 2..6) then + c

The mix of kinds is a keyword argument (`DEFAULT_MIX` otherwise); one-step add/sub is easy, two_step is the
hard tail that leaves room for RL. A solution is the worked steps, one per line, then `#### <answer>`:

  Mia has 7 apples. She buys 5 more apples. Then she sells 3 apples. How many apples does Mia have left?
  7 + 5 = 12
  12 - 3 = 9
  #### 9

Splits: a problem belongs to "eval" iff a stable hash (blake2b, not the salted `hash()`) of its defining
tuple falls in a fixed 1/`EVAL_MODULUS` slice, so "train" and "eval" never share a question whatever the
seed or n. Within a split, `problems(seed, split, n)` is a pure function; a longer list extends a shorter
one with the same seed (prefix-stable). The stage helpers (`sft_examples`, `rl_prompts`, ...) all draw
from `problems(seed, split, n)`, so the same seed gives the same problems in every format.
"""
from __future__ import annotations

import bisect
import dataclasses
import hashlib
import itertools
import random
import re
from collections.abc import Callable, Mapping

SYSTEM_PROMPT = "Solve the problem. Show your steps, then give the answer after ####."

SPLITS = ("train", "eval")
EVAL_MODULUS = 8  # 1 in 8 of all possible problems is held out for "eval"; must divide 256
DEFAULT_MIX: Mapping[str, float] = {"add": 0.25, "sub": 0.25, "mul": 0.2, "two_step": 0.3}

# A modest vocabulary so a ~1k-token tokenizer trained on this text covers it whole.
_NAMES = (("Mia", "she"), ("Emma", "she"), ("Lily", "she"), ("Ava", "she"), ("Zoe", "she"),
          ("Sara", "she"), ("Anna", "she"), ("Nora", "she"), ("Leo", "he"), ("Sam", "he"), ("Ben", "he"),
          ("Max", "he"), ("Tom", "he"), ("Jack", "he"), ("Noah", "he"), ("Omar", "he"))
_ITEMS = (("apple", "apples"), ("pencil", "pencils"), ("sticker", "stickers"), ("marble", "marbles"),
          ("cookie", "cookies"), ("book", "books"), ("card", "cards"), ("coin", "coins"), ("shell", "shells"),
          ("flower", "flowers"), ("egg", "eggs"), ("ball", "balls"))
_CONTAINERS = (("bag", "bags"), ("box", "boxes"), ("basket", "baskets"), ("jar", "jars"))
_GAIN_VERBS = ("buys", "finds", "gets")
_LOSS_VERBS = ("gives away", "sells", "loses")

_STEP_RE = re.compile(r"^(-?\d+) ([-+*]) (-?\d+) = (-?\d+)$")


@dataclasses.dataclass(frozen=True)
class Problem:
  question: str
  steps: tuple[str, ...]  # worked steps, each "a op b = c" with op in + - *
  answer: int

  @property
  def solution(self) -> str:
    return _format_solution(self.steps, self.answer)


def _format_solution(steps: tuple[str, ...] | list[str], answer: int) -> str:
  return "\n".join([*steps, f"#### {answer}"])


# ---------------------------------------------------------------------------------------------------------
# Templates. A problem is defined by a small tuple, its key: (template, person, item, ..., numbers). Each
# kind samples a key (cheap, so the split filter can reject keys before any text is built); `_render` turns
# a key into (setup, ask, statement, steps, answer): `setup` the fact sentences, `ask` the question
# sentence, `statement` a sentence stating the answer (for pretraining prose). Different keys render
# different questions, so disjoint keys mean disjoint questions.
# ---------------------------------------------------------------------------------------------------------
_Key = tuple
_Rendered = tuple[str, str, str, tuple[str, ...], int]


# A sampler decodes one 64-bit random integer `x` as a mixed-radix number, one digit per field (divmod is
# ~5x cheaper than rng.randint, which matters because the eval split rejects ~7 of every 8 keys; the bias
# of 2**64 mod range is negligible).
_NN, _NI, _NC, _NG, _NL = len(_NAMES), len(_ITEMS), len(_CONTAINERS), len(_GAIN_VERBS), len(_LOSS_VERBS)


def _sample_add(x: int) -> _Key:
  x, i = divmod(x, _NN); x, it = divmod(x, _NI); x, form = divmod(x, 2)
  x, a = divmod(x, 20); x, b = divmod(x, 20)
  if form:
    return ("add_more", i, it, x % _NG, a + 1, b + 1)
  return ("add_total", i, _other(x, i), it, a + 1, b + 1)


def _sample_sub(x: int) -> _Key:
  x, i = divmod(x, _NN); x, it = divmod(x, _NI); x, a = divmod(x, 19); x, form = divmod(x, 2)
  a += 2  # 2..20
  x, b = divmod(x, a - 1)  # 1..a-1, so the answer is >= 1
  if form:
    return ("sub_left", i, it, x % _NL, a, b + 1)
  return ("sub_compare", i, _other(x, i), it, a, b + 1)


def _sample_mul(x: int) -> _Key:
  x, i = divmod(x, _NN); x, it = divmod(x, _NI); x, form = divmod(x, 2)
  x, a = divmod(x, 8); x, b = divmod(x, 8)
  if form:
    return ("mul_groups", i, it, x % _NC, a + 2, b + 2)
  return ("mul_price", i, it, a + 2, b + 2)


def _sample_two_step(x: int) -> _Key:
  x, i = divmod(x, _NN); x, it = divmod(x, _NI); x, form = divmod(x, 3)
  if form == 0:  # gain, then lose (never all of them)
    x, a = divmod(x, 20); x, b = divmod(x, 20); x, v = divmod(x, _NG); x, w = divmod(x, _NL)
    a, b = a + 1, b + 1
    return ("gain_lose", i, it, v, w, a, b, 1 + x % min(20, a + b - 1))
  if form == 1:  # lose, then gain
    x, a = divmod(x, 19); x, c = divmod(x, 20); x, v = divmod(x, _NL); x, w = divmod(x, _NG)
    a += 2
    return ("lose_gain", i, it, v, w, a, 1 + x % (a - 1), c + 1)
  # small groups, then a few more
  x, a = divmod(x, 5); x, b = divmod(x, 5); x, c = divmod(x, 10); x, k = divmod(x, _NC)
  return ("groups_more", i, it, k, x % _NG, a + 2, b + 2, c + 1)


def _other(x: int, i: int) -> int:
  j = x % (_NN - 1)
  return j + (j >= i)


def _count(k: int, item: tuple[str, str]) -> str:
  return f"{k} {item[0] if k == 1 else item[1]}"


def _render(key: _Key) -> _Rendered:
  template, i, *rest = key
  name, pron = _NAMES[i]
  pron_up = pron.capitalize()
  if template in ("add_more", "sub_left"):
    it, v, a, b = rest
    item = _ITEMS[it]
    if template == "add_more":
      ans = a + b
      return (f"{name} has {_count(a, item)}. {pron_up} {_GAIN_VERBS[v]} {b} more {item[b != 1]}.",
              f"How many {item[1]} does {name} have now?", f"Now {name} has {_count(ans, item)}.",
              (f"{a} + {b} = {ans}",), ans)
    ans = a - b
    return (f"{name} has {_count(a, item)}. {pron_up} {_LOSS_VERBS[v]} {_count(b, item)}.",
            f"How many {item[1]} does {name} have left?", f"Now {name} has {_count(ans, item)} left.",
            (f"{a} - {b} = {ans}",), ans)
  if template in ("add_total", "sub_compare"):  # the same two facts; only the question differs
    j, it, a, b = rest
    other, item = _NAMES[j][0], _ITEMS[it]
    setup = f"{name} has {_count(a, item)}. {other} has {_count(b, item)}."
    if template == "add_total":
      ans = a + b
      return (setup, f"How many {item[1]} do {name} and {other} have in total?",
              f"{name} and {other} have {_count(ans, item)} in total.", (f"{a} + {b} = {ans}",), ans)
    ans = a - b
    return (setup, f"How many more {item[1]} does {name} have than {other}?",
            f"{name} has {ans} more {item[ans != 1]} than {other}.", (f"{a} - {b} = {ans}",), ans)
  if template == "mul_groups":
    it, k, a, b = rest
    item, box, ans = _ITEMS[it], _CONTAINERS[k], a * b
    return (f"{name} has {a} {box[1]}. Each {box[0]} has {b} {item[1]}.",
            f"How many {item[1]} does {name} have in all?", f"{name} has {ans} {item[1]} in all.",
            (f"{a} * {b} = {ans}",), ans)
  if template == "mul_price":
    it, a, b = rest
    item, ans = _ITEMS[it], a * b
    return (f"Each {item[0]} costs {b} dollars. {name} buys {a} {item[1]}.",
            f"How many dollars does {name} spend?", f"{name} spends {ans} dollars.",
            (f"{a} * {b} = {ans}",), ans)
  it, v, w, a, b, c = rest
  item = _ITEMS[it]
  if template == "gain_lose":
    mid, ans = a + b, a + b - c
    return (f"{name} has {_count(a, item)}. {pron_up} {_GAIN_VERBS[v]} {b} more {item[b != 1]}. "
            f"Then {pron} {_LOSS_VERBS[w]} {_count(c, item)}.",
            f"How many {item[1]} does {name} have left?", f"Now {name} has {_count(ans, item)} left.",
            (f"{a} + {b} = {mid}", f"{mid} - {c} = {ans}"), ans)
  if template == "lose_gain":
    mid, ans = a - b, a - b + c
    return (f"{name} has {_count(a, item)}. {pron_up} {_LOSS_VERBS[v]} {_count(b, item)}. "
            f"Then {pron} {_GAIN_VERBS[w]} {c} more {item[c != 1]}.",
            f"How many {item[1]} does {name} have now?", f"Now {name} has {_count(ans, item)}.",
            (f"{a} - {b} = {mid}", f"{mid} + {c} = {ans}"), ans)
  assert template == "groups_more", template
  box, mid, ans = _CONTAINERS[v], a * b, a * b + c
  return (f"{name} has {a} {box[1]}. Each {box[0]} has {b} {item[1]}. "
          f"Then {pron} {_GAIN_VERBS[w]} {c} more {item[c != 1]}.",
          f"How many {item[1]} does {name} have now?", f"Now {name} has {_count(ans, item)}.",
          (f"{a} * {b} = {mid}", f"{mid} + {c} = {ans}"), ans)


_KINDS: dict[str, Callable[[int], _Key]] = {
    "add": _sample_add, "sub": _sample_sub, "mul": _sample_mul, "two_step": _sample_two_step}


# ---------------------------------------------------------------------------------------------------------
# Sampling.
# ---------------------------------------------------------------------------------------------------------
def _stable_int(*parts: object) -> int:
  return int.from_bytes(hashlib.blake2b(repr(parts).encode(), digest_size=8).digest(), "little")


def _in_eval(key: _Key) -> bool:
  # Every field after the template name is a small int (< 256), so bytes() encodes the key exactly and fast;
  # one byte of blake2b is plenty to pick 1 of EVAL_MODULUS buckets (EVAL_MODULUS divides 256).
  return hashlib.blake2b(key[0].encode() + bytes(key[1:]), digest_size=1).digest()[0] % EVAL_MODULUS == 0


def _rng(seed: int, purpose: str, split: str) -> random.Random:
  return random.Random(_stable_int("jaxllm.synthetic", purpose, split, int(seed)))


def _check(split: str, mix: Mapping[str, float]) -> None:
  if split not in SPLITS:
    raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
  unknown = set(mix) - set(_KINDS)
  if unknown:
    raise ValueError(f"unknown problem kinds {sorted(unknown)} in mix; expected some of {sorted(_KINDS)}")
  if any(w < 0 for w in mix.values()) or sum(mix.values()) <= 0:
    raise ValueError(f"mix weights must be >= 0 with a positive sum, got {dict(mix)}")


def _keys(seed: int, split: str, n: int, mix: Mapping[str, float]) -> list[_Key]:
  _check(split, mix)
  samplers = [_KINDS[k] for k, w in mix.items() if w > 0]
  cum = list(itertools.accumulate(w for w in mix.values() if w > 0))
  cum = [c / cum[-1] for c in cum[:-1]]
  rng = _rng(seed, "problems", split)
  r, bits = rng.random, rng.getrandbits
  want_eval = split == "eval"
  out: list[_Key] = []
  while len(out) < n:
    key = samplers[bisect.bisect(cum, r())](bits(64))
    if _in_eval(key) == want_eval:
      out.append(key)
  return out


def _problem(rendered: _Rendered) -> Problem:
  setup, ask, _, steps, answer = rendered
  return Problem(question=f"{setup} {ask}", steps=steps, answer=answer)


def problems(seed: int, split: str, n: int, *, mix: Mapping[str, float] = DEFAULT_MIX) -> list[Problem]:
  """n problems of `split`; a pure function of (seed, split, n, mix)."""
  return [_problem(_render(k)) for k in _keys(seed, split, n, mix)]


def parse_step(step: str) -> tuple[int, str, int, int]:
  """'a op b = c' -> (a, op, b, c)."""
  m = _STEP_RE.match(step)
  if m is None:
    raise ValueError(f"cannot parse step {step!r}")
  return int(m[1]), m[2], int(m[3]), int(m[4])


def wrong_solution(problem: Problem, rng: random.Random) -> str:
  """A plausible worked answer in the same format whose final number is not `problem.answer`.

  One mistake, then honest arithmetic after it: either a slip (one step's result off by 1..3) or a wrong
  operation in one step (+ <-> -, * -> +). Later steps carry the wrong value forward.
  """
  parsed = [parse_step(step) for step in problem.steps]
  for _ in range(8):
    at = rng.randrange(len(parsed))
    slip = rng.choice((-3, -2, -1, 1, 2, 3)) if rng.random() < 0.5 else 0
    steps, prev_true, prev = [], None, None
    for j, (a, op, b, c_true) in enumerate(parsed):
      if a == prev_true:  # a chained step: carry the (possibly wrong) value forward
        a = prev
      if j == at and not slip:
        op = {"+": "-", "-": "+", "*": "+"}[op]
      c = apply_op(a, op, b)
      if j == at and slip:
        c = c + slip if c + slip >= 0 else c - slip
      steps.append(f"{a} {op} {b} = {c}")
      prev_true, prev = c_true, c
    if prev != problem.answer and prev >= 0:
      return _format_solution(steps, prev)
  # Rarely reached; always differs: the last step's result plus one.
  lhs, c = problem.steps[-1].rsplit(" = ", 1)
  return _format_solution([*problem.steps[:-1], f"{lhs} = {int(c) + 1}"], problem.answer + 1)


def apply_op(a: int, op: str, b: int) -> int:
  return a + b if op == "+" else a - b if op == "-" else a * b


# ---------------------------------------------------------------------------------------------------------
# Stage formats.
# ---------------------------------------------------------------------------------------------------------
def pretrain_documents(seed: int, split: str, n: int, *,
                       mix: Mapping[str, float] = DEFAULT_MIX) -> list[str]:
  """One plain-text document per problem: a "Question:/Answer:" worked example, or a short story that
  states the facts, does the arithmetic and states the result."""
  rng = _rng(seed, "pretrain", split)
  docs = []
  for key in _keys(seed, split, n, mix):
    setup, ask, statement, steps, answer = _render(key)
    if rng.random() < 0.6:
      docs.append(f"Question: {setup} {ask}\nAnswer: {_format_solution(steps, answer)}")
    else:
      docs.append(f"{setup} {' '.join(s + '.' for s in steps)} {statement}")
  return docs


def _prompt(problem: Problem) -> list[dict]:
  return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": problem.question}]


def sft_examples(seed: int, split: str, n: int, *, mix: Mapping[str, float] = DEFAULT_MIX,
                 first_step_only: float = 0.0) -> list[list[dict]]:
  """Chats answered by the worked solution. With `first_step_only` > 0, that seeded share of the multi-step
  problems is answered by a flawed demonstration that stops after the first step and gives its result as the
  answer (the same problems as with 0, whatever the share)."""
  if not 0.0 <= first_step_only <= 1.0:
    raise ValueError(f"first_step_only must be in [0, 1], got {first_step_only}")
  rng = _rng(seed, "first_step_only", split)
  chats = []
  for p in problems(seed, split, n, mix=mix):
    flawed = rng.random() < first_step_only and len(p.steps) > 1
    reply = _format_solution(p.steps[:1], parse_step(p.steps[0])[3]) if flawed else p.solution
    chats.append([*_prompt(p), {"role": "assistant", "content": reply}])
  return chats


def preference_pairs(seed: int, split: str, n: int, *,
                     mix: Mapping[str, float] = DEFAULT_MIX) -> list[dict]:
  rng = _rng(seed, "preference", split)
  return [{"messages": _prompt(p), "chosen": p.solution, "rejected": wrong_solution(p, rng)}
          for p in problems(seed, split, n, mix=mix)]


def rl_prompts(seed: int, split: str, n: int, *, mix: Mapping[str, float] = DEFAULT_MIX) -> list[dict]:
  return [{"messages": _prompt(p), "answer": str(p.answer)} for p in problems(seed, split, n, mix=mix)]
