"""The one training loop every stage uses: data -> train_step -> log -> eval -> checkpoint.

A stage supplies a `Task`: the name of its registered objective, a batch source, and optional held-out
evaluation and an end-of-run hook. What the objective needs in the state (a reference policy in `frozen`, extra
trained params such as a reward head) comes from its registry entry (jaxllm/losses/). Everything else (mesh,
state init and placement, the jitted buffer-donating step, non-finite skipping, resume, logging) lives here once.
"""
from __future__ import annotations

import dataclasses
import functools
import time
from typing import Any, Callable, Protocol

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxllm import lora as lora_lib
from jaxllm import losses, memory_check, sharding, wandb_sink
from jaxllm.checkpoint import Checkpointer
from jaxllm.metrics import MetricsWriter
from jaxllm.runtime import Env
from jaxllm.errors import TrainingStopped
from jaxllm.state import TrainState, all_finite, learning_rate_schedule, make_optimizer


class BatchSource(Protocol):
  """Yields this process's rows of the next global batch as numpy arrays; its position is checkpointed."""

  def next(self, state: TrainState) -> dict[str, np.ndarray]: ...

  def get_state(self) -> dict: ...

  def set_state(self, state: dict) -> None: ...


@dataclasses.dataclass
class Task:
  loss: str  # name of the objective in the registry (jaxllm/losses/)
  batches: BatchSource
  evaluate: Callable[[TrainState], dict[str, float]] | None = None  # held-out metrics
  on_end: Callable[[TrainState], dict[str, Any]] | None = None  # after the last step (samples, summaries)
  host_metrics: Callable[[], dict[str, float]] | None = None  # host-side scalars (e.g. rollout stats) to log
  # The tokens a batch counts for `tokens_per_sec`; None = its token slots (padding included, `_row_tokens`).
  # GRPO counts the tokens it trained on: its rows are trimmed per rollout, so slots would count padding.
  count_tokens: Callable[[dict], int] | None = None
  # Malformed data rows skipped (data.on_bad_row=skip), read and encode, all splits: the one count every stage
  # reports, as `data_skipped_rows`, in its log line, in every train row of metrics.jsonl and in the summary.
  data_skipped_rows: int = 0


def _accumulated_grads(loss_fn, params, frozen, batch, rng, micro_batches: int):
  """Loss, metrics and gradients of the whole batch, computed over `micro_batches` slices in a scan.

  Each slice's gradient is weighted by its share of target tokens when the loss reports `target_tokens`
  (token-mean losses), else equally (per-example means over equal slices), so k slices give the update of
  one batch k times larger.
  """
  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
  if micro_batches == 1:
    (loss, metrics), grads = grad_fn(params, frozen, batch, rng)
    return loss, metrics, grads

  def split(x):
    return x.reshape((micro_batches, x.shape[0] // micro_batches) + x.shape[1:])

  def body(carry, xs):
    i, micro = xs
    (loss, metrics), grads = grad_fn(params, frozen, micro, jax.random.fold_in(rng, i))
    weight = metrics.get("target_tokens", jnp.ones(()))
    acc_loss, acc_metrics, acc_grads, acc_weight = carry
    add = lambda a, b: a + weight * b
    return (add(acc_loss, loss), jax.tree.map(add, acc_metrics, metrics), jax.tree.map(add, acc_grads, grads),
            acc_weight + weight), None

  shapes = jax.eval_shape(grad_fn, params, frozen, jax.tree.map(lambda x: x[0], jax.tree.map(split, batch)), rng)
  zeros = jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), shapes)
  (_, metrics0), grads0 = zeros
  init = (jnp.zeros(()), metrics0, grads0, jnp.zeros(()))
  (loss, metrics, grads, weight), _ = jax.lax.scan(body, init, (jnp.arange(micro_batches), jax.tree.map(split, batch)))
  scale = lambda x: x / jnp.maximum(weight, 1e-9)
  metrics = jax.tree.map(scale, metrics)
  if "target_tokens" in metrics:
    metrics["target_tokens"] = weight
  return scale(loss), metrics, jax.tree.map(scale, grads)


