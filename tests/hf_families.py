"""Tiny tokenizer folders of four chat-model families, built locally (no hub): a BPE trained on a small corpus
with each family's pipeline, saved through transformers with a chat template modeled on the family's public one.

  llama3   byte-level BPE, Llama-3 pre-split regex, <|start_header_id|> ... <|eot_id|>, tools in the system turn
  mistral  SentencePiece-style BPE with byte fallback (Llama-2 / Mistral v0.1: Prepend + Replace normalizer),
           <unk> <s> </s> at ids 0-2, [INST] ... [/INST] answer</s>
  gemma    SentencePiece-style BPE with byte fallback (Replace normalizer, no prefix space), <start_of_turn> /
           <end_of_turn> in the middle of the id space, "model" role, system folded into the first user turn
  qwen     byte-level BPE, Qwen2 regex + NFC, ChatML with Qwen2.5's tool-call template (<tool_call> is an added
           non-special token), specials after the vocab
"""
from __future__ import annotations

import json

import numpy as np
import tokenizers
import transformers
from tokenizers import Regex, decoders, models, normalizers, pre_tokenizers, trainers

WORDS = "the of and to in is was for on that with as it by this be are from at or an have not".split()
MULTILINGUAL = [
    "The quick brown fox jumps over the lazy dog. It's 3.14159 o'clock; I'LL be there at 12:30pm!",
    "我们今天去公园散步，天气很好。東京は晴れです。안녕하세요",
    "emoji 🙂👍🏽🎉 and flags 🇫🇷 — café naïve Ünïcödé",
    "def f(x):\n    return x ** 2  # square\n\n\nclass A:\n\tpass\n",
    "numbers 1234567890 2024-01-01 0x1F 1e-5 -42 +7 3,000,000",
    "whitespace   runs\t\t tabs  \n\n\n   trailing   \r\n end    ",
    "URLs https://example.com/a?b=c&d=e#frag, <tags> {json: [1, 2]} $$ %% @@",
    "  leading spaces", "", " ", "a",
]
LLAMA3_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                  r"|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                 r"|\s*[\r\n]+|\s+(?!\S)|\s+")

LLAMA3_TEMPLATE = """{{- bos_token }}
{%- if messages[0]['role'] == 'system' %}
    {%- set system_message = messages[0]['content'] | trim %}
    {%- set messages = messages[1:] %}
{%- else %}
    {%- set system_message = "" %}
{%- endif %}
{{- "<|start_header_id|>system<|end_header_id|>\\n\\n" }}
{%- if tools is not none %}
    {{- "Environment: ipython\\nYou have access to the following functions:\\n\\n" }}
    {%- for t in tools %}
        {{- t | tojson(indent=4) }}
        {{- "\\n\\n" }}
    {%- endfor %}
{%- endif %}
{{- system_message }}
{{- "<|eot_id|>" }}
{%- for message in messages %}
    {%- if 'tool_calls' in message %}
        {%- set tool_call = message.tool_calls[0].function %}
        {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' -}}
        {{- '{"name": "' + tool_call.name + '", "parameters": ' }}
        {{- tool_call.arguments | tojson }}
        {{- "}" }}
        {{- "<|eot_id|>" }}
    {%- elif message.role == "tool" or message.role == "ipython" %}
        {{- "<|start_header_id|>ipython<|end_header_id|>\\n\\n" }}
        {{- message.content }}
        {{- "<|eot_id|>" }}
    {%- else %}
        {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] | trim + '<|eot_id|>' }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}
{%- endif %}
"""

MISTRAL_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token }}"
    "{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}")

GEMMA_TEMPLATE = """{{ bos_token }}
{%- if messages[0]['role'] == 'system' -%}
    {%- set first_user_prefix = messages[0]['content'] + '\\n\\n' -%}
    {%- set loop_messages = messages[1:] -%}
{%- else -%}
    {%- set first_user_prefix = "" -%}
    {%- set loop_messages = messages -%}
{%- endif -%}
{%- for message in loop_messages -%}
    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}
        {{ raise_exception("Conversation roles must alternate user/assistant/user/assistant/...") }}
    {%- endif -%}
    {%- if (message['role'] == 'assistant') -%}
        {%- set role = "model" -%}
    {%- else -%}
        {%- set role = message['role'] -%}
    {%- endif -%}
    {{ '<start_of_turn>' + role + '\\n' + (first_user_prefix if loop.first else "") -}}
    {{ message['content'] | trim -}}
    {{ '<end_of_turn>\\n' -}}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{'<start_of_turn>model\\n'}}
{%- endif -%}
"""

