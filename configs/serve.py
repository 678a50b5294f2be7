"""Serve a trained model over an OpenAI-compatible HTTP API, with a chat page, continuously batched.

  python run.py --config=configs/serve.py --config.init_from=/tmp/jaxllm/sft     # http://127.0.0.1:8000
  python run.py --config=configs/serve.py:tiny --config.init_from=W --config.serve.port=0   # any free port

  curl http://127.0.0.1:8000/v1/chat/completions -H 'Content-Type: application/json' \
    -d '{"model": "sft", "messages": [{"role": "user", "content": "What is 7 + 5?"}]}'
  openai.OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="-").chat.completions.create(...)

init_from is a jaxllm workdir (latest checkpoint, LoRA merged; or W/checkpoints/<step>) or a Hugging Face model
folder. The model is served under its folder's name (serve.model_name overrides). It prints the URL once it
listens (after compiling the first prefill and decode step: seconds for small models); SIGTERM or Ctrl-C stops
it after letting running replies finish for up to serve.shutdown_timeout seconds. docs/serving.md has the
endpoints, the fields they take and the throughput against transformers.
"""
import ml_collections

from configs import base


def get_config(arg: str | None = None):
  c = base.get_config()
  c.stage = "serve"
  c.serve = ml_collections.ConfigDict()
  c.serve.host = "127.0.0.1"  # interface to listen on; 0.0.0.0 exposes the server to the network
  c.serve.port = 8000  # 0 = any free port (printed)
  c.serve.api_key = ""  # '' = no authentication; else clients must send 'Authorization: Bearer <key>'
  c.serve.api_key_env = ""  # name of an environment variable holding the key (used when api_key is '')
  c.serve.model_name = ""  # the id clients pass as `model`; '' = init_from's folder name
  c.serve.max_batch = 32  # KV-cache slots: requests decoded together in one step
  c.serve.max_queue = 256  # requests waiting for a slot; one more gets HTTP 429
  c.serve.context = 0  # tokens per slot (prompt + reply); 0 = model.max_seq_len
  c.serve.max_tokens = 256  # reply budget of a request that names none (less near the end of the context)
  c.serve.prefill_per_step = 4  # waiting prompts prefilled (batched) between two decode dispatches
  c.serve.kv_block = 0  # KV-cache slots per block (0: 64, or context / 16 if more); a step reads only blocks in use
  c.serve.steps_per_dispatch = 1  # decode steps per jitted call: fewer host round trips, one SSE chunk per call
  c.serve.request_timeout = 600.0  # seconds a request may take from arrival to its last token (HTTP 408)
  c.serve.shutdown_timeout = 10.0  # on SIGTERM: seconds running requests get to finish before being cut
  c.serve.warmup = True  # compile the decode steps and a short prefill before listening (else on first use)
  if arg == "tiny":
    c.serve.max_batch = 4
    c.serve.max_tokens = 32
  c.lock()
  return c
