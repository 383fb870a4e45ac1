"""The TLSRPT report store: one SQLite database under the state directory (every sqlite3 call is here).

A report is kept as the JSON its sender wrote, keyed by (organisation, report-id): importing it again
changes nothing. Each import is one transaction, so a crash or a bad report never loses what is stored.
"""

from __future__ import annotations

import logging
import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from certbot_dane import state, tlsrpt
from certbot_dane.errors import ReportError, StateError
from certbot_dane.tlsrpt import Report

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1
BUSY_TIMEOUT = 30.0
"""Seconds to wait for another writer (the timer's import and a mail pipe's may meet)."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS reports (
    organization TEXT NOT NULL,
    report_id    TEXT NOT NULL,
    start        REAL NOT NULL,
    end          REAL NOT NULL,
    imported     REAL NOT NULL,
    source       TEXT NOT NULL,
    json         TEXT NOT NULL,
    PRIMARY KEY (organization, report_id)
);
CREATE INDEX IF NOT EXISTS reports_end ON reports (end);
"""


class ReportStore:
    """An open report database; use `open_store` (it commits or rolls back, and closes)."""

    def __init__(self, connection: sqlite3.Connection, path: Path) -> None:
        self._db = connection
        self.path = path

    def add(self, report: Report, text: str, source: str, now: float) -> bool:
        """Store a report (its JSON `text`) unless one with its key is stored; whether it was new."""
        try:
            cursor = self._db.execute(
                "INSERT OR IGNORE INTO reports (organization, report_id, start, end, imported, source, json) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (report.organization_name, report.report_id, report.start_datetime, report.end_datetime, now,
                 source, text))
        except sqlite3.Error as err:
            raise StateError(f"{self.path}: cannot store a report: {err}") from err
        return cursor.rowcount == 1

    def prune(self, before: float) -> int:
        """Delete the reports whose period ended before `before`; how many."""
        try:
            return self._db.execute("DELETE FROM reports WHERE end < ?", (before,)).rowcount
        except sqlite3.Error as err:
            raise StateError(f"{self.path}: cannot delete old reports: {err}") from err

    def load(self, since: float, until: float | None = None) -> list[Report]:
        """The reports whose period ends at or after `since` (and starts by `until`), oldest first.

        A stored report this version cannot read any more is left in place and logged.
        """
        query, args = "SELECT organization, report_id, json FROM reports WHERE end >= ?", [since]
        if until is not None:
            query, args = query + " AND start <= ?", [since, until]
        try:
            rows = self._db.execute(query + " ORDER BY start, organization, report_id", args).fetchall()
        except sqlite3.Error as err:
            raise StateError(f"{self.path}: cannot read reports: {err}") from err
        found = []
        for organization, report_id, text in rows:
            try:
                found.append(tlsrpt.parse(text))
            except ReportError as err:
                logger.warning("%s: stored report %s of %s unreadable: %s", self.path, report_id, organization, err)
        return found

    def count(self) -> int:
        """How many reports are stored."""
        try:
            return int(self._db.execute("SELECT count(*) FROM reports").fetchone()[0])
        except sqlite3.Error as err:
            raise StateError(f"{self.path}: cannot read reports: {err}") from err


@contextmanager
def open_store(path: Path, *, write: bool = True, group: int | None = None) -> Iterator[ReportStore | None]:
    """The database at `path`, in one transaction committed on success and rolled back on error.

    Reading (`write` False) opens it read-only and yields None when there is none yet. Writing creates
    it (0600; 0640 and the monitoring `group`'s with one). StateError when it cannot be opened or is
    not a report store.
    """
    if not write and _missing(path):
        yield None
        return
    try:
        if write:
            state.ensure_dir(path.parent, group=group)
            path.touch(mode=0o600, exist_ok=True)
            if group is not None:
                state.grant(path, group, state.SHARED_FILE_MODE)
        uri = f"file:{path}?mode={'rwc' if write else 'ro'}"
        connection = sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT, isolation_level=None)
    except (OSError, sqlite3.Error) as err:
        raise StateError(f"{path}: cannot open the report store: {err}") from err
    try:
        _prepare(connection, path, write)
        connection.execute("BEGIN IMMEDIATE" if write else "BEGIN")
        store = ReportStore(connection, path)
        try:
            yield store
        except BaseException:
            connection.execute("ROLLBACK")
            raise
        try:
            connection.execute("COMMIT")
        except sqlite3.Error as err:
            raise StateError(f"{path}: cannot store the reports: {err}") from err
    except sqlite3.Error as err:
        raise StateError(f"{path}: {err}") from err
    finally:
        connection.close()


def _missing(path: Path) -> bool:
    """No store yet (StateError when it cannot be told: a directory on the way we may not search)."""
    try:
        os.stat(path)
    except FileNotFoundError:
        return True
    except OSError as err:
        raise StateError(f"{path}: cannot open the report store: {err.strerror}") from err
    return False


def _prepare(connection: sqlite3.Connection, path: Path, write: bool) -> None:
    """Check (and, writing, create) the schema; StateError for a file that is some other database or none."""
    try:
        version = connection.execute("PRAGMA user_version").fetchone()[0]
        empty = version == 0 and connection.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] == 0
        if empty and write:
            # the default rollback journal, not WAL: a monitoring user with read access only can read it
            connection.executescript(_SCHEMA + f"PRAGMA user_version = {SCHEMA_VERSION};")
        elif version != SCHEMA_VERSION:
            raise StateError(f"{path}: not a certbot-dane report store (schema version {version}, expected "
                             f"{SCHEMA_VERSION}); move it away")
    except sqlite3.DatabaseError as err:
        raise StateError(f"{path}: not a certbot-dane report store: {err}; move it away") from err
