"""The wake-up's I/O and the deploy runs that decide it, on real named: the request a staging leaves, the
remembered decision (wake.json), and arming when systemd refuses (tests/test_systemd_boot.py arms a real
timer under a real systemd)."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from certbot_dane import deploy as rollout_module
from certbot_dane import schedule, timer
from certbot_dane.errors import WakeError
from tests.scenario import BIN, Scenario

TTL = 1


def memory(s: Scenario) -> dict[str, object]:
    return json.loads((s.tmp / "state" / timer.MEMORY).read_text())


def deploy(s: Scenario, wake: str = "none") -> rollout_module.Rollout:
    """One deploy run of every lineage, in this process with the scenario's clock, deciding the next one."""
    run = s.rollout()
    rollout_module.deploy_all(run, None, wake=wake)
    return run


def fake_program(directory: Path, name: str, script: str) -> None:
    """A stand-in on PATH for a program systemd ships, to inject its failure (this host's systemd is no PID 1)."""
    directory.mkdir(exist_ok=True)
    (directory / name).write_text(f"#!/bin/sh\n{script}\n")
    (directory / name).chmod(0o755)


# -- the request and the memory ---------------------------------------------------------------------------------------

def test_a_request_is_a_private_file_that_a_run_answers(tmp_path: Path) -> None:
    timer.request(tmp_path / "state")
    path = tmp_path / "state" / timer.REQUEST
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    timer.consume(tmp_path / "state")
    timer.consume(tmp_path / "state")  # answered twice: no error
    assert not path.exists()


def test_a_steady_run_writes_nothing_and_any_other_decision_is_remembered(tmp_path: Path) -> None:
    steady = schedule.Wake(100.0 + schedule.CONVERGE, "convergence check")
    timer.commit(tmp_path, steady, "none", 100.0)
    path = tmp_path / timer.MEMORY
    written = path.stat().st_ino
    timer.commit(tmp_path, schedule.Wake(200.0 + schedule.CONVERGE, "convergence check"), "none", 200.0)
    assert path.stat().st_ino == written, "steady after steady: not rewritten"
    retry = schedule.Wake(210.0, "retry mx (failed run 1 in a row)", failures=1, early=True)
    timer.commit(tmp_path, retry, "none", 200.0)
    assert timer.load(tmp_path) == (retry, False)  # "none" arms nothing
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_damaged_memory_is_ignored_and_replaced(tmp_path: Path) -> None:
    (tmp_path / timer.MEMORY).write_text('{"at": "soon"')
    assert timer.load(tmp_path) is None
    wake = schedule.Wake(5.0, "mx: safe moment", early=True)
    timer.commit(tmp_path, wake, "none", 1.0)
    assert timer.load(tmp_path) == (wake, False)


def test_arming_without_systemd_run_says_the_hourly_run_deploys_instead(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    wake = schedule.Wake(5.0, "mx: safe moment", early=True)
    with pytest.raises(WakeError, match="systemd-run not found on PATH.*hourly run deploys instead"):
        timer.commit(tmp_path, wake, "systemd", 1.0)
    assert timer.load(tmp_path) == (wake, False), "remembered, not armed"


def test_a_timer_left_armed_is_stopped_and_armed_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """systemd-run refuses a unit name that is loaded (a wake-up armed by a run whose memory was lost)."""
    bin_dir, calls = tmp_path / "bin", tmp_path / "calls"
    fake_program(bin_dir, "systemd-run", f'echo "systemd-run $*" >> {calls}\n'
                                         f'[ -e {tmp_path}/stopped ] || {{ echo "Unit {timer.UNIT}.timer was already '
                                         'loaded" >&2; exit 1; }')
    fake_program(bin_dir, "systemctl", f'echo "systemctl $*" >> {calls}; touch {tmp_path}/stopped')
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}/usr/bin{os.pathsep}/bin")
    timer.commit(tmp_path, schedule.Wake(1e12, "mx: safe moment", early=True), "systemd", 1.0)
    lines = calls.read_text().splitlines()
    assert [line.split()[:2] for line in lines] == [["systemd-run", "--quiet"], ["systemctl", "stop"],
                                                    ["systemd-run", "--quiet"]]
    assert f"--unit={timer.UNIT}" in lines[0] and "--timer-property=AccuracySec=100ms" in lines[0]
    assert lines[0].endswith(f"systemctl start --no-block {timer.SERVICE}") and lines[1].endswith(f"{timer.UNIT}.timer")
    assert timer.load(tmp_path) is not None and timer.load(tmp_path)[1] is True  # type: ignore[index]

    calls.unlink()
    timer.commit(tmp_path, schedule.Wake(2.0 + schedule.CONVERGE, "convergence check"), "systemd", 2.0)
    assert calls.read_text().split() == ["systemctl", "stop", f"{timer.UNIT}.timer"], "no longer wanted: stopped"


# -- deploy runs deciding the next one, on real named -----------------------------------------------------------------

