"""Same config + seed => the same metrics.jsonl, value for value (wall-clock timings aside); another seed differs."""
from conftest import tiny_config
from jaxllm.metrics import read_metrics
from jaxllm.stages import grpo, pretrain


def _values(workdir) -> list[dict]:
  """Every logged value except wall-clock measurements, which no seed can fix."""
  timing = lambda k: k == "tokens_per_sec" or k.endswith("_sec") or k.endswith("_seconds")
  return [{k: v for k, v in row.items() if not timing(k)} for row in read_metrics(str(workdir))]


def test_pretrain_is_bitwise_reproducible_and_seed_sensitive(tmp_path, tokenizer_dir):
  common = {"steps": 6, "log.every": 1, "sample.num": 0}
  for name, seed in (("a", 0), ("b", 0), ("c", 1)):
    pretrain.run(tiny_config("pretrain", tmp_path / name, tokenizer_dir, seed=seed, **common))
  a, b, c = (_values(tmp_path / n) for n in "abc")
  assert a == b
  assert [r["loss"] for r in a if r["split"] == "train"] != [r["loss"] for r in c if r["split"] == "train"]


def test_grpo_is_bitwise_reproducible_and_seed_sensitive(tmp_path, tokenizer_dir):
  pretrain.run(tiny_config("pretrain", tmp_path / "pt", tokenizer_dir, steps=4, **{"sample.num": 0}))
  for name, seed in (("a", 0), ("b", 0), ("c", 1)):
    config = tiny_config("grpo", tmp_path / name, tokenizer_dir, seed=seed, steps=2,
                         **{"init_from": str(tmp_path / "pt"), "sample.num": 0, "sampling.temperature": 1.0})
    config.tokenizer.path = ""
    grpo.run(config)
  a, b, c = (_values(tmp_path / n) for n in "abc")
  assert a == b
  assert a != c
