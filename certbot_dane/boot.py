"""The host's boot: its id and the time since, which no setting of the wall clock moves."""

from __future__ import annotations

import time
from pathlib import Path

BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


def uptime() -> tuple[str, float]:
    """This boot's id ("" when unknown: only the wall clock then counts) and CLOCK_BOOTTIME seconds."""
    try:
        boot = BOOT_ID.read_text(encoding="ascii").strip()
    except OSError:
        boot = ""
    return boot, time.clock_gettime(time.CLOCK_BOOTTIME)
