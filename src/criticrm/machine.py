"""The CPU this process runs on, from /proc/cpuinfo: its model name (every timing names it: the CPU of these
machines changes between sessions) and its instruction-set flags (which decide whether bf16 is fast)."""

from __future__ import annotations

import functools
import platform
from pathlib import Path


@functools.cache
def _cpuinfo() -> tuple[str | None, frozenset[str]]:
    fields: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())  # the first core's
    except OSError:
        pass
    name = fields.get("model name")
    if name and "cpu family" in fields and "model" in fields:
        # A virtual machine's name can hide the generation ("AMD EPYC" is Zen 4 or Zen 5): the family tells it.
        name = f"{name} (family {fields['cpu family']}, model {fields['model']})"
    return name, frozenset(fields.get("flags", "").split())


def cpu_model_name() -> str:
    """The first core's model name with its family and model numbers, else what `platform` knows (the
    architecture, at least)."""
    return _cpuinfo()[0] or platform.processor() or platform.machine()


def cpu_flags() -> frozenset[str]:
    """The first core's flags (empty where /proc/cpuinfo cannot be read)."""
    return _cpuinfo()[1]
