"""The rollover history: the applier's stage/deploy/retire steps appended one line each, read back in order."""

from __future__ import annotations

import grp
import json
import os
import stat
from pathlib import Path

import pytest

from certbot_dane import config, history
from certbot_dane import deploy as rollout_module
from certbot_dane.errors import StateError
from certbot_dane.rollovers import Event

SECRET = "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0MTI="


def settings(tmp_path: Path, extra: str = "") -> config.Config:
    path = tmp_path / "certbot-dane.toml"
    path.write_text(f'state_dir = "{tmp_path / "state"}"\ndeploy_dir = "{tmp_path / "live"}"\n{extra}\n'
                    f'[dns]\nserver = "127.0.0.1"\nkey_name = "k"\nkey_secret = "{SECRET}"\n'
                    '[lineage."mx"]\ntlsa = ["_25._tcp.mx.example.org", "_465._tcp.mx.example.org"]\n'
                    'params = ["3 1 1"]\n')
    path.chmod(0o600)
    return config.load(path)


def test_the_applier_records_each_rollover_step_it_reports_and_nothing_else(tmp_path: Path) -> None:
    cfg = settings(tmp_path)
    run = rollout_module.Rollout.from_config(cfg)
    run.now = lambda: 1000.0
    run.say("mx", "staged certificate 0123456789abcdef in /somewhere")
    run.say("mx", "publish _25._tcp.mx.example.org. TLSA 3 1 1 0123..")
    run.say("mx", "not deploying yet: waiting for TTLs")
    run.say("mx", "deploy certificate 0123456789abcdef to /live")
    run.say("mx", "retire _25._tcp.mx.example.org. TLSA 3 1 1 89ab..")
    assert history.load(cfg.state_dir) == (
        Event(1000.0, "mx", "stage", ("mx.example.org",), "0123456789abcdef"),
        Event(1000.0, "mx", "deploy", ("mx.example.org",), "0123456789abcdef"),
        Event(1000.0, "mx", "retire", ("mx.example.org",), "_25._tcp.mx.example.org. TLSA 3"))
    lines = history.path(cfg.state_dir).read_text().splitlines()
    assert len(lines) == 3 and all(json.loads(line)["lineage"] == "mx" for line in lines), "one JSON object a line"
    assert stat.S_IMODE(history.path(cfg.state_dir).stat().st_mode) == 0o600


def test_a_dry_run_records_nothing(tmp_path: Path) -> None:
    cfg = settings(tmp_path)
    rollout_module.Rollout.from_config(cfg, dry_run=True).say("mx", "deploy certificate 0123456789abcdef to /l")
    assert not history.path(cfg.state_dir).exists() and history.load(cfg.state_dir) == ()


def test_a_torn_or_foreign_line_is_skipped_and_the_rest_read(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    history.append(state_dir, Event(2.0, "mx", "deploy", (), "bb"))
    with history.path(state_dir).open("ab") as log:
        log.write(b'[1, 2]\n{"at": 3, "lineage": "mx", "event": "stage"}\n\xff\xfe\n{"at": 4, "lineage": "mx", "eve')
    history.append(state_dir, Event(1.0, "mx", "stage", (), "bb"))  # after the torn line, on a line of its own
    found = history.load(state_dir)
    assert found == (Event(1.0, "mx", "stage", (), "bb"), Event(2.0, "mx", "deploy", (), "bb"),
                     Event(3.0, "mx", "stage"))
    assert [e.at for e in found] == sorted(e.at for e in found)


def test_a_history_that_cannot_be_written_never_stops_the_rollover(tmp_path: Path,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    cfg = settings(tmp_path)
    history.path(cfg.state_dir).mkdir(parents=True)  # a directory where the file should be: every append fails
    run = rollout_module.Rollout.from_config(cfg)
    run.say("mx", "deploy certificate 0123456789abcdef to /live")
    assert run.log == ["mx: deploy certificate 0123456789abcdef to /live"]
    assert "cannot record deploy in the rollover history" in caplog.text


def test_an_unreadable_history_is_a_state_error_naming_it(tmp_path: Path) -> None:
    history.path(tmp_path).mkdir(parents=True)
    with pytest.raises(StateError, match="cannot read the rollover history"):
        history.load(tmp_path)


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a file to another group needs root")
def test_with_a_monitoring_group_the_history_is_group_readable(tmp_path: Path) -> None:
    gid = grp.getgrnam("nogroup").gr_gid
    history.append(tmp_path / "state", Event(1.0, "mx", "stage", (), "aa"), gid)
    info = history.path(tmp_path / "state").stat()
    assert (stat.S_IMODE(info.st_mode), info.st_gid) == (0o640, gid)
