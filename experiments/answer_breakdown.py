"""Where a built-in-world model's answers go wrong: held-out pass@1 split by one-step and two-step problems.

  python experiments/answer_breakdown.py WORKDIR [WORKDIR ...] [--samples=4]

For each workdir (SFT or GRPO), on the first 200 held-out problems: greedy pass@1; one-step problems right;
two-step problems finished (the reply works both steps) and right; the same at temperature 1 over --samples
draws; pass@k (any of the draws right); and, for wrong greedy replies, which step's arithmetic slipped. The
docs/results.md's GRPO paragraphs quote these numbers.
"""
from __future__ import annotations

import argparse
import collections
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from configs import eval as eval_config  # noqa: E402
from jaxllm import answers, evals, runtime  # noqa: E402
from jaxllm.data import synthetic  # noqa: E402


def _worked_lines(text: str) -> list[str]:
  return [line.strip() for line in text.strip().split("\n") if line.strip() and not line.startswith("####")]


def _slip(problem: synthetic.Problem, text: str) -> str:
  """Which worked step of a wrong reply first departs from the right one, and how."""
  for j, (want, got) in enumerate(zip(problem.steps, _worked_lines(text))):
    try:
      a, op, b, c = synthetic.parse_step(got)
    except ValueError:
      return f"step {j + 1}: not 'a op b = c'"
    if j == 0 and (a, op, b) != synthetic.parse_step(want)[:3]:
      return "step 1: operands or operation"
    if c != synthetic.apply_op(a, op, b):
      return f"step {j + 1}: arithmetic slip"
  return "steps missing" if len(_worked_lines(text)) < len(problem.steps) else "other"


def _stats(texts: list[str], problems: list[synthetic.Problem]) -> dict:
  right = np.array([answers.answers_match(answers.extract_final_answer(t), str(p.answer))
                    for t, p in zip(texts, problems)])
  two = np.array([len(p.steps) == 2 for p in problems])
  finished = two & np.array([len(_worked_lines(t)) >= 2 for t in texts])
  return {"pass@1": right.mean(), "one-step right": right[~two].mean(), "two-step finished": finished[two].mean(),
          "two-step right": right[two].mean(),
          "right when finished": right[finished].mean() if finished.any() else float("nan"), "right": right}


def breakdown(workdir: str, n: int, samples: int) -> None:
  c = eval_config.get_config()
  c.init_from, c.workdir = workdir, os.path.join(workdir, "answer_breakdown")
  c.log.tensorboard = c.log.progress = False
  env = runtime.prepare(c)
  problems = synthetic.problems(c.seed, "eval", n)
  conversations = [item["messages"] for item in synthetic.rl_prompts(c.seed, "eval", n)]

  def replies(temperature: float, key: int) -> list[str]:
    ids, _ = evals.generate_raw(env, env.pretrained.weights, None, conversations, max_new_tokens=32,
                                batch_size=100, temperature=temperature, rng=jax.random.PRNGKey(key))
    return [env.tokenizer.decode(x) for x in ids]

  with env.mesh_context():
    greedy = replies(0.0, 0)
    drawn = [replies(1.0, k + 1) for k in range(samples)]
  g = _stats(greedy, problems)
  t1 = _stats([t for d in drawn for t in d], problems * samples)
  pass_k = t1["right"].reshape(samples, n).any(0).mean()
  print(f"\n{workdir}")
  for name in ("pass@1", "one-step right", "two-step finished", "two-step right", "right when finished"):
    print(f"  {name:22s} greedy {g[name]:6.1%}   temperature 1 {t1[name]:6.1%}")
  print(f"  pass@{samples} at temperature 1: {pass_k:.1%}")
  slips = collections.Counter(_slip(p, t) for p, t, ok in zip(problems, greedy, g["right"]) if not ok)
  print("  wrong greedy replies:", dict(slips.most_common()))


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("workdirs", nargs="+")
  parser.add_argument("--problems", type=int, default=200)
  parser.add_argument("--samples", type=int, default=4)
  args = parser.parse_args()
  for workdir in args.workdirs:
    breakdown(workdir, args.problems, args.samples)


if __name__ == "__main__":
  main()
