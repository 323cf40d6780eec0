"""What the CPU says about itself: the feature-flag line of ``/proc/cpuinfo`` (Linux)."""

from __future__ import annotations


def cpu_flags() -> str:
    """The ``flags`` line (x86) or ``Features`` line (Arm) of ``/proc/cpuinfo``; "" where there is none."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            return next((line for line in f if line.startswith(("flags", "Features"))), "")
    except OSError:
        return ""
