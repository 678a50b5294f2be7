"""SimPO: reference-free preference optimisation of a policy on preference pairs (jaxllm/losses/simpo.py).

  python run.py --config=configs/simpo.py --config.init_from=SFT_WORKDIR --config.workdir=/tmp/jaxllm/simpo
  python run.py --config=configs/simpo.py --config.init_from=W --config.workdir=S --config.lora.rank=8
  python run.py --config=configs/simpo.py:tiny --config.init_from=W --config.workdir=S    # smoke test

The same pairs and schedule as configs/dpo.py, but no reference policy: the state holds one copy of the weights
and a step runs one forward pass per pair row. Held-out metrics: `accuracy` (share of pairs whose chosen answer
has the larger per-token log-probability), `margin`, `chosen_logp`.
"""
import ml_collections

from configs import dpo


def get_config(arg: str | None = None):
  c = dpo.get_config(arg)  # the same pairs, schedule and smoke size; no reference policy
  c.unlock()
  c.stage = "simpo"
  del c["dpo"]
  c.simpo = ml_collections.ConfigDict()
  c.simpo.beta = 2.0  # scale of the per-token log-prob difference (the paper's range: 2 - 2.5)
  c.simpo.gamma = 1.0  # target reward margin; the paper keeps gamma / beta near 0.5
  c.lock()
  return c
