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
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return default
    except OSError as err:
        raise StateError(f"cannot read state file {path}: {err.strerror}") from err
    except UnicodeDecodeError as err:
        raise StateError(f"state file {path} is not UTF-8 ({err.reason} at byte {err.start}); it was left "
                         "as it is: repair or remove it by hand") from err
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise StateError(f"state file {path} is corrupt ({err}); it was left as it is: "
                         "repair or remove it by hand") from err


@contextlib.contextmanager
def locked(state_dir: Path, wait: bool = True, clean: bool = True) -> Iterator[None]:
    """Hold the state directory's lock (flock) for the duration; LockBusy if `wait` is False and it is taken.

    With `clean`, first delete the temp files of writes killed half-way (a dry run leaves them).
    """
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
        if clean:
            _remove_leftovers(state_dir)
        yield
    finally:
        os.close(fd)


def _remove_leftovers(state_dir: Path) -> None:
    """Delete the temp files of writes killed half-way (only lock holders write, so none is in progress)."""
    for directory in (state_dir, state_dir / "lineages"):
        for leftover in directory.glob(".*.tmp"):
            with contextlib.suppress(OSError):
                leftover.unlink()


def lineage_path(state_dir: Path, lineage: str) -> Path:
    """Where one lineage's rollover state lives."""
    return state_dir / "lineages" / f"{lineage}.json"


def load_lineage(state_dir: Path, lineage: str) -> LineageState:
    """A lineage's state (empty when never seen); StateError when the file is corrupt or mistyped."""
    path = lineage_path(state_dir, lineage)
    data = read_json(path)
    if data is None:
        return LineageState(lineage)
    try:
        if not isinstance(data, dict) or not isinstance(data.get("lineage"), str):
            raise TypeError("not a JSON object with a lineage name")
        return LineageState(
            lineage=data["lineage"],
            deployed=_version(Version, data.get("deployed")),
            previous=_version(Version, data.get("previous")),
            staged=_version(Staged, data.get("staged")),
            published=tuple(_published(p) for p in _list(data.get("published", []))),
            unverified=_typed(data.get("unverified", False), bool),
            ttl_seen=_typed(data.get("ttl_seen", 0), int),
            ttl_seen_at=float(_typed(data.get("ttl_seen_at", 0.0), (int, float))),
            ttl_dropped=_typed(data.get("ttl_dropped", False), bool),
            error=_typed(data.get("error"), (str, type(None))),
            clock_high=float(_typed(data.get("clock_high", 0.0), (int, float))),
            ttl_seen_boot=_typed(data.get("ttl_seen_boot", ""), str),
            ttl_seen_uptime=float(_typed(data.get("ttl_seen_uptime", 0.0), (int, float))),
        )
    except (KeyError, TypeError, ValueError) as err:
        raise StateError(f"state file {path} is not a certbot-dane lineage state ({err}); "
                         "it was left as it is: repair or remove it by hand") from err


def _typed(value: Any, kind: type | tuple[type, ...]) -> Any:
    if not isinstance(value, kind) or (isinstance(value, bool) and kind in (int, (int, float))):
        raise TypeError(f"{value!r} is not {kind}")
    return value


def _list(value: Any) -> list[Any]:
    if not isinstance(value, list):
        raise TypeError(f"{value!r} is not a list")
    return value


def _texts(value: Any) -> tuple[str, ...]:
    return tuple(_typed(v, str) for v in _list(value))


def _published(data: Any) -> Published:
    if not isinstance(data, dict):
        raise TypeError(f"published record {data!r} is not an object")
    return Published(_typed(data["name"], str), _typed(data["value"], str), float(_typed(data["at"], (int, float))),
                     _typed(data.get("claimed"), (bool, type(None))))  # absent: written before claims existed


def _version(cls: type[V], data: Any) -> V | None:
    if not data:
        return None
    if not isinstance(data, dict):
        raise TypeError(f"version {data!r} is not an object")
    fields = {f.name: f.type for f in dataclasses.fields(cls)}
    unknown = set(data) - set(fields)
    if unknown:
        raise TypeError(f"unknown fields {sorted(unknown)}")
    values = {**data, "fingerprint": _typed(data["fingerprint"], str), "records": _texts(data["records"])}
    if "names" in data:
        values["names"] = _texts(data["names"])
    for key in ("staged_at", "old_ttl"):
        if key in data:
            values[key] = _typed(data[key], (int, float))
    if data.get("served_at") is not None:
        values["served_at"] = float(_typed(data["served_at"], (int, float)))
    if "served_boot" in data:
        values["served_boot"] = _typed(data["served_boot"], str)
    if "served_uptime" in data:
        values["served_uptime"] = float(_typed(data["served_uptime"], (int, float)))
    if "aged" in data:
        values["aged"] = _typed(data["aged"], bool)
    if data.get("no_wait") is not None:
        values["no_wait"] = _typed(data["no_wait"], str)
    return cls(**values)


def save_lineage(state_dir: Path, state: LineageState) -> None:
    """Atomically write a lineage's state."""
    data = dataclasses.asdict(state)
    for key in ("deployed", "previous", "staged"):
        if data[key] is not None:
            data[key]["records"] = list(data[key]["records"])
            if "names" in data[key]:
                data[key]["names"] = list(data[key]["names"])
    write_json(lineage_path(state_dir, state.lineage), data)


INSTANCE_FILE = "instance"


def instance_id(state_dir: Path, create: bool = True) -> str:
    """This installation's name in ownership claims: random, made once, kept in the state directory.

    Two hosts (or two state directories) are two instances. With `create` False (dry runs) a missing
    id is not written: "new-instance" stands in for it.
    """
    path = state_dir / INSTANCE_FILE
    try:
        found = path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        found = ""
    except (OSError, UnicodeDecodeError) as err:
        raise StateError(f"cannot read {path}: {err}") from err
    if found:
        if not found.isalnum() or len(found) > 32:
            raise StateError(f"{path} holds {found[:40]!r}, not an instance id (letters and digits): "
                             "repair or remove it by hand")
        return found
    if not create:
        return "new-instance"
    made = os.urandom(8).hex()
    atomic_write(path, (made + "\n").encode())
    return made
