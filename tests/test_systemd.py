"""The shipped systemd units, statically: valid for systemd, a oneshot `certbot-dane deploy` that arms its next
wake-up, a path unit for the hook's wake-up, a convergence timer within the hour (tests/test_systemd_boot.py runs
them under a real systemd)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from certbot_dane import schedule, timer

UNITS = Path(__file__).resolve().parent.parent / "systemd"
SERVICE = UNITS / "certbot-dane.service"
TIMER = UNITS / "certbot-dane.timer"
PATH_UNIT = UNITS / "certbot-dane.path"
STATE_DIR = Path("/var/lib/certbot-dane")  # the default state_dir (config.py)

RUN_BUDGET = 10 * 60.0
"""The longest a run may take (its TimeoutStartSec=): drift is repaired by the run after the convergence check."""

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
    shutil.copy(PATH_UNIT, units / PATH_UNIT.name)
    text = SERVICE.read_text()
    assert text.count("\nExecStart=/usr/local/bin/certbot-dane ") == 1
    (units / SERVICE.name).write_text(text.replace("\nExecStart=/usr/local/bin/certbot-dane ", f"\nExecStart={stub} "))

    done = analyze("verify", str(units / SERVICE.name), str(units / TIMER.name), str(units / PATH_UNIT.name))

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

def test_service_is_a_oneshot_certbot_dane_deploy_that_arms_its_next_wake_up() -> None:
    service = parse_unit(SERVICE)
    assert one(service, "Service", "Type") == "oneshot"
    assert one(service, "Service", "ExecStart").split() == ["/usr/local/bin/certbot-dane", "deploy"]
    assert one(service, "Service", "Environment") == "CERTBOT_DANE_WAKE=systemd"  # deploy --wake systemd
    assert "Install" not in service, "only the timer, the path unit and the wake-up timer start the service"


def test_service_answers_the_wake_up_request_before_python_starts() -> None:
    """Removed by rm, not by the run: a run failing before it got that far must not be started again and again."""
    pre = one(parse_unit(SERVICE), "Service", "ExecStartPre")
    assert pre.split() == ["-/bin/rm", "-f", str(STATE_DIR / timer.REQUEST)]


def test_service_start_limit_never_stops_the_schedule() -> None:
    """systemd's default (5 starts in 10 s) stopped the wake-ups of a lagging server's first polls under a real
    systemd: a start refused for start-limit-hit left the next run to the convergence check."""
    unit = parse_unit(SERVICE)
    interval = timespan(one(unit, "Unit", "StartLimitIntervalSec"))
    assert 0 < interval and int(one(unit, "Unit", "StartLimitBurst")) >= interval / schedule.SOON


def test_service_has_no_condition() -> None:
    """No ConditionDirectoryNotEmpty=<state>/lineages any more: the hourly run also adopts a certificate certbot
    issued without the installer or the hook, and a run is what arms the next one."""
    conditions = {k: v for k, v in parse_unit(SERVICE)["Unit"].items() if k.startswith(("Condition", "Assert"))}
    assert conditions == {}


def test_service_hardening_leaves_what_deploy_and_reload_need_writable() -> None:
    service = parse_unit(SERVICE)["Service"]
    assert service["ProtectSystem"] == ["full"]  # /etc read-only except below; /var, /run writable
    assert service["ReadWritePaths"] == ["-/etc/certbot-dane/live"]
    # ... which is ignored while it does not exist: systemd creates it first (the first deploy failed without)
    assert service["ConfigurationDirectory"] == ["certbot-dane/live"]
    assert service["ConfigurationDirectoryMode"] == ["0755"]
    assert service["StateDirectory"] == ["certbot-dane"]  # /var/lib/certbot-dane
    assert "AF_UNIX" in one(parse_unit(SERVICE), "Service", "RestrictAddressFamilies").split()  # systemctl, systemd-run
    assert service["UMask"] == ["0022"]  # deployed version directories must stay readable by services
    for blocks_reloads in ("CapabilityBoundingSet", "PrivateDevices", "PrivateUsers", "ProtectProc",
                           "SystemCallFilter", "User", "DynamicUser", "PrivateNetwork", "IPAddressDeny"):
        assert blocks_reloads not in service
    assert "TimeoutStartSec" in service, "a oneshot has no start timeout by default: one hang blocks every later run"


# -- the path unit: the hook's wake-up --------------------------------------------------------------------------------

def test_path_unit_starts_the_service_when_a_staging_leaves_its_request() -> None:
    path = parse_unit(PATH_UNIT)
    assert path["Path"] == {"PathExists": [str(STATE_DIR / timer.REQUEST)], "Unit": ["certbot-dane.service"]}
    assert path["Install"] == {"WantedBy": ["paths.target"]}


# -- the timer: the convergence check ---------------------------------------------------------------------------------

def timespan(text: str) -> float:
    """Seconds in a systemd time span ("1s", "500ms", "1min 30s"), as systemd itself parses it."""
    done = analyze("timespan", text)
    assert done.returncode == 0, done.stderr
    match = re.search(r"μs: (\d+)", done.stdout)
    assert match, done.stdout
    return int(match.group(1)) / 1e6


def test_timer_starts_the_service_and_leaves_certbot_timer_alone() -> None:
    timer_unit = parse_unit(TIMER)
    assert timer_unit["Timer"].get("Unit", ["certbot-dane.service"]) == ["certbot-dane.service"]
    assert timer_unit["Install"] == {"WantedBy": ["timers.target"]}
    assert "certbot.timer" not in TIMER.read_text().replace("Debian's certbot.timer", "")
    assert "certbot.service" not in SERVICE.read_text() + TIMER.read_text()


def test_timer_is_the_convergence_check_the_schedule_counts_on() -> None:
    """58 min after every run, whatever started it: the moment `schedule.next_wake` leaves to this timer."""
    timer_unit = parse_unit(TIMER)["Timer"]
    assert timespan(one(parse_unit(TIMER), "Timer", "OnUnitInactiveSec")) == schedule.CONVERGE
    assert "OnCalendar" not in timer_unit, "no fixed ticks: runs come when something can change"


def test_timer_repairs_drift_within_the_hour() -> None:
    """A record removed by hand right after a run is republished by the run after the convergence check."""
    timer_unit = parse_unit(TIMER)
    accuracy = timespan(one(timer_unit, "Timer", "AccuracySec"))
    delay = timespan(timer_unit["Timer"].get("RandomizedDelaySec", ["0"])[-1])
    run = timespan(one(parse_unit(SERVICE), "Service", "TimeoutStartSec"))
    assert run == RUN_BUDGET
    assert schedule.CONVERGE + accuracy + delay <= 3600 - 60, "the check itself starts within 59 min"


def test_timer_runs_soon_after_boot_and_after_it_is_enabled() -> None:
    """Transient wake-ups do not survive a reboot: OnActiveSec= counts from the timer's own start (boot or
    `systemctl enable --now`), OnUnitInactiveSec= from there on."""
    assert timespan(one(parse_unit(TIMER), "Timer", "OnActiveSec")) <= 5 * 60


def test_timer_brings_the_path_unit_along() -> None:
    """Installations that enabled only the timer (before the path unit existed) get the hook's wake-up too."""
    assert parse_unit(TIMER)["Unit"]["Wants"] == ["certbot-dane.path"]
