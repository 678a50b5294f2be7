"""Talk to a trained model: multi-turn ChatML chat in the terminal, streaming the reply as it is generated.

  python run.py --config=configs/chat.py --config.init_from=/tmp/jaxllm/sft        # interactive; /reset, /quit
  echo 'What is 7 + 5?' | python run.py --config=configs/chat.py --config.init_from=W   # one turn per line
  python run.py --config=configs/chat.py --config.init_from=W --config.chat.prompt='hi'  # one prompt, then exit

init_from is a jaxllm workdir (latest checkpoint, LoRA merged; or W/checkpoints/<step>) or a Hugging Face model
folder. Nothing is written. The first reply waits a second or two for compilation; later ones stream at once.
"""

import ml_collections

from configs import base


def get_config(arg: str | None = None):
  c = base.get_config()
  c.stage = "chat"
  c.chat = ml_collections.ConfigDict()
  c.chat.prompt = ""  # '' = read user turns from stdin (interactive on a terminal); else answer this and exit
  c.chat.system = ""  # system prompt opening every conversation; '' = none
  c.chat.max_new_tokens = 256  # reply budget in tokens (less near the end of the model's max_seq_len)
  c.chat.temperature = 0.7  # 0 = greedy
  c.chat.top_k = 0  # sample among the k most likely tokens; 0 = off
  c.chat.top_p = 0.95  # nucleus sampling mass; 1 = off
  if arg == "tiny":
    c.chat.max_new_tokens = 32
  c.lock()
  return c
