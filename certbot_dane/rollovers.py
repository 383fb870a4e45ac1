"""Rollover history as values: stage/deploy/retire events, and the windows they make; no I/O.

The applier reports every step in one line (`deploy.Rollout.say`); `from_line` picks the steps of a
rollover out of those lines, `history` keeps them, `windows` turns a lineage's events back into the
rollovers that were in progress, which TLSRPT failures are lined up with.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

GRACE = 3600.0
"""Seconds a rollover still counts as in progress after its last step: senders' caches, the last sessions."""

KINDS = ("stage", "forced", "deploy", "retire")

_LINES = (  # what deploy.Rollout.say is told at each step (plan.py, deploy.py)
    ("stage", re.compile(r"staged certificate ([0-9a-f]{8,64}) in ")),
    ("forced", re.compile(r"EMERGENCY deploy before the gate")),
    ("deploy", re.compile(r"deploy certificate ([0-9a-f]{8,64})\b")),
    ("retire", re.compile(r"retire (\S+ TLSA \S+)")),
)


@dataclass(frozen=True)
class Event:
    """One step of a rollover: when, which lineage (and the hosts it serves then), what, of which certificate."""

    at: float
    lineage: str
    kind: str
    hosts: tuple[str, ...] = ()
    detail: str = ""  # the certificate's fingerprint (stage, deploy) or the record retired

    def to_json(self) -> dict[str, Any]:
        """One line of the history file."""
        return {"at": self.at, "lineage": self.lineage, "event": self.kind, "hosts": list(self.hosts),
                "detail": self.detail}

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> Event:
        """Read one line back; ValueError when it is not an event (a line torn by a crash)."""
        at, lineage, kind = value.get("at"), value.get("lineage"), value.get("event")
        hosts, detail = value.get("hosts", []), value.get("detail", "")
        if (isinstance(at, bool) or not isinstance(at, int | float) or not isinstance(lineage, str)
                or kind not in KINDS or not isinstance(hosts, list) or not all(isinstance(h, str) for h in hosts)
                or not isinstance(detail, str)):
            raise ValueError(f"not a rollover event: {str(value)[:120]}")
        return cls(float(at), lineage, kind, tuple(hosts), detail)


def from_line(at: float, lineage: str, text: str, hosts: Iterable[str] = ()) -> Event | None:
    """The event a line of the applier's report records, if it is a rollover step."""
    for kind, pattern in _LINES:
        found = pattern.match(text)
        if found:
            return Event(at, lineage, kind, tuple(hosts), found.group(1) if found.groups() else "")
    return None


@dataclass(frozen=True)
class Window:
    """One rollover of one lineage: staged, deployed (maybe forced before the gate), its old records retired.

    It is in progress from its first step to `GRACE` after its last, and open-ended while the staged
    certificate still waits for its gate (`end` None).
    """

    lineage: str
    hosts: tuple[str, ...]
    certificate: str
    staged: float | None = None
    deployed: float | None = None
    retired: float | None = None
    forced: bool = False
    waiting: bool = False  # the lineage's newest rollover, staged and not deployed yet

    @property
    def start(self) -> float:
        """Its first step."""
        return min(t for t in (self.staged, self.deployed, self.retired) if t is not None)

    @property
    def end(self) -> float | None:
        """When it stops counting as in progress (None: still in progress)."""
        if self.waiting:
            return None
        return max(t for t in (self.staged, self.deployed, self.retired) if t is not None) + GRACE

    def overlaps(self, start: float, end: float) -> bool:
        """Whether a period [start, end] (a report's date-range) shares any moment with this rollover."""
        return start <= (self.end if self.end is not None else end) and end >= self.start

    def serves(self, host: str) -> bool:
        """Whether this lineage's certificate is the one `host` presents."""
        return host.lower().rstrip(".") in self.hosts


def windows(events: Iterable[Event]) -> tuple[Window, ...]:
    """The rollovers a history holds, oldest first: each stage starts one, a deploy and retires complete it.

    A deploy with no stage before it starts one too (state from before the history was kept); a retire
    with no deploy before it in its rollover (records of changed params) is not a rollover step.
    """
    current: dict[str, Window] = {}
    done: list[Window] = []
    for event in sorted(events, key=lambda e: (e.at, KINDS.index(e.kind))):  # one moment: in step order
        open_ = current.get(event.lineage)
        if event.kind == "stage" or (event.kind in ("forced", "deploy") and (open_ is None or open_.deployed)):
            if open_ is not None:
                done.append(open_)
            open_ = current[event.lineage] = Window(event.lineage, event.hosts, event.detail)
        if open_ is None:
            continue
        if event.kind == "stage":
            open_ = replace(open_, staged=event.at)
        elif event.kind == "forced":
            open_ = replace(open_, forced=True)
        elif event.kind == "deploy":
            open_ = replace(open_, deployed=event.at, certificate=event.detail or open_.certificate)
        elif open_.deployed is not None:  # retire
            open_ = replace(open_, retired=event.at)
        current[event.lineage] = open_
    done += [replace(w, waiting=w.deployed is None) for w in current.values()]
    return tuple(sorted(done, key=lambda w: (w.start, w.lineage)))
