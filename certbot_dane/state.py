"""The state directory: atomic JSON files and the lock that keeps two runs apart."""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import json
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

from certbot_dane.errors import LockBusy, StateError
from certbot_dane.rollover import LineageState, Published, Staged, Version

LOCK_NAME = "lock"
STAGING = "staging"  # certstore's staging area: staged certificate files (status reads cert.pem, fullchain.pem)
SHARED_DIR_MODE, SHARED_FILE_MODE = 0o750, 0o640  # with a monitoring group (config: monitor_group)
MONITOR_HINT = ("; for a monitoring user, set monitor_group = \"ITS GROUP\" in the configuration: the next deploy "
                "run lets that group read the state (README: Running status as the monitoring user)")
V = TypeVar("V", bound=Version)


def ensure_dir(path: Path, mode: int = 0o700, group: int | None = None) -> Path:
    """Create a private directory (and parents) if missing; StateError if impossible.

    With `group` (the monitoring group), the directory, new or not, belongs to it with mode 0750.
    """
    try:
        path.mkdir(mode=mode, parents=True, exist_ok=True)
        if group is not None:
            grant(path, group, SHARED_DIR_MODE)
    except OSError as err:
        raise StateError(f"cannot create directory {path}: {err.strerror}") from err
    return path


def grant(path: Path, group: int, mode: int) -> None:
    """Give `path` this group and mode, touching it only when it differs (OSError as it comes)."""
    info = os.stat(path)
    if info.st_gid != group:
        os.chown(path, -1, group)
    if stat.S_IMODE(info.st_mode) != mode:
        os.chmod(path, mode)


def share(state_dir: Path, group: int) -> None:
    """Let the monitoring group read what `status` reads: the state directory, lineages/ and staging/ (0750),
    each lineage's state and the instance id (0640). Made for an installation that set `monitor_group` later.

    Never the lock: flock(2) needs only a descriptor open for reading, so whoever can read the lock
    file can hold it and stall every run. Nor the hooks' challenge bookkeeping, which status does not read.
    """
    try:
        for directory in (state_dir, state_dir / "lineages", state_dir / STAGING):
            if directory.is_dir():
                grant(directory, group, SHARED_DIR_MODE)
        for path in (state_dir / INSTANCE_FILE, *sorted((state_dir / "lineages").glob("*.json"))):
            if path.is_file():
                grant(path, group, SHARED_FILE_MODE)
    except OSError as err:
        raise StateError(f"cannot let group {group} read {err.filename}: {err.strerror}") from err


def atomic_write(path: Path, data: bytes, mode: int = 0o600, group: int | None = None) -> None:
    """Write `data` to `path` so that readers see the old or the new content, never a mix.

    Temp file in the same directory, fsync, rename, fsync of the directory. With `group` (the
    monitoring group), the file and its directory belong to it and it may read both.
    """
    ensure_dir(path.parent, group=group)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            if group is not None:
                os.fchown(handle.fileno(), -1, group)
                mode |= 0o040
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


def write_json(path: Path, value: Any, group: int | None = None) -> None:
    """Atomically write a JSON document (mode 0600; 0640 and that group's with a monitoring `group`)."""
    atomic_write(path, (json.dumps(value, indent=2, sort_keys=True) + "\n").encode(), group=group)


def read_json(path: Path, default: Any = None) -> Any:
    """Read a JSON document; `default` if the file does not exist; StateError if unreadable/corrupt."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return default
    except PermissionError as err:
        raise StateError(f"cannot read state file {path}: {err.strerror}{MONITOR_HINT}") from err
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
def locked(state_dir: Path, wait: bool = True, clean: bool = True, group: int | None = None) -> Iterator[None]:
    """Hold the state directory's lock (flock) for the duration; LockBusy if `wait` is False and it is taken.

    With `clean`, first delete the temp files of writes killed half-way (a dry run leaves them).
    With a monitoring `group`, then let it read what status reads (`share`); the lock stays 0600.
    """
    ensure_dir(state_dir, group=group)
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
        if group is not None:
            share(state_dir, group)
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


def save_lineage(state_dir: Path, state: LineageState, group: int | None = None) -> None:
    """Atomically write a lineage's state (readable by the monitoring `group`, if any)."""
    data = dataclasses.asdict(state)
    for key in ("deployed", "previous", "staged"):
        if data[key] is not None:
            data[key]["records"] = list(data[key]["records"])
            if "names" in data[key]:
                data[key]["names"] = list(data[key]["names"])
    write_json(lineage_path(state_dir, state.lineage), data, group)


INSTANCE_FILE = "instance"


def instance_id(state_dir: Path, create: bool = True, group: int | None = None) -> str:
    """This installation's name in ownership claims: random, made once, kept in the state directory.

    Two hosts (or two state directories) are two instances. With `create` False (dry runs) a missing
    id is not written: "new-instance" stands in for it.
    """
    path = state_dir / INSTANCE_FILE
    try:
        found = path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        found = ""
    except PermissionError as err:
        raise StateError(f"cannot read {path}: {err.strerror}{MONITOR_HINT}") from err
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
    atomic_write(path, (made + "\n").encode(), group=group)
    return made
