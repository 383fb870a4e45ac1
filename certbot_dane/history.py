"""The rollover history: an append-only log of stage/deploy/retire events under the state directory.

One JSON object per line in `<state_dir>/history.jsonl`, appended with one write(2) on an O_APPEND
descriptor and fsync'd, so a crash loses at most the line being written; a torn last line is skipped
when reading. Written by the applier (`deploy.Rollout.say`), read by `reports` and `status`.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from certbot_dane import rollovers, state
from certbot_dane.config import Config
from certbot_dane.errors import StateError
from certbot_dane.rollovers import Event

logger = logging.getLogger(__name__)

FILE = "history.jsonl"


def path(state_dir: Path) -> Path:
    """Where the history of this state directory is kept."""
    return state_dir / FILE


def record_step(config: Config, lineage: str, text: str, now: float) -> None:
    """Append the event a line of the applier's report records, if it is a rollover step.

    Never raises: a history that cannot be written is logged (the rollover itself must go on).
    """
    settings = config.lineages.get(lineage)
    event = rollovers.from_line(now, lineage, text, settings.hosts if settings else ())
    if event is None:
        return
    try:
        append(config.state_dir, event, config.monitor_group)
    except OSError as err:
        logger.warning("%s: cannot record %s in the rollover history: %s", lineage, event.kind, err)


def append(state_dir: Path, event: Event, group: int | None = None) -> None:
    """Append one event: one write of one line (after a line a crash left torn), then fsync; OSError as it comes."""
    target = path(state_dir)
    state.ensure_dir(state_dir, group=group)
    line = (json.dumps(event.to_json(), sort_keys=True) + "\n").encode()
    fd = os.open(target, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC,
                 state.SHARED_FILE_MODE if group is not None else 0o600)
    try:
        if group is not None:
            state.grant(target, group, state.SHARED_FILE_MODE)
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":  # a line torn by a crash: end it, do not extend it
            line = b"\n" + line
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)


def load(state_dir: Path) -> tuple[Event, ...]:
    """Every event recorded, oldest first; a line that is not an event (torn by a crash) is skipped.

    StateError when the file exists but cannot be read.
    """
    try:
        data = path(state_dir).read_bytes()
    except FileNotFoundError:
        return ()
    except OSError as err:
        raise StateError(f"{path(state_dir)}: cannot read the rollover history: {err.strerror}") from err
    events = []
    for number, line in enumerate(data.splitlines(), 1):
        try:
            events.append(Event.from_json(json.loads(line)))
        except (ValueError, AttributeError) as err:
            logger.info("%s:%d: skipped: %s", path(state_dir), number, err)
    return tuple(sorted(events, key=lambda e: e.at))
