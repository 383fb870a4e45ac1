"""The wake-up's I/O: the request a renewal leaves, the last decision, and the transient systemd timer.

- `<state_dir>/wake-now`: written whenever a certificate is staged (hook or installer). certbot-dane.path
  starts certbot-dane.service as soon as it exists, and again when the service stops if it was written
  meanwhile; the run removes it (certbot-dane.service's ExecStartPre=, then `consume` under the lock).
- `<state_dir>/wake.json`: the decision of the last run (`schedule.Wake`) and whether a timer is armed for
  it; the failed-run count drives the retry back-off. Not written while steady (a steady run writes nothing).
- With `systemd`: a transient timer, certbot-dane-wake.timer, elapsing once at the decided moment and then
  running `systemctl start --no-block certbot-dane.service` (a transient timer can only start a service of
  its own name, and certbot-dane.timer is the shipped fallback). The convergence check needs none: the
  shipped timer's OnUnitInactiveSec= is that check.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import shutil
import subprocess
import time
from pathlib import Path

from certbot_dane import state
from certbot_dane.errors import StateError, WakeError
from certbot_dane.schedule import Wake

logger = logging.getLogger(__name__)

REQUEST = "wake-now"
MEMORY = "wake.json"
UNIT = "certbot-dane-wake"
SERVICE = "certbot-dane.service"
ACCURACY = "100ms"
"""The transient timer's AccuracySec= (systemd's default, 1 min, would be most of the lag)."""
TIMEOUT = 30.0
MODES = ("none", "systemd")


def request(state_dir: Path) -> None:
    """Ask for a deploy run now: certbot-dane.path sees the file (no fsync: a lost request is the hourly run's)."""
    path = state_dir / REQUEST
    try:
        state.ensure_dir(state_dir)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, f"{time.time():.3f}\n".encode())
        finally:
            os.close(fd)
    except (OSError, StateError) as err:
        logger.warning("cannot write %s to wake the deploy run (%s); the next timer run deploys", path, err)


def consume(state_dir: Path) -> None:
    """The run has started: the request is answered."""
    with contextlib.suppress(FileNotFoundError):
        (state_dir / REQUEST).unlink()


def load(state_dir: Path) -> tuple[Wake, bool] | None:
    """The last run's decision and whether a timer was armed for it; None when unknown (a damaged file too)."""
    try:
        data = state.read_json(state_dir / MEMORY)
        if data is None:
            return None
        return Wake(float(data["at"]), str(data["reason"]), int(data["failures"]), bool(data["early"])), \
            bool(data["armed"])
    except (StateError, KeyError, TypeError, ValueError) as err:
        logger.warning("ignoring %s: %s", state_dir / MEMORY, err)
        return None


def commit(state_dir: Path, wake: Wake, mode: str, now: float) -> None:
    """Remember `wake` and, with mode "systemd", arm the transient timer for it (or stop one no longer wanted).

    WakeError when systemd refuses: the shipped certbot-dane.timer still runs the convergence check.
    """
    previous = load(state_dir)
    pending = previous is not None and previous[1] and previous[0].at > now  # armed and not yet elapsed
    armed = False
    try:
        if mode == "systemd" and wake.early:
            arm(wake.at - time.time(), wake.reason, stop_first=pending)
            armed = True
        elif mode == "systemd" and pending:
            disarm()
    finally:
        if not (wake.steady and not armed and previous is not None and previous[0].steady and not previous[1]):
            state.write_json(state_dir / MEMORY, {"at": wake.at, "reason": wake.reason, "failures": wake.failures,
                                                  "early": wake.early, "armed": armed})


def _program(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise WakeError(f"{name} not found on PATH: cannot arm the wake-up timer (is systemd running?); "
                        "certbot-dane.timer's hourly run deploys instead")
    return found


def _run(args: list[str]) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(args, capture_output=True, text=True, timeout=TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise WakeError(f"{' '.join(args[:2])} ...: {err}") from err


def arm(delay: float, reason: str, stop_first: bool = False) -> None:
    """Start certbot-dane.service once, `delay` seconds from now (monotonic: wall clock changes do not move it)."""
    if stop_first:
        disarm()
    seconds = max(math.ceil(delay * 1000) / 1000, 0.001)
    args = [_program("systemd-run"), "--quiet", "--collect", f"--unit={UNIT}",
            f"--description=certbot-dane: next deploy run ({reason})"[:200],
            f"--on-active={seconds:.3f}s", f"--timer-property=AccuracySec={ACCURACY}",
            _program("systemctl"), "start", "--no-block", SERVICE]
    done = _run(args)
    if done.returncode != 0 and not stop_first:  # a timer of that name left armed (its memory was lost)?
        with contextlib.suppress(WakeError):
            disarm()
        done = _run(args)
    if done.returncode != 0:
        raise WakeError(f"systemd-run could not arm {UNIT}.timer (exit {done.returncode}: "
                        f"{done.stderr.strip()[-300:]}); certbot-dane.timer's hourly run deploys instead")
    logger.info("armed %s.timer in %.3f s: %s", UNIT, seconds, reason)


def disarm() -> None:
    """Stop the transient timer if one is armed (stopping a timer that is not loaded is no error)."""
    done = _run([_program("systemctl"), "stop", f"{UNIT}.timer"])
    if done.returncode not in (0, 5):  # 5: no such unit loaded
        raise WakeError(f"systemctl stop {UNIT}.timer exited {done.returncode}: {done.stderr.strip()[-300:]}")
