"""Stage `chat`: multi-turn chat with a trained model in its own chat template (ChatML for jaxllm's own models),
streaming each reply as it is generated.

  python run.py --config=configs/chat.py --config.init_from=W             # on a terminal: type, /reset, /quit
  printf 'hi\\nwhat is 2+2?\\n' | python run.py --config=configs/chat.py --config.init_from=W

Each reply is one `sampling.generate` call over the whole conversation so far (no KV cache is kept between
turns: re-reading a few hundred prompt tokens is one batched forward pass, far cheaper than the decode loop).
Streaming uses the engine's `on_token` host callback, so tokens appear as the compiled loop draws them; the
callback and the sampling settings are the same object on every turn, so each prompt-length bucket compiles
once. With `tools.names` a reply that calls a tool is answered by it and continued (jaxllm/tools/). When the
conversation no longer fits in max_seq_len with room for a full reply, the oldest turns are
dropped (the system prompt is kept).
"""
from __future__ import annotations

import dataclasses
import os
import sys
import time
from typing import IO, Iterator

import jax
import ml_collections
import numpy as np

from jaxllm import chat_template, sampling, tools
from jaxllm.tools import calls as tool_calls
from jaxllm.config import ConfigError
from jaxllm.model import ModelConfig, Transformer
from jaxllm.tokenizer import Tokenizer

COMMANDS = "/reset clears the conversation, /quit (or Ctrl-D) leaves"


def build_prompt(tokenizer: Tokenizer, messages: list[dict], tools_json: str = "") -> list[int]:
  """Ids of the conversation plus the assistant's generation prompt, in the model's own chat template (ChatML
  for jaxllm's own models). Text a user types is encoded as text, so typing "<|im_end|>" cannot end a turn."""
  return chat_template.prompt_ids(tokenizer, messages, tools=tools_json)


def load(config: ml_collections.ConfigDict) -> tuple[Transformer, dict, Tokenizer]:
  """init_from's model (a jaxllm workdir, LoRA merged; or a Hugging Face folder), weights and tokenizer."""
  from jaxllm import hf  # local: only chat/export read Hugging Face folders
  from jaxllm.checkpoint import load_pretrained

  if not config.init_from:
    raise ConfigError("config.init_from: is empty; pass the jaxllm workdir (or Hugging Face folder) to chat with")
  pretrained = load_pretrained(config.init_from)
  if hf.is_hf_folder(config.init_from):
    tokenizer = hf.load_tokenizer(config.init_from)
  else:
    tokenizer = Tokenizer.load(os.path.join(pretrained.workdir, "tokenizer"))
  if config.tokenizer.path:
    tokenizer = Tokenizer.load(config.tokenizer.path)
  model_cfg = dataclasses.replace(ModelConfig.from_section(pretrained.config.model), remat="none")
  return Transformer(model_cfg), pretrained.weights, tokenizer


class Streamer:
  """`on_token` callback printing row 0's reply as it arrives; holds back a cut-off multi-byte character."""

  def __init__(self, tokenizer: Tokenizer, stops: tuple[int, ...], out: IO[str]):
    self.tokenizer, self.stops, self.out = tokenizer, set(stops), out
    self.ids: list[int] = []
    self.shown = 0  # characters of decode(ids) already written

  def __call__(self, t: np.ndarray, tokens_B: np.ndarray, active_B: np.ndarray) -> None:
    token = int(tokens_B[0])
    if active_B[0] and token not in self.stops:
      self.ids.append(token)
      self.flush(final=False)

  def flush(self, final: bool) -> None:
    text = self.tokenizer.decode(self.ids)
    if not final and text.endswith("\ufffd"):
      return
    self.out.write(text[self.shown:] + ("\n" if final else ""))
    self.out.flush()
    self.shown = len(text)

  def start(self) -> None:
    self.ids, self.shown = [], 0


