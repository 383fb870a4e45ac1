"""The state directory: lineage states read back exactly, bad files refused in one line, leftovers cleaned."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from certbot_dane import state
from certbot_dane.errors import StateError
from certbot_dane.rollover import LineageState, Published, Staged, Version

FULL = LineageState(
    "mx", deployed=Version("aa" * 32, ("3 0 1 " + "aa" * 32,), aged=False),
    staged=Staged("bb" * 32, ("3 0 1 " + "bb" * 32,), 5.0, 6.0, 300, None, ("_25._tcp.mx.example.org.",),
                  "boot-1", 12.5),
    published=(Published("_25._tcp.mx.example.org.", "3 0 1 " + "aa" * 32, 1.0, True),),
    ttl_seen=300, ttl_seen_at=2.0, error="x", clock_high=7.0)


def test_a_state_is_read_back_exactly(tmp_path: Path) -> None:
    state.save_lineage(tmp_path, FULL)
    assert state.load_lineage(tmp_path, "mx") == FULL


def test_a_state_written_before_the_new_fields_still_loads(tmp_path: Path) -> None:
    path = state.lineage_path(tmp_path, "mx")
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"lineage": "mx", "deployed": {"fingerprint": "aa", "records": ["3 0 1 aa"]},
                                "published": [{"name": "n.", "value": "3 0 1 aa", "at": 1}]}))
    st = state.load_lineage(tmp_path, "mx")
    assert st.deployed == Version("aa", ("3 0 1 aa",))
    assert st.published == (Published("n.", "3 0 1 aa", 1.0, None),), "published before claims existed"


@pytest.mark.parametrize("content, why", [
    (b"\xff\xfe{}", "is not UTF-8"),
    (b"[1, 2]", "not a certbot-dane lineage state"),
    (b'{"lineage": "mx", "deployed": {"fingerprint": 5, "records": []}}', "not a certbot-dane lineage state"),
    (b'{"lineage": "mx", "deployed": {"fingerprint": "aa", "records": "3 0 1 aa"}}', "not a certbot-dane"),
    (b'{"lineage": "mx", "published": [{"name": "n.", "value": 1, "at": 1}]}', "not a certbot-dane"),
    (b'{"lineage": "mx", "unverified": "yes"}', "not a certbot-dane lineage state"),
    (b'{"lineage": "mx", "staged": {"fingerprint": "bb", "records": [], "colour": 1}}', "unknown fields"),
    (b"{", "is corrupt"),
])
def test_a_bad_state_file_is_refused_in_one_line_and_left_as_it_is(tmp_path: Path, content: bytes, why: str) -> None:
    path = state.lineage_path(tmp_path, "mx")
    path.parent.mkdir(parents=True)
    path.write_bytes(content)
    with pytest.raises(StateError, match=why) as info:
        state.load_lineage(tmp_path, "mx")
    assert str(path) in str(info.value) and "\n" not in str(info.value)
    assert path.read_bytes() == content


def test_the_lock_removes_what_killed_writes_left_behind(tmp_path: Path) -> None:
    state.save_lineage(tmp_path, FULL)
    leftovers = [tmp_path / ".instance.abc.tmp", tmp_path / "lineages" / ".mx.json.x1.tmp"]
    for leftover in leftovers:
        leftover.write_text("half")
    with state.locked(tmp_path):
        pass
    assert not any(p.exists() for p in leftovers)
    assert state.load_lineage(tmp_path, "mx") == FULL


def test_the_instance_id_is_made_once_and_never_by_a_dry_run(tmp_path: Path) -> None:
    assert state.instance_id(tmp_path, create=False) == "new-instance"
    assert not (tmp_path / state.INSTANCE_FILE).exists()
    made = state.instance_id(tmp_path)
    assert made.isalnum() and len(made) == 16 and state.instance_id(tmp_path) == made
    assert oct((tmp_path / state.INSTANCE_FILE).stat().st_mode & 0o777) == "0o600"


def test_a_mangled_instance_id_is_refused(tmp_path: Path) -> None:
    (tmp_path / state.INSTANCE_FILE).write_text("a b\n")
    with pytest.raises(StateError, match="not an instance id"):
        state.instance_id(tmp_path)


def _mode(path: Path) -> tuple[int, int]:
    info = path.stat()
    return info.st_mode & 0o7777, info.st_gid


@pytest.fixture
def monitor_gid() -> int:
    """A group for the monitoring user: nogroup as root (any group can be given), else our own."""
    import grp
    import os

    return grp.getgrnam("nogroup").gr_gid if os.geteuid() == 0 else os.getgid()


def test_with_a_monitoring_group_what_status_reads_is_group_readable_and_the_lock_is_not(
        tmp_path: Path, monitor_gid: int) -> None:
    state_dir = tmp_path / "state"
    with state.locked(state_dir, group=monitor_gid):
        state.save_lineage(state_dir, FULL, monitor_gid)
        state.instance_id(state_dir, group=monitor_gid)
    assert _mode(state_dir) == (0o750, monitor_gid)
    assert _mode(state_dir / "lineages") == (0o750, monitor_gid)
    assert _mode(state.lineage_path(state_dir, "mx")) == (0o640, monitor_gid)
    assert _mode(state_dir / state.INSTANCE_FILE) == (0o640, monitor_gid)
    assert _mode(state_dir / state.LOCK_NAME)[0] == 0o600  # a readable lock could be held by the monitoring user


def test_without_a_group_the_modes_stay_private(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    with state.locked(state_dir):
        state.save_lineage(state_dir, FULL)
        state.instance_id(state_dir)
    assert _mode(state_dir)[0] == 0o700 and _mode(state_dir / "lineages")[0] == 0o700
    assert _mode(state.lineage_path(state_dir, "mx"))[0] == 0o600 and _mode(state_dir / "instance")[0] == 0o600


def test_a_group_set_later_is_granted_on_the_next_lock(tmp_path: Path, monitor_gid: int) -> None:
    state_dir = tmp_path / "state"
    with state.locked(state_dir):
        state.save_lineage(state_dir, FULL)
        state.instance_id(state_dir)
    (state_dir / "staging").mkdir(mode=0o700)
    (state_dir / "manual-challenges.json").write_text("{}")
    (state_dir / "manual-challenges.json").chmod(0o600)
    with state.locked(state_dir, group=monitor_gid):
        pass
    for directory in (state_dir, state_dir / "lineages", state_dir / "staging"):
        assert _mode(directory) == (0o750, monitor_gid)
    for path in (state.lineage_path(state_dir, "mx"), state_dir / "instance"):
        assert _mode(path) == (0o640, monitor_gid)
    assert _mode(state_dir / "manual-challenges.json")[0] == 0o600  # status does not read the hooks' bookkeeping
    assert _mode(state_dir / state.LOCK_NAME)[0] == 0o600
