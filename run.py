"""jaxllm's one entry point.

  python run.py --config=configs/pretrain.py --config.workdir=/tmp/pt [--config.<key>=<value> ...]

The config's `stage` picks what runs (see jaxllm/stages/). The final metrics are printed as one JSON object on
the last line of stdout.
"""
import json
import re
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from jaxllm import stages
from jaxllm.config import ConfigError
from jaxllm.data.files import DataError

_CONFIG = config_flags.DEFINE_config_file("config", None, "Path to a config file (file.py or file.py:arg).",
                                          lock_config=True)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.set_verbosity(logging.WARNING)  # orbax logs every save step at INFO
  try:
    result = stages.run(_CONFIG.value)
  except (ConfigError, DataError) as e:  # a user's mistake or bad data: the one line that says which
    sys.exit(f"error: {e}")
  print(json.dumps(result, default=str), flush=True)


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing, with a bad override reported as one line (the key and why), not a traceback."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:  # a value of the wrong type
    sys.exit(f"error: {e}")
  except (KeyError, AttributeError) as e:  # a key the config lacks (ml_collections suggests the closest one)
    inner = e
    while isinstance(inner, BaseException) and inner.args:
      inner = inner.args[0]
    found = re.search(r"[\"']([A-Za-z_]\w*)[\"']", str(inner))
    key = found.group(1) if found else ""
    bad = [a.split("=")[0] for a in argv[1:] if a.startswith("--config.") and key in a.split("=")[0].split(".")]
    if not bad:  # not an override: a bug in the config file itself, keep its traceback
      raise
    hint = re.search(r"Did you mean .*\?", str(inner))
    sys.exit(f"error: {bad[0]}: the config has no key {key!r}" + (f" ({hint.group(0)})" if hint else ""))


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