class Chat:
  """A conversation: history of messages, one streamed `generate` per user turn."""

  def __init__(self, config: ml_collections.ConfigDict, out: IO[str]):
    self.config = config
    self.model, self.weights, self.tokenizer = load(config)
    self.stops = chat_template.stop_ids(self.tokenizer)
    self.streamer = Streamer(self.tokenizer, self.stops, out)
    self.params = sampling.params_from(config.sampling, self.stops, self.tokenizer.n_vocab)
    self.rng = jax.random.PRNGKey(config.seed)
    self.tools = tools.registry(config.tools.names, config.tools.table)
    self.schema = tools.describe(self.tools) if config.tools.schema else ""  # shown in the system turn
    self.turns = self.new_tokens = 0
    self.seconds = 0.0
    self.reset()

  def reset(self) -> None:
    system = self.config.sampling.system
    self.messages = [{"role": "system", "content": system}] if system else []

  def _fit(self, messages: list[dict]) -> tuple[list[dict], list[int], sampling.SamplingParams]:
    """The conversation without its oldest turns until a full reply fits in max_seq_len; its prompt ids."""
    max_len = self.model.cfg.max_seq_len
    first = 1 if messages[0]["role"] == "system" else 0
    ids = build_prompt(self.tokenizer, messages, self.schema)
    while len(ids) + self.params.max_new_tokens > max_len and len(messages) > first + 1:
      messages = messages[:first] + messages[first + 1:]
      ids = build_prompt(self.tokenizer, messages, self.schema)
    budget = min(self.params.max_new_tokens, max_len - len(ids))
    if budget < 1:
      raise ValueError(f"the message is too long: the prompt is {len(ids)} tokens and the model's "
                       f"max_seq_len is {max_len}")
    params = self.params if budget == self.params.max_new_tokens else dataclasses.replace(
        self.params, max_new_tokens=budget)
    return messages, ids, params

  def reply(self, text: str) -> str:
    """Stream the reply to `text` and add both to the history (left unchanged if the text cannot fit). With
    `tools.names`, a reply that calls a tool gets the result (printed as `[tool] ...`) as a `tool` turn and
    the model speaks again, up to `tools.max_calls` times."""
    messages = self.messages + [{"role": "user", "content": text}]
    for _ in range(self.config.tools.max_calls):
      answer, messages = self._speak(messages)
      call = tool_calls.cut_after_call(answer) if self.tools else None
      if call is None:
        break
      result = tools.run_call(self.tools, call)
      print(f"[tool] {result}", file=self.streamer.out, flush=True)
      messages = messages[:-1] + [{"role": "function_call", "content": call}, {"role": "tool", "content": result}]
    else:
      answer, messages = self._speak(messages)
    self.messages = messages
    return answer

  def _speak(self, messages: list[dict]) -> tuple[str, list[dict]]:
    """One streamed assistant turn after `messages`: (its text, the conversation with it, oldest turns dropped
    if they had to go)."""
    messages, ids, params = self._fit(messages)
    self.streamer.start()
    start = time.perf_counter()
    out = sampling.generate(self.model, self.weights, [ids], params, jax.random.fold_in(self.rng, self.turns),
                            on_token=self.streamer)
    jax.effects_barrier()  # every streamed token has been written
    self.seconds += time.perf_counter() - start
    n = int(out.lengths[0])
    reply_ids = out.tokens[0, :n - int(out.stopped[0])].tolist()
    self.streamer.ids = reply_ids  # the same ids; also prints a held-back partial character, if any
    self.streamer.flush(final=True)
    self.turns += 1
    self.new_tokens += n
    answer = self.tokenizer.decode(reply_ids)
    return answer, messages + [{"role": "assistant", "content": answer}]

  def metrics(self) -> dict:
    return {"turns": self.turns, "new_tokens": self.new_tokens,
            "tokens_per_sec": self.new_tokens / self.seconds if self.seconds else 0.0}


def _user_lines(stdin: IO[str], interactive: bool) -> Iterator[str]:
  """User turns: `input()` with a prompt on a terminal, else one line of stdin per turn; ends at EOF."""
  while True:
    try:
      line = input(">>> ") if interactive else stdin.readline()
    except (EOFError, KeyboardInterrupt):
      print()
      return
    if not interactive and not line:
      return
    yield line.rstrip("\n")


def run(config: ml_collections.ConfigDict) -> dict:
  out = sys.stdout
  chat = Chat(config, out)
  if config.chat.prompt:
    chat.reply(config.chat.prompt)
    return chat.metrics()
  interactive = sys.stdin.isatty()
  if interactive:
    cfg = chat.model.cfg
    print(f"chat: {config.init_from} ({cfg.n_layers} layers, d_model {cfg.d_model}); {COMMANDS}", flush=True)
  for line in _user_lines(sys.stdin, interactive):
    command = line.strip()
    if not command:
      continue
    if command == "/quit":
      break
    if command == "/reset":
      chat.reset()
      if interactive:
        print("(conversation cleared)", flush=True)
      continue
    try:
      chat.reply(line)
    except ValueError as e:  # a message too long for the model: say so and keep chatting
      print(f"chat: {e}", file=sys.stderr, flush=True)
  return chat.metrics()
