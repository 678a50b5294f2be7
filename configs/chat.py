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
  # replies: at most 256 tokens (less near the end of the model's max_seq_len); sampling.system opens every
  # conversation
  c.sampling.update(max_new_tokens=256, temperature=0.7, top_p=0.95)
  if arg == "tiny":
    c.sampling.max_new_tokens = 32
  c.lock()
  return c
