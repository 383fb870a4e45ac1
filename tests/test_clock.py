"""The gate's wait against a wall clock that moves: real `certbot-dane deploy` runs under libfaketime.

libfaketime (Debian's `faketime`) shifts the wall clock of one process and, with
FAKETIME_DONT_FAKE_MONOTONIC=1, leaves CLOCK_BOOTTIME alone: exactly a host whose clock was set
back or forward by hand, or by a bad NTP step, within one boot.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from sandbox.servers import Sandbox
from tests.scenario import BIN, Scenario, require_programs

TTL = 2  # the runs between the two deploys take well under 2 x TTL


def deploy_with_clock_off(s: Scenario, offset: str) -> subprocess.CompletedProcess[str]:
    """`certbot-dane deploy` with this process's wall clock `offset` (e.g. "-1h", "+1d") off."""
    require_programs([] if shutil.which("faketime") else ["faketime"], "faketime")
    return subprocess.run(["faketime", "-f", offset, str(BIN / "certbot-dane"), "-c", str(s.deploy_config), "deploy"],
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, **s.env, "FAKETIME_DONT_FAKE_MONOTONIC": "1"})


def staged_and_served(sandbox: Sandbox, tmp_path: Path, name: str) -> Scenario:
    s = Scenario(sandbox, tmp_path, name, [f"_25._tcp.{name}"], ttl=TTL)
    assert s.issue().returncode == 0
    old = s.records(s.certbot_cert())
    assert s.renew().returncode == 0
    s.wait_until_served(s.tlsa[0], old | s.records(s.certbot_cert()))
    return s


@pytest.mark.parametrize("offset", ["-1h", "+1d"])
def test_a_run_with_the_clock_set_back_or_forward_does_not_shorten_the_wait(sandbox: Sandbox, tmp_path: Path,
                                                                           offset: str) -> None:
    s = staged_and_served(sandbox, tmp_path, f"clock-{'ahead' if offset.startswith('+') else 'behind'}.example.org")
    old = s.deployed()
    started = time.monotonic()
    done = deploy_with_clock_off(s, offset)           # every server serves the new records: the clock starts
    assert done.returncode == 0, done.stderr
    assert s.state()["staged"]["served_at"] is not None and s.deployed() == old
    done = s.cli("deploy")                             # the wall clock says an hour (or minus a day) passed
    assert done.returncode == 0, done.stderr
    assert time.monotonic() - started < 2 * TTL, "the machine is too slow for this test's TTL"
    assert s.deployed() == old, "the wait is counted in time since boot, not on the wall clock"
    assert "not deploying yet" in done.stdout
    served = s.state()["staged"]["served_uptime"]        # the real 2 x TTL, in time since boot, from the moment
    time.sleep(max(0.0, served + 2 * TTL + 0.05 - time.clock_gettime(time.CLOCK_BOOTTIME)))  # the gate saw
    done = s.cli("deploy")
    assert done.returncode == 0, done.stderr
    assert s.deployed() == s.certbot_cert()
