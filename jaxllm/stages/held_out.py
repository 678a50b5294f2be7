"""The held-out evaluation of the rollout stages (GRPO, PPO, RFT): pass@1 of the policy in a train state."""
from typing import Callable

from jaxllm import evals
from jaxllm.runtime import Env
from jaxllm.state import TrainState, policy_weights


def answer_evaluator(env: Env, eval_records: list[dict], batch_size: int) -> Callable[[TrainState], dict]:
  """`train.Task.evaluate` for prompt records with a checked `answer`: every process takes part (a collective)."""
  conversations = [e["messages"] for e in eval_records]
  references = [e["answer"] for e in eval_records]

  def evaluate(state: TrainState) -> dict:
    if not conversations:
      return {}
    weights, lora = policy_weights(state.params, state.frozen)
    return evals.generation_metrics(env, weights, lora, conversations, references, "answer",
                                    max_new_tokens=env.config.sampling.max_new_tokens, batch_size=batch_size)

  return evaluate
