"""KTO: optimise a policy against its frozen starting point on single answers tagged desirable or undesirable
(jaxllm/losses/kto.py, data in jaxllm/data/kto.py).

  python run.py --config=configs/kto.py --config.init_from=SFT_WORKDIR --config.workdir=/tmp/jaxllm/kto
  python run.py --config=configs/kto.py --config.init_from=W --config.workdir=K \
      --config.data.name=kto_en_demo --config.data.dataset_info=PATH/dataset_info.json   # LLaMA-Factory kto_tag data
  python run.py --config=configs/kto.py:tiny --config.init_from=W --config.workdir=K    # smoke test

With no data.name the answers are the built-in world's preference pairs split in two: each correct worked answer
tagged desirable, each wrong one undesirable. The reference policy is init_from's model (under LoRA: the base
without adapters). Held-out metrics: `accuracy` (share of answers whose implicit reward falls on the side of
the KL reference point their tag asks for), `kl`, `desirable_reward` / `undesirable_reward`.
"""
import ml_collections

from configs import dpo


def get_config(arg: str | None = None):
  # DPO's schedule and smoke size; a row holds the prompt once, its answer, and another example's answer (the
  # KL sample), as long as a pair row; examples are tagged answers (half of them desirable on the built-in world)
  c = dpo.get_config(arg)
  c.unlock()
  c.stage = "kto"
  del c["dpo"]
  c.kto = ml_collections.ConfigDict()
  c.kto.beta = 0.1  # scale of the implicit reward log pi/ref around the KL reference point
  # lambda_D, lambda_U: the paper keeps lambda_D n_D / (lambda_U n_U) in [1, 4/3] for n_D desirable and n_U
  # undesirable examples; the built-in world has as many of each
  c.kto.desirable_weight = 1.0
  c.kto.undesirable_weight = 1.0
  c.lock()
  return c