def make_train_step(env: Env, loss_name: str, tx: optax.GradientTransformation, schedule):
  loss_fn = functools.partial(losses.get(loss_name).loss, model=env.train_model, cfg=env.config)
  micro_batches = env.config.optim.grad_accum
  max_skipped = env.config.train.max_skipped_steps

  def train_step(state: TrainState, batch: dict) -> tuple[TrainState, dict]:
    rng = jax.random.fold_in(state.rng, state.step)
    loss, metrics, grads = _accumulated_grads(loss_fn, state.params, state.frozen, batch, rng, micro_batches)
    grad_norm = optax.tree.norm(grads)

    def update(_):
      updates, opt_state = tx.update(grads, state.opt_state, state.params)
      return optax.apply_updates(state.params, updates), opt_state

    # A finite gradient can still give a non-finite state (lr=inf, an overflowing Adam moment), so the updated
    # state is checked too. Only its finiteness is taken here, a reduction XLA fuses with the elementwise update
    # without materialising it; the branch below recomputes the (cheap, memory-bound) update for real.
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    finite = finite & all_finite(update(None))
    apply = finite & (state.bad_streak < max_skipped)
    # A branch, not a select between new and old trees: with a select XLA copies every Adam moment before the
    # update so that the old one survives it (2 x the parameters' bytes of temporaries for nothing).
    params, opt_state = jax.lax.cond(apply, update, lambda _: (state.params, state.opt_state), None)
    streak = jnp.where(state.bad_streak >= max_skipped, state.bad_streak,
                       jnp.where(finite, 0, state.bad_streak + 1))
    new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state,
                              skipped=state.skipped + (~apply).astype(jnp.int32), bad_streak=streak)
    metrics = {**metrics, "loss": loss, "grad_norm": grad_norm, "lr": schedule(state.step),
               "skipped_steps": new_state.skipped, "skipped_in_a_row": streak}
    return new_state, metrics

  return train_step


def make_eval_step(env: Env, loss_name: str):
  loss_fn = functools.partial(losses.get(loss_name).loss, model=env.model, cfg=env.config)

  def eval_step(params, frozen, batch):
    loss, metrics = loss_fn(params, frozen, batch, None)
    return {**metrics, "loss": loss}

  return eval_step


def evaluate_loss(env: Env, loss_name: str, state: TrainState, batches: list[dict]) -> dict[str, float]:
  """Mean held-out metrics over fixed batches, weighted by target tokens when the loss reports them."""
  step = env.jit_cache(("eval", loss_name), lambda: jax.jit(make_eval_step(env, loss_name)))
  totals: dict[str, float] = {}
  weight_sum = 0.0
  with env.mesh_context():
    for local in batches:
      m = jax.device_get(step(state.params, state.frozen, sharding.put_batch(local, env.mesh)))
      w = float(m.get("target_tokens", 1.0))
      weight_sum += w
      for k, v in m.items():
        totals[k] = totals.get(k, 0.0) + float(v) * w
  out = {k: v / max(weight_sum, 1.0) for k, v in totals.items() if k != "target_tokens"}
  if "nll" in out:
    out["ppl"] = float(np.exp(min(out["nll"], 50.0)))
  return out


