"""The shipped systemd units: valid for systemd, a oneshot `certbot-dane deploy`, and a timer lagging at most 60 s."""

from __future__ import annotations

import datetime
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

UNITS = Path(__file__).resolve().parent.parent / "systemd"
SERVICE = UNITS / "certbot-dane.service"
TIMER = UNITS / "certbot-dane.timer"

MAX_LAG = 60.0
"""Seconds from a certificate's safe moment to the end of the deploy that swaps it in (the issue's bound)."""
RUN_BUDGET = 10.0
"""Seconds we allow one deploy run from its start to the swap (it takes well under 1 s; DNS can be slow)."""

Unit = dict[str, dict[str, list[str]]]


def parse_unit(path: Path) -> Unit:
    """Section -> key -> every value in order (systemd keys may repeat); comments and blank lines skipped."""
    unit: Unit = {}
    section: dict[str, list[str]] | None = None
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            section = unit.setdefault(line[1:-1], {})
            continue
        key, sep, value = line.partition("=")
        assert sep and section is not None and not line.endswith("\\"), f"{path}:{number}: unexpected {raw!r}"
        section.setdefault(key.strip(), []).append(value.strip())
    return unit


def one(unit: Unit, section: str, key: str) -> str:
    values = unit.get(section, {}).get(key, [])
    assert len(values) == 1, f"[{section}] {key}= must be set exactly once, found {values}"
    return values[0]


def systemd_analyze() -> str:
    """Path of systemd-analyze; skip without it, but fail in CI where it must be installed (apt-get install systemd)."""
    found = shutil.which("systemd-analyze")
    if found is None:
        message = "systemd-analyze is missing: apt-get install systemd"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return found


def analyze(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([systemd_analyze(), *args], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "TZ": "UTC", "SYSTEMD_PAGER": "", "LC_ALL": "C.UTF-8"}, check=False)


# -- systemd accepts both units ---------------------------------------------------------------------------------------

def test_both_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    """`systemd-analyze verify` also checks that ExecStart's program exists and is executable on this host.

    /usr/local/bin/certbot-dane only exists where certbot-dane was pip-installed as root, so the units are
    copied to a temporary directory (keeping their names, so the timer finds its service) and ExecStart's
    program alone is pointed at an executable stub of the same name; every other line is checked as shipped.
    """
    stub = tmp_path / "bin" / "certbot-dane"
    stub.parent.mkdir()
    stub.write_text("#!/bin/sh\nexit 0\n")
    stub.chmod(0o755)
    units = tmp_path / "units"
    units.mkdir()
    shutil.copy(TIMER, units / TIMER.name)
    text = SERVICE.read_text()
    assert text.count("\nExecStart=/usr/local/bin/certbot-dane ") == 1
    (units / SERVICE.name).write_text(text.replace("\nExecStart=/usr/local/bin/certbot-dane ", f"\nExecStart={stub} "))

    done = analyze("verify", str(units / SERVICE.name), str(units / TIMER.name))

    output = (done.stdout + done.stderr).splitlines()
    assert done.returncode == 0, output
    # unknown keys, bad values, missing units are reported on these lines even when the exit status is 0
    assert [line for line in output if "certbot-dane" in line] == []


def test_verify_reports_a_broken_unit(tmp_path: Path) -> None:
    """The check above can fail: systemd-analyze names a misspelt key of our timer."""
    broken = tmp_path / TIMER.name
    broken.write_text(TIMER.read_text().replace("AccuracySec=", "AccuracySecs="))
    done = analyze("verify", str(broken))
    assert any("certbot-dane.timer" in line and "AccuracySecs" in line
               for line in (done.stdout + done.stderr).splitlines())


# -- the service ------------------------------------------------------------------------------------------------------

def test_service_is_a_oneshot_certbot_dane_deploy() -> None:
    service = parse_unit(SERVICE)
    assert one(service, "Service", "Type") == "oneshot"
    assert one(service, "Service", "ExecStart").split() == ["/usr/local/bin/certbot-dane", "deploy"]
    assert "Install" not in service, "only the timer starts the service"


def test_service_is_skipped_only_when_certbot_dane_manages_no_lineage() -> None:
    """Not when staging/ is empty: a swap whose reload/verify/retire is pending has nothing staged."""
    conditions = {k: v for k, v in parse_unit(SERVICE)["Unit"].items() if k.startswith(("Condition", "Assert"))}
    assert conditions == {"ConditionDirectoryNotEmpty": ["/var/lib/certbot-dane/lineages"]}


