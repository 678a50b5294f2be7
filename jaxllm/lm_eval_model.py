"""The lm-evaluation-harness model `jaxllm`: any jaxllm workdir or Hugging Face folder as an `lm_eval` LM.

  python -m jaxllm.lm_eval --model jaxllm --model_args workdir=W --tasks hellaswag --batch_size 32
  python run.py --config=configs/eval.py --config.init_from=W --config.eval.task=lm_eval:hellaswag,gsm8k

(lm_eval 0.4 finds models only in its own registry, so the plain `lm_eval` command cannot see one from another
package; `python -m jaxllm.lm_eval` imports this file, which registers `jaxllm`, then runs lm_eval's own CLI
with the same arguments. In Python: `import jaxllm.lm_eval_model` before `lm_eval.simple_evaluate(model=
"jaxllm", ...)`, or pass `JaxLLM(...)` itself.)

- `loglikelihood`: every (context, continuation) is one right-padded row; rows are sorted by length, batched
  `batch_size` at a time and padded to a bucketed length so one program is compiled per bucket. A row longer
  than max_seq_len + 1 tokens keeps its last max_seq_len + 1 (as lm_eval's HF model does). log p is the log
  softmax of the model's f32 logits over its whole (padded) vocabulary, as jaxllm's own losses score answers;
  `is_greedy` takes the argmax over the tokenizer's ids only, as the sampler draws.
- `loglikelihood_rolling`: lm_eval's disjoint rolling windows of max_seq_len tokens, <|endoftext|> first.
- `generate_until`: the sampling engine (`evals.generate_ids`), grouped by sampling settings. Generation stops
  at the chat template's stop tokens (<|im_end|>, <|endoftext|>) and at any `until` string that is a single
  token; the text is then cut at the first `until` string. Greedy unless the task asks for do_sample or a
  temperature > 0 (then `seed` seeds it).
- Chat: with `--apply_chat_template` lm_eval calls `apply_chat_template`, which renders the messages with
  jaxllm's ChatML template (`chat_template.render`); from then on, special-token spellings in the prompt string
  (<|im_start|>, ...) are encoded as those tokens, so the model sees exactly the ids it was trained on.
"""
from __future__ import annotations

import collections
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from lm_eval.api.model import TemplateLM
from lm_eval.api.registry import register_model
from lm_eval.utils import get_rolling_token_windows, make_disjoint_window
from tqdm import tqdm

from jaxllm import chat_template, evals, runtime
from jaxllm.model import Transformer
from jaxllm.sampling import bucket_length

# gen_kwargs keys generate_until understands; any other is an error rather than silently ignored.
GEN_KEYS = ("until", "max_gen_toks", "do_sample", "temperature", "top_k", "top_p")


def _score_rows(model: Transformer, vocab_limit: int, weights: Any, tokens_BL: jax.Array, targets_BL: jax.Array,
                segments_BL: jax.Array, mask_BL: jax.Array) -> tuple[jax.Array, jax.Array]:
  """(summed log p of the masked targets [B], whether every masked target is the argmax [B])."""
  hidden_BLD = model.apply({"params": weights}, tokens_BL, None, segments_BL, return_hidden=True)
  logits_BLV = model.apply({"params": weights}, hidden_BLD, method=Transformer.head)
  target_BL = jnp.take_along_axis(logits_BLV, targets_BL[..., None], axis=-1)[..., 0]
  logp_BL = target_BL - jax.nn.logsumexp(logits_BLV, axis=-1)
  real_V = jnp.arange(logits_BLV.shape[-1]) < vocab_limit
  argmax_BL = jnp.argmax(jnp.where(real_V, logits_BLV, -jnp.inf), axis=-1)
  greedy_B = jnp.all((argmax_BL == targets_BL) | (mask_BL == 0), axis=-1)
  return (logp_BL * mask_BL).sum(-1), greedy_B


def load_env(workdir: str, *, output: str = "", seed: int = 0, dtype: str = "") -> runtime.Env:
  """The eval stage's Env for `workdir` (a jaxllm workdir, checkpoint folder or HF folder); the resolved config
  is written to `output` (default workdir/lm_eval)."""
  from configs import eval as eval_config

  config = eval_config.get_config()
  config.init_from = workdir
  config.workdir = output or os.path.join(workdir, "lm_eval")
  config.seed = seed
  if dtype:
    config.model.dtype = dtype
  return runtime.prepare(config)


