"""Refuse a run that cannot fit before its first step: XLA's compiled memory estimate of the train step against
the memory the device (or, on CPU, the host) has free, both numbers in the error.

`memory_analysis()` is per device; what the step needs beyond the state already placed is its temporaries plus
the outputs that do not reuse a donated input buffer.
"""
from __future__ import annotations

import jax

from jaxllm.errors import UserError

GIB = 2**30


def _host_available_bytes() -> int | None:
  try:
    with open("/proc/meminfo") as f:
      for line in f:
        if line.startswith("MemAvailable:"):
          return int(line.split()[1]) * 1024
  except OSError:
    return None
  return None


def available_bytes() -> tuple[int | None, str]:
  """(free bytes for one device's program, what was measured)."""
  device = jax.local_devices()[0]
  stats = device.memory_stats() if hasattr(device, "memory_stats") else None
  if stats and "bytes_limit" in stats:
    return stats["bytes_limit"] - stats.get("bytes_in_use", 0), f"free on {device.device_kind} {device.id}"
  host = _host_available_bytes()
  if host is None:
    return None, "unknown"
  # CPU devices of one process share the host's memory.
  return host // max(jax.local_device_count(), 1), "host memory available per local device"


def check(compiled) -> None:
  analysis = compiled.memory_analysis()
  if analysis is None:
    return
  need = analysis.temp_size_in_bytes + max(analysis.output_size_in_bytes - analysis.alias_size_in_bytes, 0)
  have, what = available_bytes()
  if have is not None and need > have:
    raise UserError(
        f"out of memory before the first step: XLA's estimate of the train step is {need / GIB:.2f} GiB per device "
        f"(temporaries {analysis.temp_size_in_bytes / GIB:.2f} GiB, new outputs) but {have / GIB:.2f} GiB is {what}. "
        "Lower data.batch_size or data.seq_len, raise optim.grad_accum, set model.remat=full, or shard over more "
        "devices")
