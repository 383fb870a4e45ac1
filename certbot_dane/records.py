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


@dataclass(frozen=True, order=True)
class Require:
    """An RFC 2136 prerequisite: the RRset at name/type is exactly `values`, or (values None) does not exist."""

    name: str
    rdtype: str
    values: frozenset[str] | None = None


@dataclass(frozen=True)
class ZoneUpdate:
    """The records to add and remove in one zone, under prerequisites: one RFC 2136 UPDATE message."""

    zone: str
    add: tuple[Record, ...] = ()
    remove: tuple[Record, ...] = ()
    require: tuple[Require, ...] = ()


def group_by_zone(zone_of: dict[str, str], add: Iterable[Record] = (), remove: Iterable[Record] = (),
                  require: Iterable[Require] = ()) -> list[ZoneUpdate]:
    """Split additions, removals and prerequisites into one ZoneUpdate per zone, zones in sorted order."""
    adds: dict[str, list[Record]] = defaultdict(list)
    removes: dict[str, list[Record]] = defaultdict(list)
    requires: dict[str, list[Require]] = defaultdict(list)
    for record in add:
        adds[zone_of[record.name]].append(record)
    for record in remove:
        removes[zone_of[record.name]].append(record)
    for prerequisite in require:
        requires[zone_of[prerequisite.name]].append(prerequisite)
    return [
        ZoneUpdate(zone, tuple(sorted(set(adds[zone]))), tuple(sorted(set(removes[zone]))),
                   tuple(sorted(set(requires[zone]))))
        for zone in sorted(set(adds) | set(removes))
    ]


#: Rcodes that say something definite about a name: anything else (SERVFAIL, REFUSED, ...) is "unknown".
DEFINITE_RCODES = frozenset({"NOERROR", "NXDOMAIN"})


@dataclass(frozen=True)
class Answer:
    """What one authoritative server answered for one name and type.

    `alias` is the CNAME target when the name is an alias (RFC 7671 §7: the RRset lives there);
    `values` then holds what the server included for the target, if anything.
    """

    rcode: str
    values: frozenset[str]
    ttl: int | None = None
    alias: str | None = None
    secure: bool = False  # a validating resolver vouched for it (the AD bit); authoritative answers never set it

    @property
    def definite(self) -> bool:
        """Whether the answer says what the name holds (NOERROR/NXDOMAIN), rather than "unknown" (SERVFAIL...)."""
        return self.rcode in DEFINITE_RCODES

    def describe(self) -> str:
        """Short human form: 'NXDOMAIN', 'no records', 'CNAME target.', or the values."""
        if self.rcode != "NOERROR":
            return self.rcode
        if self.alias is not None and not self.values:
            return f"CNAME {self.alias}"
        if not self.values:
            return "no records"
        return ", ".join(sorted(self.values))


@dataclass(frozen=True)
class NoAnswer:
    """A server that could not be asked (timeout, connection refused, unresolvable): why."""

    reason: str

    def describe(self) -> str:
        """The reason, for messages."""
        return self.reason


#: One server's reply to one question: an answer (of any rcode), or none at all.
Reply = Answer | NoAnswer
