"""The CPU this process runs on, from /proc/cpuinfo: its model name (every timing names it: the CPU of these
machines changes between sessions) and its instruction-set flags (which decide whether bf16 is fast)."""

from __future__ import annotations

import functools
import platform
from pathlib import Path


@functools.cache
def _cpuinfo() -> tuple[str | None, frozenset[str]]:
    name, flags = None, frozenset()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and name is None:
                name = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and not flags:
                flags = frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return name, flags


def cpu_model_name() -> str:
    """The first core's model name, else what `platform` knows (the architecture, at least)."""
    return _cpuinfo()[0] or platform.processor() or platform.machine()


def cpu_flags() -> frozenset[str]:
    """The first core's flags (empty where /proc/cpuinfo cannot be read)."""
    return _cpuinfo()[1]
