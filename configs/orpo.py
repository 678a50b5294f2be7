"""ORPO: supervised fine-tuning and preference optimisation in one reference-free stage (jaxllm/losses/orpo.py).

  python run.py --config=configs/orpo.py --config.init_from=SFT_WORKDIR --config.workdir=/tmp/jaxllm/orpo
  python run.py --config=configs/orpo.py --config.init_from=W --config.workdir=S --config.lora.rank=8
  python run.py --config=configs/orpo.py:tiny --config.init_from=W --config.workdir=S    # smoke test

The same pairs and schedule as configs/dpo.py, but no reference policy: the state holds one copy of the weights
and a step runs one forward pass per pair row. ORPO needs no SFT stage before it (init_from may be a pretrained
model); from an SFT model it refines. Held-out metrics: `accuracy` (share of pairs whose chosen answer has the
larger log-odds), `log_odds_ratio`, `chosen_nll`.
"""
import ml_collections

from configs import dpo


def get_config(arg: str | None = None):
  c = dpo.get_config(arg)  # the same pairs, schedule and smoke size; no reference policy
  c.unlock()
  c.stage = "orpo"
  del c["dpo"]
  c.orpo = ml_collections.ConfigDict()
  c.orpo.lam = 0.1  # weight of the odds-ratio term beside the chosen answers' NLL (the paper's lambda)
  c.lock()
  return c
