"""Stage `eval`: evaluate any jaxllm workdir or Hugging Face model folder on a named task; the final metrics
are the last stdout line (one JSON object).

  python run.py --config=configs/eval.py --config.init_from=W --config.eval.task=accuracy
  python run.py --config=configs/eval.py --config.init_from=W --config.eval.task=accuracy \
      --config.data.name=hf:openai/gsm8k --config.data.subset=main --config.data.split=test    # network
  python run.py --config=configs/eval.py --config.init_from=W --config.eval.task=perplexity --config.data.name=...
  python run.py --config=configs/eval.py --config.init_from=REWARD_W --config.eval.task=pair_accuracy

Tasks: `perplexity` (held-out split of a text set, or the built-in world's held-out prose), `accuracy` (greedy
answers checked against references: built-in held-out problems, or GSM8K; with `tools.names` the model may call
tools while answering; `false_refusal_rate` is the share answered "I don't know", and on the built-in world
`eval.unanswerable` > 0 asks that many held-out problems missing a number and reports `refusal_rate`), `classification` (generated label ==
reference, e.g. waimai_10k's held-out split), `pair_accuracy` (preference pairs: a reward model's scores, or a
policy's summed answer log-probabilities, ranking chosen above rejected), `lm_eval:<task>[,<task>...]`
(lm-evaluation-harness tasks through jaxllm/lm_eval_model.py; see jaxllm/lm_eval_run.py and docs/evaluation.md).
The numeric results also go to workdir/metrics.jsonl as one `eval` row at step 0 (and to W&B with log.wandb).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxllm import evals, lm_eval_run, runtime, tools, train, wandb_sink
from jaxllm.config import LM_EVAL_PREFIX
from jaxllm.data import pipelines, preference, sources, synthetic, synthetic_tools, text
from jaxllm.losses.dpo import sequence_logps
from jaxllm.losses.reward import pair_hidden_states, pair_scores
from jaxllm.metrics import MetricsWriter
from jaxllm.reward_model import HEAD
from jaxllm.state import TrainState



def _frozen_state(env: runtime.Env) -> TrainState:
  """The loaded weights in the train-state shape the loss-based evaluators take (nothing trains)."""
  zero = jnp.zeros((), jnp.int32)
  return TrainState(step=zero, params={"model": env.pretrained.weights, **env.pretrained.extras}, frozen={},
                    opt_state=(), rng=jax.random.PRNGKey(0), skipped=zero)


def perplexity(env: runtime.Env) -> dict:
  c = env.config
  _, held = text.documents(c)
  ids = env.tokenizer.encode_batch(held)
  flat = pipelines.concat_documents(ids, env.tokenizer.eot_id)
  batches = pipelines.packed_lm_eval_batches(flat, c.data.seq_len, c.data.batch_size, env.tokenizer.eot_id,
                                             c.eval.batches)
  return {k: v for k, v in train.evaluate_loss(env, "pretrain", _frozen_state(env), batches).items()
          if k in ("loss", "ppl")}


def _answer_items(config: ml_collections.ConfigDict) -> tuple[list[list[dict]], list[str]]:
  n = config.eval.examples
  if not config.data.name:  # asked as the SFT demonstrations asked (with data.tools: the tool prompt)
    return synthetic_tools.answer_items(config.seed, "eval", n, tools.parse_names(config.data.tools))
  result = sources.load_config(config.data, "gsm8k", limit=n)
  system = {"role": "system", "content": config.sampling.system or synthetic.SYSTEM_PROMPT}
  return ([[system, {"role": "user", "content": r["question"]}] for r in result.records],
          [r["answer"] for r in result.records])


def _classification_items(config: ml_collections.ConfigDict) -> tuple[list[list[dict]], list[str]]:
  result = sources.load_config(config.data, "classification")
  _, held = text.split_documents(result.records, config.data.eval_fraction, config.seed)
  held = held[:config.eval.examples]
  prefix = f"{config.eval.instruction}\n" if config.eval.instruction else ""
  return [[{"role": "user", "content": prefix + r["text"]}] for r in held], [r["label"] for r in held]


def generation(env: runtime.Env, kind: str) -> dict:
  c = env.config
  conversations, refs = (_answer_items(c) if kind == "answer" else _classification_items(c))
  metrics = evals.generation_metrics(env, env.pretrained.weights, None, conversations, refs, kind,
                                     max_new_tokens=c.sampling.max_new_tokens, batch_size=c.eval.batch_size)
  if kind == "answer" and not c.data.name and c.eval.unanswerable:
    probes = synthetic_tools.unanswerable_prompts(c.seed, "eval", c.eval.unanswerable, tools.parse_names(c.data.tools))
    metrics["refusal_rate"] = evals.refusal_rate(env, env.pretrained.weights, None, probes,
                                                 max_new_tokens=c.sampling.max_new_tokens, batch_size=c.eval.batch_size)
  return {**metrics, "examples": len(refs)}


def pair_accuracy(env: runtime.Env) -> dict:
  """Share of held-out pairs ranked right: by the reward head when the workdir has one, else by the policy's
  summed log-probability of each answer."""
  c = env.config
  _, held_batches, counts = preference.build(c, env.tokenizer)
  weights, head = env.pretrained.weights, env.pretrained.extras.get(HEAD)

  @jax.jit
  def scores(b):  # [B, 2] for (chosen, rejected)
    if head is not None:
      hidden = pair_hidden_states(env.model, weights, None, b)
      return pair_scores(env.model, weights, head, hidden, b, c.loss.chunk_size)[0]
    return sequence_logps(env.model, weights, None, b, None, c.loss.chunk_size)[0]

  right, total = 0.0, 0.0
  for b in held_batches:
    s = np.asarray(scores(b))
    right += float(((s[:, 0] > s[:, 1]) * b["weight"]).sum())
    total += float(b["weight"].sum())
  return {"accuracy": right / max(total, 1.0), "pairs": counts["eval_pairs"],
          "scored_by": "reward_head" if head is not None else "policy_logprob"}


def _log(env: runtime.Env, result: dict) -> None:
  """The numeric results as one `eval` row of workdir/metrics.jsonl (and TensorBoard / W&B)."""
  c = env.config
  writer = MetricsWriter(c.workdir, enabled=env.is_main, tensorboard=c.log.tensorboard, progress=False,
                         total_steps=0, sinks=(wandb_sink.open_sink(c) if env.is_main else None,))
  writer.write(0, "eval", {k: v for k, v in result.items() if isinstance(v, (int, float)) and not isinstance(v, bool)})
  writer.close()


def run(config: ml_collections.ConfigDict) -> dict:
  env = runtime.prepare(config)
  task = env.config.eval.task
  with env.mesh_context():
    if task == "perplexity":
      result = perplexity(env)
    elif task == "pair_accuracy":
      result = pair_accuracy(env)
    elif task.startswith(LM_EVAL_PREFIX):
      result = lm_eval_run.evaluate(env, env.config)
    else:
      result = generation(env, "answer" if task == "accuracy" else "classification")
  result = {"task": task, "init_from": env.config.init_from, **result}
  env.log(f"eval: {result}")
  _log(env, result)
  return result