def test_a_staged_renewal_asks_for_a_run_and_that_run_wakes_at_the_safe_moment(sandbox, tmp_path: Path) -> None:
    name = "wake-gate.example.org"
    s = Scenario(sandbox, tmp_path, name, [f"_25._tcp.{name}"], ttl=TTL)
    s.renewed(foreign=None)
    request = tmp_path / "state" / timer.REQUEST
    assert request.exists(), "the staging asked for a deploy run"

    run = deploy(s)
    assert not request.exists(), "answered"
    served = s.state()["staged"]["served_at"]
    assert run.wake == schedule.Wake(served + 2 * TTL, f"{name}: safe moment", 0, True)
    assert memory(s) == {"at": served + 2 * TTL, "reason": f"{name}: safe moment", "failures": 0, "early": True,
                         "armed": False}

    s.wait_out_gate()
    run = deploy(s)
    assert s.deployed() == s.certbot_cert()
    assert run.wake is not None and run.wake.steady and run.wake.reason == "convergence check"
    assert memory(s)["reason"] == "convergence check"


def test_a_lagging_secondary_is_polled_soon_then_the_safe_moment_is_armed(make_sandbox, tmp_path: Path) -> None:
    box = make_sandbox(secondary=True, pebble=False)
    name = "wake-lag.example.org"
    s = Scenario(box, tmp_path, name, [f"_25._tcp.{name}"], ttl=TTL, deploy_nameservers=box.nameservers)
    s.renewed(foreign=None)
    run = deploy(s)
    assert run.wake is not None and run.wake.reason == f"{name}: 1 server answer(s) lag the staged records"
    assert run.wake.at - s.clock.now() <= schedule.POLL_FIRST  # published just now

    box.secondary.retransfer("example.org")
    run = deploy(s)
    assert run.wake is not None and run.wake.reason == f"{name}: safe moment"


def test_a_failing_reload_is_retried_with_a_growing_back_off_then_forgotten(sandbox, tmp_path: Path) -> None:
    name = "wake-retry.example.org"
    fixed = tmp_path / "fixed"
    s = Scenario(sandbox, tmp_path, name, [f"_25._tcp.{name}"], ttl=TTL, reload=[f"test -e {fixed}"])
    fixed.touch()
    s.renewed(foreign=None)
    fixed.unlink()
    deploy(s)
    s.wait_out_gate()
    delays = []
    for _ in range(2):
        run = deploy(s)
        assert name in run.failures
        assert run.wake is not None
        delays.append((run.wake.at - s.clock.now(), run.wake.failures))
    assert [(round(d), n) for d, n in delays] == [(schedule.RETRY_FIRST, 1), (2 * schedule.RETRY_FIRST, 2)]

    fixed.touch()
    s.clock.advance(2 * schedule.RETRY_FIRST)
    run = deploy(s)
    assert run.failures == {} and run.wake is not None and run.wake.failures == 0 and run.wake.steady


# -- the command ------------------------------------------------------------------------------------------------------

def test_the_command_says_when_the_next_run_comes_and_the_hook_asks_for_it(sandbox, tmp_path: Path) -> None:
    name = "wake-cli.example.org"
    s = Scenario(sandbox, tmp_path, name, [f"_25._tcp.{name}"], ttl=TTL, way="hook")
    s.bootstrapped()
    (tmp_path / "state" / timer.REQUEST).unlink()
    done = s.run_hook(s.new_certificate())  # the real hook executable, as certbot runs it
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "state" / timer.REQUEST).exists()

    done = s.cli("deploy")
    assert done.returncode == 0, done.stderr
    assert "next run: " in done.stdout and f"({name}: safe moment)" in done.stdout
    assert not (tmp_path / "state" / timer.REQUEST).exists()

    done = s.cli("deploy", "--wake", "systemd", "--dry-run")
    assert done.returncode == 1 and "not with --lineage or --dry-run" in done.stderr


def test_a_run_that_cannot_arm_its_wake_up_deploys_and_says_so(sandbox, tmp_path: Path) -> None:
    """certbot-dane.service sets CERTBOT_DANE_WAKE=systemd; here systemd-run fails as it does without systemd."""
    name = "wake-nosystemd.example.org"
    s = Scenario(sandbox, tmp_path, name, [f"_25._tcp.{name}"], ttl=TTL)
    s.renewed(foreign=None)
    fake_program(tmp_path / "bin", "systemd-run", 'echo "System has not been booted with systemd as init system '
                                                   '(PID 1). Can\'t operate." >&2; exit 1')
    fake_program(tmp_path / "bin", "systemctl", "exit 1")
    done = s.cli("deploy", env={"CERTBOT_DANE_WAKE": "systemd",
                                "PATH": f"{tmp_path / 'bin'}{os.pathsep}{BIN}{os.pathsep}{os.environ['PATH']}"})
    assert done.returncode == 1
    assert f"{name}: not deploying yet: waiting 2 x TTL" in done.stdout, "the run itself did its work"
    assert done.stderr.splitlines() == [
        "certbot-dane: error: systemd-run could not arm certbot-dane-wake.timer (exit 1: System has not been booted "
        "with systemd as init system (PID 1). Can't operate.); certbot-dane.timer's hourly run deploys instead"]
    assert memory(s)["armed"] is False and memory(s)["early"] is True
