"""Facts about the machine that the benchmarks print beside their results."""

from __future__ import annotations

import platform


def cpu_model() -> str:
    """Return the CPU's model name from /proc/cpuinfo, else `platform`'s name."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"
