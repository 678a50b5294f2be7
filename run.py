"""jaxllm's one entry point.

  python run.py --config=configs/pretrain.py --config.workdir=/tmp/pt [--config.<key>=<value> ...]

The config's `stage` picks what runs (see jaxllm/stages/). The final metrics are printed as one JSON object on
the last line of stdout. A user error (config, data, paths, checkpoints, disk full, out of memory) is printed as
one line `error: ...` on stderr with exit status 2 and no traceback; `--config.log.traceback=True` or
JAXLLM_TRACEBACK=1 shows the traceback as well.
"""
import json
import os
import re
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from jaxllm import stages, user_errors

_CONFIG = config_flags.DEFINE_config_file("config", None, "Path to a config file (file.py or file.py:arg).",
                                          lock_config=True)
USER_ERROR = 2  # exit status of a refused input


def _fail(message: str) -> None:
  print(f"error: {message}", file=sys.stderr, flush=True)
  sys.exit(USER_ERROR)


def main(argv):
  if len(argv) > 1:
    _fail(f"unexpected arguments: {argv[1:]} (overrides are --config.<key>=<value>)")
  logging.set_verbosity(logging.WARNING)  # orbax logs every save step at INFO
  config = _CONFIG.value
  try:
    result = stages.run(config)
  except Exception as e:  # noqa: BLE001 -- sorted below: user errors become one line, bugs keep the traceback
    message = user_errors.describe(e)
    if message is None or config.log.traceback or os.environ.get("JAXLLM_TRACEBACK"):
      raise
    _fail(message)
  print(json.dumps(result, default=str), flush=True)


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing, with a bad override reported as one line (the key and why), not a traceback."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:  # a value of the wrong type
    _fail(" ".join(str(e).split()))
  except (KeyError, AttributeError) as e:  # a key the config lacks (ml_collections suggests the closest one)
    inner = e
    while isinstance(inner, BaseException) and inner.args:
      inner = inner.args[0]
    found = re.search(r"[\"']([A-Za-z_]\w*)[\"']", str(inner))
    key = found.group(1) if found else ""
    bad = [a.split("=")[0] for a in argv[1:] if a.startswith("--config.") and key in a.split("=")[0].split(".")]
    if not bad or os.environ.get("JAXLLM_TRACEBACK"):  # not an override: a bug in the config file itself
      raise
    hint = re.search(r"Did you mean .*\?", str(inner))
    _fail(f"{bad[0]}: the config has no key {key!r}" + (f" ({hint.group(0)})" if hint else ""))


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
