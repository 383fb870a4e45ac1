"""The state directory: atomic JSON files and the lock that keeps two runs apart."""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

from certbot_dane.errors import LockBusy, StateError
from certbot_dane.rollover import LineageState, Published, Staged, Version

LOCK_NAME = "lock"
V = TypeVar("V", bound=Version)


def ensure_dir(path: Path, mode: int = 0o700) -> Path:
    """Create a private directory (and parents) if missing; StateError if impossible."""
    try:
        path.mkdir(mode=mode, parents=True, exist_ok=True)
    except OSError as err:
        raise StateError(f"cannot create directory {path}: {err.strerror}") from err
    return path


def atomic_write(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Write `data` to `path` so that readers see the old or the new content, never a mix.

    Temp file in the same directory, fsync, rename, fsync of the directory.
    """
    ensure_dir(path.parent)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), mode)
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError as err:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise StateError(f"cannot write {path}: {err.strerror}") from err


def write_json(path: Path, value: Any) -> None:
    """Atomically write a JSON document (mode 0600)."""
    atomic_write(path, (json.dumps(value, indent=2, sort_keys=True) + "\n").encode())


def read_json(path: Path, default: Any = None) -> Any:
    """Read a JSON document; `default` if the file does not exist; StateError if unreadable/corrupt."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return default
    except OSError as err:
        raise StateError(f"cannot read state file {path}: {err.strerror}") from err
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise StateError(f"state file {path} is corrupt ({err}); it was left as it is: "
                         "repair or remove it by hand") from err


@contextlib.contextmanager
def locked(state_dir: Path, wait: bool = True) -> Iterator[None]:
    """Hold the state directory's lock (flock) for the duration; LockBusy if `wait` is False and it is taken."""
    ensure_dir(state_dir)
    path = state_dir / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as err:
        raise StateError(f"cannot open lock file {path}: {err.strerror}") from err
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except OSError as err:
            if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise LockBusy(f"another certbot-dane run holds {path}; try again when it has finished") from err
            raise StateError(f"cannot lock {path}: {err.strerror}") from err
        yield
    finally:
        os.close(fd)


def lineage_path(state_dir: Path, lineage: str) -> Path:
    """Where one lineage's rollover state lives."""
    return state_dir / "lineages" / f"{lineage}.json"


def load_lineage(state_dir: Path, lineage: str) -> LineageState:
    """A lineage's state (empty when never seen); StateError when the file is corrupt."""
    path = lineage_path(state_dir, lineage)
    data = read_json(path)
    if data is None:
        return LineageState(lineage)
    try:
        return LineageState(
            lineage=data["lineage"],
            deployed=_version(Version, data.get("deployed")),
            previous=_version(Version, data.get("previous")),
            staged=_version(Staged, data.get("staged")),
            published=tuple(Published(**p) for p in data.get("published", [])),
            unverified=bool(data.get("unverified", False)),
            ttl_seen=int(data.get("ttl_seen", 0)),
            ttl_seen_at=float(data.get("ttl_seen_at", 0.0)),
            ttl_dropped=bool(data.get("ttl_dropped", False)),
            error=data.get("error"),
        )
    except (KeyError, TypeError) as err:
        raise StateError(f"state file {path} is not a certbot-dane lineage state ({err!r}); "
                         "it was left as it is: repair or remove it by hand") from err


def _version(cls: type[V], data: dict[str, Any] | None) -> V | None:
    return None if not data else cls(**{**data, "records": tuple(data["records"])})


def save_lineage(state_dir: Path, state: LineageState) -> None:
    """Atomically write a lineage's state."""
    data = dataclasses.asdict(state)
    for key in ("deployed", "previous", "staged"):
        if data[key] is not None:
            data[key]["records"] = list(data[key]["records"])
    write_json(lineage_path(state_dir, state.lineage), data)