QWEN_TEMPLATE = """{%- if tools %}
    {{- '<|im_start|>system\\n' }}
    {%- if messages[0]['role'] == 'system' %}
        {{- messages[0]['content'] }}
    {%- else %}
        {{- 'You are a helpful assistant.' }}
    {%- endif %}
    {{- "\\n\\n# Tools\\n\\nYou are provided with function signatures within <tools></tools> XML tags:\\n<tools>" }}
    {%- for tool in tools %}
        {{- "\\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\\n</tools>\\n\\nFor each function call, return a json object within <tool_call></tool_call> XML tags.<|im_end|>\\n" }}
{%- else %}
    {%- if messages[0]['role'] == 'system' %}
        {{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}
    {%- else %}
        {{- '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}
    {%- endif %}
{%- endif %}
{%- for message in messages %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) or (message.role == "assistant" and not message.tool_calls) %}
        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}
    {%- elif message.role == "assistant" %}
        {{- '<|im_start|>' + message.role }}
        {%- if message.content %}
            {{- '\\n' + message.content }}
        {%- endif %}
        {%- for tool_call in message.tool_calls %}
            {%- if tool_call.function is defined %}
                {%- set tool_call = tool_call.function %}
            {%- endif %}
            {{- '\\n<tool_call>\\n{"name": "' }}
            {{- tool_call.name }}
            {{- '", "arguments": ' }}
            {{- tool_call.arguments | tojson }}
            {{- '}\\n</tool_call>' }}
        {%- endfor %}
        {{- '<|im_end|>\\n' }}
    {%- elif message.role == "tool" %}
        {%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != "tool") %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\\n<tool_response>\\n' }}
        {{- message.content }}
        {{- '\\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}
            {{- '<|im_end|>\\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\\n' }}
{%- endif %}
"""


def corpus() -> list[str]:
  rng = np.random.RandomState(0)
  docs = []
  for i in range(300):
    docs.append(" ".join(rng.choice(WORDS, 12)) + f" {rng.randint(10**6)}.")
    docs.append(MULTILINGUAL[i % 7])
  return docs


def _byte_level(pattern: str, nfc: bool, vocab_size: int) -> tokenizers.Tokenizer:
  tok = tokenizers.Tokenizer(models.BPE())
  if nfc:
    tok.normalizer = normalizers.NFC()
  tok.pre_tokenizer = pre_tokenizers.Sequence([
      pre_tokenizers.Split(Regex(pattern), behavior="isolated", invert=False),
      pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
  tok.decoder = decoders.ByteLevel()
  tok.train_from_iterator(corpus(), trainers.BpeTrainer(
      vocab_size=vocab_size, show_progress=False, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
  return tok


def _byte_fallback(normalizer, leading: list[str], middle: list[str], vocab_size: int) -> tokenizers.Tokenizer:
  """SentencePiece-style BPE: `leading` specials at ids 0.., the 256 <0xNN> byte tokens, `middle` specials,
  then the learnt pieces (the trainer's alphabet limited, so Chinese and emoji fall back to bytes)."""
  trained = tokenizers.Tokenizer(models.BPE())
  trained.normalizer = normalizer
  trained.train_from_iterator(corpus(), trainers.BpeTrainer(vocab_size=vocab_size, show_progress=False,
                                                            limit_alphabet=60))
  learnt = sorted(trained.get_vocab().items(), key=lambda kv: kv[1])
  vocab = {t: i for i, t in enumerate(leading + [f"<0x{b:02X}>" for b in range(256)] + middle)}
  for token, _ in learnt:
    vocab.setdefault(token, len(vocab))
  merges = [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m)
            for m in json.loads(trained.to_str())["model"]["merges"]]
  tok = tokenizers.Tokenizer(models.BPE(vocab=vocab, merges=merges, byte_fallback=True, unk_token="<unk>",
                                        fuse_unk=True))
  tok.normalizer = normalizer
  tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                   decoders.Strip(" ", 1, 0)] if isinstance(normalizer, normalizers.Sequence) else
                                  [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()])
  tok.add_special_tokens([tokenizers.AddedToken(t, special=True, normalized=False) for t in leading + middle])
  return tok


def build(family: str, folder) -> transformers.PreTrainedTokenizerFast:
  """The family's tokenizer folder at `folder`; returns transformers' tokenizer of it, as AutoTokenizer loads it."""
  if family == "llama3":
    tok = _byte_level(LLAMA3_PATTERN, False, 700)
    tok.add_special_tokens(["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>",
                            "<|eot_id|>"])
    kwargs = dict(bos_token="<|begin_of_text|>", eos_token="<|eot_id|>", pad_token="<|end_of_text|>",
                  chat_template=LLAMA3_TEMPLATE)
  elif family == "mistral":
    tok = _byte_fallback(normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")]),
                         ["<unk>", "<s>", "</s>"], [], 700)
    kwargs = dict(bos_token="<s>", eos_token="</s>", unk_token="<unk>", chat_template=MISTRAL_TEMPLATE)
  elif family == "gemma":
    tok = _byte_fallback(normalizers.Replace(" ", "▁"), ["<pad>", "<eos>", "<bos>", "<unk>"],
                         ["<start_of_turn>", "<end_of_turn>"], 700)
    kwargs = dict(bos_token="<bos>", eos_token="<eos>", pad_token="<pad>", unk_token="<unk>",
                  chat_template=GEMMA_TEMPLATE)
  elif family == "qwen":
    tok = _byte_level(QWEN2_PATTERN, True, 700)
    tok.add_special_tokens(["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
    tok.add_tokens([tokenizers.AddedToken(t, special=False, normalized=False) for t in ("<tool_call>", "</tool_call>")])
    kwargs = dict(eos_token="<|im_end|>", pad_token="<|endoftext|>", chat_template=QWEN_TEMPLATE)
  else:
    raise ValueError(family)
  fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, **kwargs)
  fast.save_pretrained(str(folder))
  return transformers.AutoTokenizer.from_pretrained(str(folder))


FAMILIES = ("llama3", "mistral", "gemma", "qwen")
EOT = {"llama3": "<|eot_id|>", "mistral": "</s>", "gemma": "<end_of_turn>", "qwen": "<|im_end|>"}