def test_service_hardening_leaves_what_deploy_and_reload_need_writable() -> None:
    service = parse_unit(SERVICE)["Service"]
    assert service["ProtectSystem"] == ["full"]  # /etc read-only except below; /var, /run writable
    assert service["ReadWritePaths"] == ["-/etc/certbot-dane/live"]
    assert service["StateDirectory"] == ["certbot-dane"]  # /var/lib/certbot-dane
    assert "AF_UNIX" in one(parse_unit(SERVICE), "Service", "RestrictAddressFamilies").split()  # systemctl reload
    assert service["UMask"] == ["0022"]  # deployed version directories must stay readable by services
    for blocks_reloads in ("CapabilityBoundingSet", "PrivateDevices", "PrivateUsers", "ProtectProc",
                           "SystemCallFilter", "User", "DynamicUser", "PrivateNetwork", "IPAddressDeny"):
        assert blocks_reloads not in service
    assert "TimeoutStartSec" in service, "a oneshot has no start timeout by default: one hang blocks every later run"


def test_timer_starts_the_service_and_leaves_certbot_timer_alone() -> None:
    timer = parse_unit(TIMER)
    assert timer["Timer"].get("Unit", ["certbot-dane.service"]) == ["certbot-dane.service"]
    assert timer["Install"] == {"WantedBy": ["timers.target"]}
    assert "certbot.timer" not in TIMER.read_text().replace("Debian's certbot.timer", "")
    assert "certbot.service" not in SERVICE.read_text() + TIMER.read_text()


# -- the schedule -----------------------------------------------------------------------------------------------------

def timespan(text: str) -> float:
    """Seconds in a systemd time span ("1s", "500ms", "1min 30s"), as systemd itself parses it."""
    done = analyze("timespan", text)
    assert done.returncode == 0, done.stderr
    match = re.search(r"μs: (\d+)", done.stdout)
    assert match, done.stdout
    return int(match.group(1)) / 1e6


def elapses(expressions: list[str], start: datetime.datetime, end: datetime.datetime) -> list[datetime.datetime]:
    """Every elapse of the OnCalendar= expressions in (start, end], as systemd computes them."""
    found: set[datetime.datetime] = set()
    for expression in expressions:
        done = analyze("calendar", f"--base-time={start:%Y-%m-%d %H:%M:%S} UTC", "--iterations=3000", expression)
        assert done.returncode == 0, done.stderr
        for stamp in re.findall(r"(?:Next elapse|Iter\. #\d+): \w+ (\S+ \S+) UTC", done.stdout):
            when = datetime.datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S").replace(tzinfo=datetime.UTC)
            if when <= end:
                found.add(when)
    return sorted(found)


def test_timer_schedule_deploys_at_most_60_seconds_after_the_safe_moment() -> None:
    """Worst case: the safe moment falls just after an elapse; the run starts at the next elapse, up to
    AccuracySec + RandomizedDelaySec later, and needs RUN_BUDGET to swap."""
    timer = parse_unit(TIMER)["Timer"]
    assert set(timer) & {"OnActiveSec", "OnBootSec", "OnStartupSec", "OnUnitActiveSec", "OnUnitInactiveSec"} == set()
    start = datetime.datetime(2024, 3, 30, 12, 0, tzinfo=datetime.UTC)  # a day across a DST change elsewhere
    end = start + datetime.timedelta(days=1)
    times = [start, *elapses(timer["OnCalendar"], start, end)]
    assert len(times) > 2, "the timer must elapse"
    longest_gap = max((b - a).total_seconds() for a, b in zip(times, times[1:], strict=False))
    longest_gap = max(longest_gap, (end - times[-1]).total_seconds())
    accuracy = timespan(one(parse_unit(TIMER), "Timer", "AccuracySec"))
    delay = timespan(timer.get("RandomizedDelaySec", ["0"])[-1])

    worst = longest_gap + accuracy + delay + RUN_BUDGET
    assert worst <= MAX_LAG, (f"gap {longest_gap:g} s + accuracy {accuracy:g} s + delay {delay:g} s "
                              f"+ run {RUN_BUDGET:g} s > {MAX_LAG:g} s")


def test_timer_catches_up_after_downtime() -> None:
    assert one(parse_unit(TIMER), "Timer", "Persistent") == "true"