def init_state(env: Env, task: Task, tx: optax.GradientTransformation) -> tuple[TrainState, Any]:
  """Build the state directly in its shardings: init_from's weights (or a random init), LoRA split, and what the
  objective's entry asks for (a reference copy in `frozen`, extra trained params)."""
  config, mesh = env.config, env.mesh
  objective = losses.get(task.loss)
  root = jax.random.PRNGKey(config.seed)
  k_init, k_lora, k_extra, k_train = jax.random.split(root, 4)
  weights = env.base_weights(k_init)
  weight_sh = env.weight_shardings()
  repl = sharding.replicated(mesh)

  if config.lora.rank > 0:
    params, frozen, frozen_sh = lora_lib.init_lora_state(weights, weight_sh, env.abstract_weights(), config.lora,
                                                         k_lora, mesh)
    params_sh = {"lora": jax.tree.map(lambda _: repl, params["lora"])}
  else:
    params, params_sh = {"model": weights}, {"model": weight_sh}
    if objective.needs_reference:  # a separate buffer: params are donated and updated, the reference is not
      frozen, frozen_sh = {"model": jax.tree.map(jnp.copy, weights)}, {"model": weight_sh}
    else:
      frozen, frozen_sh = {}, {}
  if objective.extra_params is not None:
    extras = objective.extra_params(env, k_extra)
    params = {**params, **jax.device_put(extras, repl)}
    params_sh = {**params_sh, **jax.tree.map(lambda _: repl, extras)}

  abstract_opt = jax.eval_shape(tx.init, params)
  # A state leaf shaped like its parameter shares its sharding; others (GaLore's projected moments) replicate;
  # multi_transform's (LoRA+) masked-out leaves stay empty MaskedNodes.
  def like_param(leaf, s, p):
    if isinstance(leaf, optax.MaskedNode):
      return leaf
    return s if leaf.shape == p.shape else repl

  opt_sh = optax.tree_map_params(tx, like_param, abstract_opt, params_sh, params, transform_non_params=lambda _: repl,
                                 is_leaf=lambda x: isinstance(x, optax.MaskedNode))
  opt_state = jax.jit(tx.init, out_shardings=opt_sh)(params)
  state = TrainState(step=jnp.zeros((), jnp.int32), params=params, frozen=frozen, opt_state=opt_state,
                     rng=k_train, skipped=jnp.zeros((), jnp.int32), bad_streak=jnp.zeros((), jnp.int32))
  state = jax.device_put(state, TrainState(step=repl, params=params_sh, frozen=frozen_sh, opt_state=opt_sh,
                                           rng=repl, skipped=repl, bad_streak=repl))
  state_sh = jax.tree.map(lambda x: x.sharding, state)
  return state, state_sh


def _row_tokens(batch: dict) -> int:
  """Token slots the model runs on (padding included): what tokens_per_sec counts. A preference batch's
  [B, 2, L] side-view masks are views of its [B, L] rows, not extra tokens."""
  return int(np.prod(batch["tokens"].shape))


