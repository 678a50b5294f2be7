"""jaxllm's one entry point.

  python run.py --config=configs/pretrain.py --config.workdir=/tmp/pt [--config.<key>=<value> ...]

The config's `stage` picks what runs (see jaxllm/stages/). The final metrics are printed as one JSON object on
the last line of stdout.
"""
import json
import sys

from absl import app, logging
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


if __name__ == "__main__":
  app.run(main)