@register_model("jaxllm")
class JaxLLM(TemplateLM):
  """A jaxllm model for lm_eval. `--model_args workdir=W[,batch_size=32][,max_gen_toks=256][,seed=0]
  [,dtype=bfloat16][,output=DIR]`; `env=` (Python only) wraps an already loaded `runtime.Env`."""

  def __init__(self, workdir: str = "", batch_size: int | str = 32, max_gen_toks: int = 256, seed: int = 0,
               dtype: str = "", output: str = "", env: runtime.Env | None = None, device: str | None = None,
               max_batch_size: int | None = None):
    super().__init__()
    del device, max_batch_size  # lm_eval's CLI passes these; JAX places the model on its own devices
    if env is None and not workdir:
      raise ValueError("jaxllm lm_eval model: give --model_args workdir=<a jaxllm workdir or HF model folder>")
    if isinstance(batch_size, str) and not batch_size.isdigit():
      raise ValueError(f"jaxllm lm_eval model: batch_size must be a positive integer, got {batch_size!r} "
                       f"('auto' is not supported)")
    self.batch_size = int(batch_size)
    if self.batch_size < 1:
      raise ValueError(f"jaxllm lm_eval model: batch_size must be >= 1, got {self.batch_size}")
    self.env = env if env is not None else load_env(workdir, output=output, seed=int(seed), dtype=dtype)
    if self.env.pretrained is None:
      raise ValueError("jaxllm lm_eval model: the Env holds no loaded weights (set init_from)")
    self.weights = self.env.pretrained.weights
    self.tokenizer = self.env.tokenizer
    self.max_gen_toks = int(max_gen_toks)
    self.seed = int(seed)
    self._chat = False  # set once lm_eval renders a chat template: prompts then carry control tokens
    self._warned: set[str] = set()
    self._score = jax.jit(lambda w, *rows: _score_rows(self.env.model, self.tokenizer.n_vocab, w, *rows))

  # --- what lm_eval asks of a model ---------------------------------------------------------------------------
  @property
  def eot_token_id(self) -> int:
    return self.tokenizer.eot_id

  @property
  def max_length(self) -> int:
    return self.env.model_cfg.max_seq_len

  @property
  def tokenizer_name(self) -> str:
    return f"jaxllm-{self.tokenizer.name}"

  def chat_template(self, chat_template: bool | str = False) -> str:
    return "jaxllm ChatML: <|im_start|>{role}\\n{content}<|im_end|>\\n ... <|im_start|>assistant\\n"

  def apply_chat_template(self, chat_history: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
    """The conversation rendered by jaxllm's template, as text; without a generation prompt the last
    (assistant) message is left open for the model to continue."""
    self._chat = True
    if add_generation_prompt or not chat_history or chat_history[-1]["role"] != "assistant":
      ids = chat_template.render(self.tokenizer, chat_history, add_generation_prompt=add_generation_prompt).ids
    else:
      ids = chat_template.prompt_ids(self.tokenizer, chat_history[:-1])
      ids += self.tokenizer.encode(chat_history[-1]["content"])
    return self.tokenizer.decode(ids)

  def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs) -> list[int]:
    if self._chat:
      return self.tokenizer.encode_with_specials(string)
    return self.tokenizer.encode(string)

  def tok_decode(self, ids: list[int]) -> str:
    return self.tokenizer.decode(ids)

  def _warn_once(self, message: str) -> None:
    if message not in self._warned:
      self._warned.add(message)
      print(f"jaxllm lm_eval model: {message}", flush=True)

  # --- scoring -------------------------------------------------------------------------------------------------
  def score_tokens(self, pairs: list[tuple[list[int], list[int]]], disable_tqdm: bool = True
                   ) -> list[tuple[float, bool]]:
    """(summed log p of the continuation, whether greedy decoding gives it) per (context ids, continuation ids)."""
    n_max = self.max_length
    rows = []
    for context, continuation in pairs:
      whole = (list(context) + list(continuation))[-(n_max + 1):]
      rows.append((whole, min(len(continuation), len(whole) - 1)))
    order = sorted(range(len(rows)), key=lambda i: -len(rows[i][0]))
    out: list[tuple[float, bool]] = [(0.0, True)] * len(rows)
    pad = self.tokenizer.pad_id
    batches = range(0, len(order), self.batch_size)
    for start in tqdm(batches, desc="jaxllm loglikelihood", disable=disable_tqdm):
      idx = order[start:start + self.batch_size]
      length = min(bucket_length(len(rows[idx[0]][0]) - 1), n_max)
      tokens, targets, segments, mask = (np.zeros((self.batch_size, length), np.int32) for _ in range(4))
      tokens[:], targets[:] = pad, pad
      for row, i in enumerate(idx):
        whole, n_scored = rows[i]
        n = len(whole) - 1
        tokens[row, :n], targets[row, :n], segments[row, :n] = whole[:-1], whole[1:], 1
        mask[row, n - n_scored:n] = 1
      with self.env.mesh_context():
        logp, greedy = jax.device_get(self._score(self.weights, tokens, targets, segments, mask.astype(np.float32)))
      for row, i in enumerate(idx):
        out[i] = (float(logp[row]), bool(greedy[row]))
    return out

  def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, **kwargs) -> list[tuple[float, bool]]:
    results = self.score_tokens([(context, continuation) for _, context, continuation in requests], disable_tqdm)
    for (key, _, _), result in zip(requests, results):
      if key is not None:
        self.cache_hook.add_partial("loglikelihood", key, result)
    return results

  def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
    windows, owner = [], []
    for i, request in enumerate(requests):
      (text,) = request.args
      for window in get_rolling_token_windows(token_list=self.tok_encode(text), prefix_token=self.prefix_token_id,
                                              max_seq_len=self.max_length, context_len=1):
        windows.append(make_disjoint_window(window))
        owner.append(i)
    totals = [0.0] * len(requests)
    for i, (logp, _) in zip(owner, self.score_tokens(windows, disable_tqdm)):
      totals[i] += logp
    for request, total in zip(requests, totals):
      self.cache_hook.add_partial("loglikelihood_rolling", request.args, total)
    return totals

  # --- generation ----------------------------------------------------------------------------------------------
  def _sampling(self, gen_kwargs: dict) -> tuple[list[str], int, float, int, float]:
    """(until strings, max new tokens, temperature, top_k, top_p) from a request's gen_kwargs."""
    unknown = sorted(set(gen_kwargs) - set(GEN_KEYS))
    if unknown:
      raise ValueError(f"jaxllm lm_eval model: generation_kwargs {unknown} are not supported (known: {GEN_KEYS})")
    until = gen_kwargs.get("until") or []
    until = [until] if isinstance(until, str) else list(until)
    max_new = int(gen_kwargs.get("max_gen_toks", self.max_gen_toks))
    if max_new >= self.max_length:
      self._warn_once(f"max_gen_toks={max_new} leaves no room for a prompt in max_seq_len={self.max_length}; "
                      f"generating {self.max_length // 2} tokens instead")
      max_new = self.max_length // 2
    do_sample = bool(gen_kwargs.get("do_sample", False))
    temperature = float(gen_kwargs.get("temperature", 1.0 if do_sample else 0.0))
    if "do_sample" in gen_kwargs and not do_sample:
      temperature = 0.0
    return until, max_new, temperature, int(gen_kwargs.get("top_k", 0)), float(gen_kwargs.get("top_p", 1.0))

  def _stop_ids(self, until: list[str]) -> tuple[int, ...]:
    """The chat template's stop tokens plus every `until` string that is exactly one token: stopping there
    loses nothing, the text would be cut at that string anyway."""
    stops = list(chat_template.stop_ids(self.tokenizer))
    for text in until:
      ids = self.tok_encode(text)
      if len(ids) == 1 and ids[0] not in stops:
        stops.append(ids[0])
    return tuple(stops)

  def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
    groups: dict[tuple, list[int]] = collections.defaultdict(list)
    settings = []
    for i, request in enumerate(requests):
      until, max_new, temperature, top_k, top_p = self._sampling(dict(request.args[1]))
      settings.append(until)
      groups[(max_new, temperature, top_k, top_p, self._stop_ids(until))].append(i)
    out = [""] * len(requests)
    for g, ((max_new, temperature, top_k, top_p, stops), idx) in enumerate(
        tqdm(groups.items(), desc="jaxllm generate_until", disable=disable_tqdm)):
      prompts = [self.tok_encode(requests[i].args[0]) or [self.prefix_token_id] for i in idx]
      with self.env.mesh_context():
        ids, _ = evals.generate_ids(self.env, self.weights, None, prompts, max_new_tokens=max_new,
                                    batch_size=self.batch_size, temperature=temperature, top_k=top_k, top_p=top_p,
                                    stops=stops, rng=jax.random.fold_in(jax.random.PRNGKey(self.seed), g))
      for i, gen in zip(idx, ids):
        text = self.tok_decode(gen)
        for stop in settings[i]:
          if stop:
            text = text.split(stop)[0]
        out[i] = text
        self.cache_hook.add_partial("generate_until", requests[i].args, text)
    return out
