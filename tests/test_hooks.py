"""Hook entry points: dry-run detection from certbot's command line, and the hooks against real named + Pebble."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from certbot_dane import hooks
from tests.scenario import Scenario, snapshot

HOOK = Path(__file__).resolve().parent.parent / "hooks" / "certbot-dane-deploy"


@pytest.mark.parametrize("args, dry", [
    (["renew", "--dry-run"], True),
    (["renew", "--dry-ru"], True),
    (["renew", "--dry-r", "--run-deploy-hooks"], True),
    (["renew", "--dry"], True),
    (["renew", "--dr"], True),  # certbot 5.8 has no other option starting with --dr: argparse takes it
    (["--dry-run", "certonly", "-d", "a.example"], True),
    (["renew", "--dry-run=yes"], True),
    (["renew", "--dry=1"], True),
    (["reconfigure", "--cert-name", "a", "--run-deploy-hooks"], True),
    (["--cert-name", "a", "reconfigure"], True),
    (["renew"], False),
    (["renew", "--d"], False),  # ambiguous in certbot: it refuses to run
    (["renew", "--dry-runs"], False),
    (["renew", "--deploy-hook", "x"], False),
    (["renew", "--run-deploy-hooks"], False),
    (["renew", "--cert-name", "reconfigure"], False),  # certbot's verb is the first verb on the line
    (["certonly", "-d", "dry-run.example"], False),
    ([], False),
])
def test_dry_run_is_read_from_certbots_arguments_as_argparse_reads_them(args, dry):
    assert (hooks.dry_run(args) is not None) is dry


@pytest.mark.parametrize("cmdline, args", [
    (["certbot", "renew", "--dry-ru"], ["renew", "--dry-ru"]),
    (["/usr/bin/certbot", "renew"], ["renew"]),
    (["/usr/bin/python3", "/usr/bin/certbot", "renew"], ["renew"]),
    (["/opt/venv/bin/python3.11", "-I", "/opt/venv/bin/certbot", "renew"], ["renew"]),
    (["python3", "-m", "certbot", "renew"], ["renew"]),
    (["letsencrypt", "renew"], ["renew"]),
    (["/bin/sh", "-c", "certbot renew --dry-run"], None),
    (["/usr/bin/python3", "/opt/hooks/certbot-dane-deploy"], None),
    (["/usr/bin/certbot-dane", "deploy", "--dry-run"], None),
    (["python3", "-m", "certbot_dane.hooks", "deploy"], None),
    ([""], None),
])
def test_only_certbot_itself_is_taken_for_certbot(cmdline, args):
    assert hooks.certbot_args(cmdline) == args


def fake_proc(root: Path, processes: dict[int, tuple[int, list[str]]]) -> Path:
    """A /proc-shaped tree: pid -> (parent pid, command line)."""
    for pid, (ppid, cmdline) in processes.items():
        (root / str(pid)).mkdir(parents=True)
        (root / str(pid) / "cmdline").write_bytes(b"".join(a.encode() + b"\0" for a in cmdline))
        (root / str(pid) / "stat").write_text(f"{pid} (some (odd) name) S {ppid} {pid} 0 0\n")
    return root


def test_the_nearest_certbot_ancestor_is_found_through_the_shell(tmp_path):
    proc = fake_proc(tmp_path, {1: (0, ["/sbin/init"]), 40: (1, ["/usr/bin/python3", "/usr/bin/certbot", "renew",
                                                                    "--dry-r", "--run-deploy-hooks"]),
                                41: (40, ["/bin/sh", "-c", "/opt/hooks/certbot-dane-deploy"])})
    assert hooks.certbot_command_line(41, proc) == ["renew", "--dry-r", "--run-deploy-hooks"]


def test_certbot_as_pid_1_of_a_container_is_found(tmp_path):
    proc = fake_proc(tmp_path, {1: (0, ["certbot", "renew", "--dry-run"]), 7: (1, ["/bin/sh", "-c", "hook"])})
    assert hooks.certbot_command_line(7, proc) == ["renew", "--dry-run"]


def test_no_certbot_ancestor_means_no_command_line(tmp_path):
    proc = fake_proc(tmp_path, {1: (0, ["/sbin/init"]), 9: (1, ["bash"])})
    assert hooks.certbot_command_line(9, proc) is None


def test_an_unreadable_ancestor_before_certbot_is_an_error_not_a_guess(tmp_path):
    proc = fake_proc(tmp_path, {1: (0, ["/sbin/init"]), 9: (1, ["bash"])})
    (proc / "1" / "cmdline").unlink()
    with pytest.raises(OSError):
        hooks.certbot_command_line(9, proc)


def test_deploy_hook_that_cannot_tell_stages_nothing_and_says_so_in_one_line(sandbox, tmp_path, monkeypatch,
                                                                              caplog):
    name = "doubt.example.org"
    s = Scenario(sandbox, tmp_path, name, [f"_25._tcp.{name}"], way="hook")

    def unreadable(*_args: object) -> list[str]:
        raise PermissionError(13, "Permission denied", "/proc/1/cmdline")

    monkeypatch.setattr(hooks, "certbot_command_line", unreadable)
    with caplog.at_level(logging.INFO, logger="certbot_dane"):
        hooks.deploy({"RENEWED_LINEAGE": str(tmp_path / "letsencrypt" / "live" / name),
                      "CERTBOT_DANE_CONFIG": str(s.config)})
    assert [r.getMessage() for r in caplog.records] == [
        f"cannot read /proc/1/cmdline (Permission denied) to tell a certbot dry run from a renewal: nothing staged "
        f"or published for {name}; `certbot-dane deploy` (the timer) adopts a renewed certificate from live/"]
    assert not (tmp_path / "state" / "lineages").exists()


def test_abbreviated_dry_run_and_reconfigure_run_the_deploy_hook_but_change_nothing(sandbox, tmp_path):
    name = "dryabbrev.example.org"
    tlsa = f"_25._tcp.{name}"
    s = Scenario(sandbox, tmp_path, name, [tlsa], way="hook")
    # issued without the hook: certbot-dane has not seen this certificate, so a hook that took
    # a dry run for a renewal would deploy it (no RRset yet), reload and publish
    done = s.certbot("certonly", "-a", "dane", "--dane-config", str(s.config), "--cert-name", name, "-d", name)
    assert done.returncode == 0, done.stderr
    disk = snapshot(tmp_path / "state") | snapshot(tmp_path / "live")
    for command in (["renew", "--dry-ru"], ["reconfigure"]):
        done = s.certbot(*command, "--cert-name", name, "--run-deploy-hooks", "--deploy-hook", str(HOOK))
        assert done.returncode == 0, done.stderr
        assert f"(a dry run): nothing staged or published for {name}" in done.stdout + done.stderr
        assert s.tlsa_on(tlsa) == set()
        assert snapshot(tmp_path / "state") | snapshot(tmp_path / "live") == disk
        assert not s.ran.exists(), "no reload"