def fit(env: Env, task: Task) -> dict[str, Any]:
  """Train to config.steps (resuming from the workdir's latest checkpoint) and return the final metrics."""
  config, mesh = env.config, env.mesh
  tx = make_optimizer(config.optim, config.steps, config.lora.plus_ratio, config.seed)
  schedule = learning_rate_schedule(config.optim, config.steps)
  state, state_sh = init_state(env, task, tx)

  ckpt = Checkpointer(config.workdir, config.checkpoint.keep, log=env.log)
  if ckpt.latest_step() is not None:
    state, data_state = ckpt.restore(state)
    task.batches.set_state(data_state)
    env.log(f"resumed from {ckpt.directory} at step {int(state.step)}")
  start = int(state.step)
  if task.data_skipped_rows:
    env.log(f"data: {task.data_skipped_rows} malformed rows skipped in all (data.on_bad_row=skip); reported as "
            "data_skipped_rows in metrics.jsonl and the summary")

  step_fn = jax.jit(make_train_step(env, task.loss, tx, schedule), in_shardings=(state_sh, sharding.batch_sharding(mesh)),
                    out_shardings=(state_sh, sharding.replicated(mesh)), donate_argnums=0)
  writer = MetricsWriter(config.workdir, enabled=env.is_main, tensorboard=config.log.tensorboard,
                         progress=config.log.progress, total_steps=config.steps, initial_step=start,
                         sinks=(wandb_sink.open_sink(config) if env.is_main else None,))
  max_skipped = config.train.max_skipped_steps
  last_eval: dict[str, float] = {}
  last_train: dict[str, float] = {}
  pending = None  # (step, device metrics, host metrics) fetched one step late so the host never waits on the device
  tokens_since, t_since = 0, time.perf_counter()
  count_tokens = task.count_tokens or _row_tokens
  compiled = {}  # batch shapes -> executable: a rollout's rows are trimmed to a few length buckets

  def stop_if_diverged(step_no: int, streak: int) -> None:
    if streak >= max_skipped:
      raise TrainingStopped(
          f"train: {streak} steps in a row skipped (non-finite loss, gradient or updated state) by step {step_no} "
          f"(train.max_skipped_steps={max_skipped}); stopped without saving, the last checkpoint is step "
          f"{ckpt.latest_step()}. Lower optim.lr or check the data")

  def flush(pending_item):
    nonlocal tokens_since, t_since, last_train
    step_no, device_metrics, host = pending_item
    scalars = {k: float(v) for k, v in jax.device_get(device_metrics).items()}
    now = time.perf_counter()  # after the wait: dispatch is async, the host may be steps ahead of the device
    scalars["tokens_per_sec"] = tokens_since / max(now - t_since, 1e-9)
    scalars.update(host)
    scalars.setdefault("data_skipped_rows", task.data_skipped_rows)  # a streamed source counts as it reads
    tokens_since, t_since = 0, now
    writer.write(step_no, "train", scalars)
    last_train = scalars
    stop_if_diverged(step_no, int(scalars["skipped_in_a_row"]))

  try:
    with env.mesh_context():
      if task.evaluate is not None and config.eval.at_start and start == 0 < config.steps:
        writer.write(0, "eval", task.evaluate(state))  # the model this stage starts from, on the same held-out set
      for step in range(start, config.steps):
        local = task.batches.next(state)
        step_tokens = count_tokens(local) * env.process_count
        batch = sharding.put_batch(local, mesh)
        shapes = tuple(sorted((k, v.shape) for k, v in local.items()))
        if shapes not in compiled:  # compiled ahead of time once per shape so its memory need is known first
          compiled[shapes] = step_fn.lower(state, batch).compile()
          memory_check.check(compiled[shapes])
        state, metrics = compiled[shapes](state, batch)
        host = task.host_metrics() if task.host_metrics is not None else {}  # taken now: they describe this batch
        writer.advance()
        ckpt.poll()
        done = step + 1
        if pending is not None:
          flush(pending)
          pending = None
        tokens_since += step_tokens  # after the flush of the steps before: each row counts its own steps' tokens
        if done % config.log.every == 0 or done == config.steps or done == start + 1:
          pending = (done, metrics, host)
          if done == start + 1:  # the first step includes compilation: restart the clock after it
            flush(pending)
            pending = None
        save = done % config.checkpoint.every == 0 or done == config.steps
        if save and pending is not None:  # every row up to a checkpoint is on disk before it: resume loses none
          flush(pending)
          pending = None
        if save:
          stop_if_diverged(done, int(jax.device_get(state.bad_streak)))
        if task.evaluate is not None and (done % config.eval.every == 0 or done == config.steps):
          last_eval = task.evaluate(state)
          writer.write(done, "eval", last_eval)
        if save:
          ckpt.save(state, task.batches.get_state())
      if pending is not None:
        flush(pending)
      if start == config.steps and task.evaluate is not None:  # nothing left to train: report the final eval
        last_eval = task.evaluate(state)
  finally:  # a stopped or failed run still finishes (and seals) the save in flight
    ckpt.close()
  summary: dict[str, Any] = {"step": int(state.step), "skipped_steps": int(state.skipped),
                             "data_skipped_rows": task.data_skipped_rows}
  summary.update({f"train_{k}": v for k, v in last_train.items()})
  summary.update({f"eval_{k}": v for k, v in last_eval.items()})
  if task.on_end is not None:
    summary.update(task.on_end(state))
  writer.close()
  return summary
