"""DNS records and per-zone change sets as plain values (no dnspython, no I/O)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field


def absolute(name: str) -> str:
    """Canonical owner name: lower case with the trailing dot."""
    return name.lower().rstrip(".") + "."


@dataclass(frozen=True, order=True)
class Record:
    """One resource record: owner name, type and rdata in canonical presentation format.

    `ttl` is carried for additions but is not part of a record's identity.
    """

    name: str
    rdtype: str
    value: str
    ttl: int = field(default=0, compare=False)

    @classmethod
    def txt(cls, name: str, value: str, ttl: int = 0) -> Record:
        """A TXT record holding one string (ACME validations need no escaping)."""
        return cls(absolute(name), "TXT", f'"{value}"', ttl)

    def __str__(self) -> str:
        return f"{self.name} {self.rdtype} {self.value}"


@dataclass(frozen=True)
class ZoneUpdate:
    """The records to add and remove in one zone: exactly one RFC 2136 UPDATE message."""

    zone: str
    add: tuple[Record, ...] = ()
    remove: tuple[Record, ...] = ()


def group_by_zone(zone_of: dict[str, str], add: Iterable[Record] = (),
                  remove: Iterable[Record] = ()) -> list[ZoneUpdate]:
    """Split additions and removals into one ZoneUpdate per zone, zones in sorted order."""
    adds: dict[str, list[Record]] = defaultdict(list)
    removes: dict[str, list[Record]] = defaultdict(list)
    for record in add:
        adds[zone_of[record.name]].append(record)
    for record in remove:
        removes[zone_of[record.name]].append(record)
    return [
        ZoneUpdate(zone, tuple(sorted(set(adds[zone]))), tuple(sorted(set(removes[zone]))))
        for zone in sorted(set(adds) | set(removes))
    ]


@dataclass(frozen=True)
class Answer:
    """What one authoritative server answered for one name and type."""

    rcode: str
    values: frozenset[str]
    ttl: int | None = None

    def describe(self) -> str:
        """Short human form: 'NXDOMAIN', 'no records', or the values."""
        if self.rcode != "NOERROR":
            return self.rcode
        if not self.values:
            return "no records"
        return ", ".join(sorted(self.values))
