"""Reloading the services of a lineage: configured commands run without a shell."""

from __future__ import annotations

import logging
import shlex
import subprocess
from collections.abc import Sequence

from certbot_dane.errors import ReloadFailed

logger = logging.getLogger(__name__)

RELOAD_TIMEOUT = 120


def reload(lineage: str, commands: Sequence[str]) -> None:
    """Run each reload command; ReloadFailed with its exit status and output on the first failure."""
    for command in commands:
        try:
            done = subprocess.run(shlex.split(command), capture_output=True, text=True,
                                  timeout=RELOAD_TIMEOUT, check=False)
        except (OSError, subprocess.TimeoutExpired) as err:
            raise ReloadFailed(f"{lineage}: reload command {command!r} could not run: {err}") from err
        if done.returncode != 0:
            output = (done.stdout + done.stderr).strip().replace("\n", " | ")[-500:]
            raise ReloadFailed(f"{lineage}: reload command {command!r} exited {done.returncode}: {output}")
        logger.info("%s: reloaded with %r", lineage, command)
