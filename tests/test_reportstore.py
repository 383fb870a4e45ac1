"""The report store: one SQLite file; idempotent, one transaction per import, never loses what it holds."""

from __future__ import annotations

import grp
import os
import sqlite3
import stat
from pathlib import Path

import pytest

from certbot_dane import reportstore, tlsrpt
from certbot_dane.errors import StateError

DATA = Path(__file__).parent / "data" / "tlsrpt"
TEXTS = {name: (DATA / f"{name}.json").read_text() for name in ("microsoft", "google", "rfc8460")}
REPORTS = {name: tlsrpt.parse(text) for name, text in TEXTS.items()}


def fill(path: Path, *names: str) -> list[bool]:
    with reportstore.open_store(path) as store:
        assert store is not None
        return [store.add(REPORTS[n], TEXTS[n], f"{n}.json", 1.0) for n in names]


def test_a_report_is_stored_once_and_read_back_exactly(tmp_path: Path) -> None:
    db = tmp_path / "state" / "tlsrpt.sqlite3"
    assert fill(db, "microsoft", "google", "microsoft") == [True, True, False]
    assert fill(db, "google") == [False], "known by organisation and report-id"
    with reportstore.open_store(db, write=False) as store:
        assert store is not None
        assert store.count() == 2
        assert store.load(0) == [REPORTS["google"], REPORTS["microsoft"]], "oldest first, then by organisation"
    assert stat.S_IMODE(db.stat().st_mode) == 0o600 and stat.S_IMODE(db.parent.stat().st_mode) == 0o700


def test_reports_are_selected_by_period_and_pruned_by_age(tmp_path: Path) -> None:
    db = tmp_path / "tlsrpt.sqlite3"
    fill(db, "rfc8460", "microsoft")
    ms = REPORTS["microsoft"]
    with reportstore.open_store(db, write=False) as store:
        assert store is not None
        assert store.load(ms.start_datetime) == [ms]
        assert store.load(0, until=REPORTS["rfc8460"].end_datetime) == [REPORTS["rfc8460"]]
    with reportstore.open_store(db) as store:
        assert store is not None and store.prune(ms.start_datetime) == 1
    with reportstore.open_store(db, write=False) as store:
        assert store is not None and store.load(0) == [ms]


def test_an_import_that_fails_half_way_stores_none_of_it_and_keeps_the_rest(tmp_path: Path) -> None:
    db = tmp_path / "tlsrpt.sqlite3"
    fill(db, "microsoft")
    with pytest.raises(RuntimeError), reportstore.open_store(db) as store:
        assert store is not None
        store.add(REPORTS["google"], TEXTS["google"], "g", 1.0)
        raise RuntimeError("killed half way")
    with reportstore.open_store(db, write=False) as store:
        assert store is not None and [r.key for r in store.load(0)] == [REPORTS["microsoft"].key]


def test_no_store_yet_reads_as_none_and_is_not_created_by_reading(tmp_path: Path) -> None:
    with reportstore.open_store(tmp_path / "none.sqlite3", write=False) as store:
        assert store is None
    assert not (tmp_path / "none.sqlite3").exists()


@pytest.mark.parametrize("content", [b"this is not a database at all" * 100, b""])
def test_a_file_that_is_not_a_report_store_is_refused_and_left_alone(tmp_path: Path, content: bytes) -> None:
    db = tmp_path / "tlsrpt.sqlite3"
    if content:
        db.write_bytes(content)
    else:
        sqlite3.connect(db).execute("CREATE TABLE other (x)").connection.commit()
    before = db.read_bytes()
    for write in (True, False):
        with pytest.raises(StateError, match="not a certbot-dane report store") as info:
            with reportstore.open_store(db, write=write):
                pass
        assert str(db) in str(info.value) and "move it away" in str(info.value)
    assert db.read_bytes() == before


def test_a_store_that_cannot_be_opened_is_a_state_error(tmp_path: Path) -> None:
    (tmp_path / "tlsrpt.sqlite3").mkdir()
    with pytest.raises(StateError, match="cannot open the report store"):
        with reportstore.open_store(tmp_path / "tlsrpt.sqlite3"):
            pass


def test_a_stored_report_this_version_cannot_read_is_kept_and_skipped(tmp_path: Path,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    db = tmp_path / "tlsrpt.sqlite3"
    fill(db, "microsoft", "google")
    with sqlite3.connect(db) as raw:
        raw.execute("UPDATE reports SET json = '{}' WHERE organization = 'Google Inc.'")
    with reportstore.open_store(db, write=False) as store:
        assert store is not None
        assert store.load(0) == [REPORTS["microsoft"]] and store.count() == 2
    assert "unreadable" in caplog.text


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a file to another group needs root")
def test_with_a_monitoring_group_the_store_is_group_readable(tmp_path: Path) -> None:
    gid = grp.getgrnam("nogroup").gr_gid
    db = tmp_path / "state" / "tlsrpt.sqlite3"
    with reportstore.open_store(db, group=gid):
        pass
    info = db.stat()
    assert (stat.S_IMODE(info.st_mode), info.st_gid) == (0o640, gid)
