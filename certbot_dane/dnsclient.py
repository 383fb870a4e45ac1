"""The DNS adapter: every socket certbot-dane opens to a DNS server is opened here."""

from __future__ import annotations

import logging
import socket
import struct
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.TLSA
import dns.rrset
import dns.tsig
import dns.update
import dns.wire

from certbot_dane import compat, plan
from certbot_dane.config import DnsSettings, Endpoint
from certbot_dane.dnssec import SignedAnswer
from certbot_dane.errors import (
    DnsError,
    ServerUnreachable,
    TsigRejected,
    UpdateIgnored,
    UpdateRejected,
    ZoneNotFound,
)
from certbot_dane.records import Answer, Record, Require, ZoneUpdate, absolute

logger = logging.getLogger(__name__)

#: The most one DNS message over TCP can hold (a 16-bit length prefix).
MAX_MESSAGE = 65_535
#: Bytes of records (counted uncompressed, so an upper bound) per UPDATE: the rest of MAX_MESSAGE
#: is margin for the header, the zone section and the TSIG record.
UPDATE_BUDGET = 60_000
#: The longest CNAME chain followed inside one answer.
MAX_CHAIN = 16
#: Seconds between two looks at the primary while confirming an UPDATE (doubling up to 0.5 s).
_CONFIRM_FIRST_POLL = 0.02
#: Records named in one message before "and N more".
_SHOWN = 5

_RCODE_HINTS = {
    "REFUSED": "the server does not let key {key} make this change: check BIND's update-policy "
               "(grant {key} zonesub TXT TLSA;), PowerDNS's zone metadata TSIG-ALLOW-DNSUPDATE {key} and "
               "ALLOW-DNSUPDATE-FROM (PowerDNS also refuses a record at a name that is a CNAME)",
    "NOTAUTH": "the server is not authoritative for the zone or does not accept key {key} "
               "(is the zone a primary zone on this server, and loaded?)",
    "NOTZONE": "a name lies outside the zone",
    "SERVFAIL": "the server failed to apply the update; see its log (Knot: is the zone loaded?)",
    "NXRRSET": "a prerequisite failed: another host changed the ownership claims meanwhile; nothing was changed, "
               "the next run decides again",
    "YXRRSET": "a prerequisite failed: another host changed the ownership claims meanwhile; nothing was changed, "
               "the next run decides again",
}
_TSIG_ERRORS = {
    dns.tsig.PeerBadKey: "BADKEY: the server does not know key {key} with this algorithm "
                         "(Knot also answers so when no acl names the key)",
    dns.tsig.PeerBadSignature: "BADSIG: the server knows key {key} but the secret differs",
    dns.tsig.PeerBadTime: "BADTIME: the clocks of this host and the server differ too much",
    dns.tsig.PeerBadTruncation: "BADTRUNC: the server rejected the truncated MAC",
}
_UNSIGNED_REFUSAL = ("the server rejected the TSIG signature without signing its answer (PowerDNS does this for "
                     "an unknown key or wrong secret): check TSIG-ALLOW-DNSUPDATE and the key {key} (name, "
                     "algorithm and secret as the server has them)")
_ACL_DENIES = ("the server knows key {key} but its ACL/update policy denies this update "
               "(Knot: acl with key {key}, action update, update-type TLSA TXT on zone {zone})")
_POLICY_DROPS = ("a server policy may drop records while answering NOERROR (PowerDNS "
                 "lua-dnsupdate-policy-script; Knot and BIND ignore a record added at a name that is a CNAME)")


def value_text(rdata: dns.rdata.Rdata) -> str:
    """Canonical presentation form: TLSA data as one lower-case hex string, others as dnspython prints.

    A TLSA record dnspython refuses (a digest of the wrong length, which servers accept) arrives as
    raw rdata and is shown the same way, e.g. `3 1 1 aabbccdd`.
    """
    if isinstance(rdata, dns.rdtypes.ANY.TLSA.TLSA):
        return f"{rdata.usage} {rdata.selector} {rdata.mtype} {rdata.cert.hex()}"
    if isinstance(rdata, dns.rdata.GenericRdata) and rdata.rdtype == dns.rdatatype.TLSA and len(rdata.data) >= 3:
        usage, selector, mtype = rdata.data[:3]
        return f"{usage} {selector} {mtype} {rdata.data[3:].hex()}"
    return rdata.to_text()


def to_rdata(rdtype: str, value: str) -> dns.rdata.Rdata:
    """dnspython rdata for a value in presentation form; a TLSA value dnspython refuses as raw rdata."""
    try:
        return dns.rdata.from_text(dns.rdataclass.IN, rdtype, value)
    except dns.exception.DNSException as err:
        fields = value.split()
        if rdtype.upper() != "TLSA" or len(fields) < 4:
            raise DnsError(f"cannot encode {rdtype} record {value!r}: {err}") from err
        try:
            data = bytes(int(f) for f in fields[:3]) + bytes.fromhex("".join(fields[3:]))
        except ValueError:
            raise DnsError(f"cannot encode {rdtype} record {value!r}: {err}") from err
        return dns.rdata.GenericRdata(dns.rdataclass.IN, dns.rdatatype.TLSA, data)


def answer_section(wire: bytes) -> list[dns.rrset.RRset]:
    """The answer section of a DNS message, every record kept: rdata dnspython refuses stays raw rdata.

    dnspython rejects a whole message for one malformed record (a TLSA digest of the wrong length);
    a hand-added record like that must not hide the records next to it.
    """
    parser = dns.wire.Parser(wire)
    _id, _flags, questions, answers, _authority, _additional = parser.get_struct("!HHHHHH")
    for _ in range(questions):
        dns.name.from_wire_parser(parser)
        parser.get_struct("!HH")
    rrsets: dict[tuple[dns.name.Name, int, int, int], dns.rrset.RRset] = {}
    for _ in range(answers):
        name = dns.name.from_wire_parser(parser)  # decompresses on every dnspython
        rdtype, rdclass, ttl, length = parser.get_struct("!HHIH")
        start = parser.current
        rdata: dns.rdata.Rdata
        try:
            with parser.restrict_to(length):
                rdata = dns.rdata.from_wire_parser(rdclass, rdtype, parser)
        except dns.exception.DNSException:
            parser.seek(start + length)
            rdata = dns.rdata.GenericRdata(rdclass, rdtype, wire[start:start + length])
        key = (name, rdclass, rdtype, rdata.covers())
        if key not in rrsets:
            rrsets[key] = dns.rrset.RRset(name, rdata.rdclass, rdata.rdtype, rdata.covers())
        rrsets[key].add(rdata, ttl)
    return list(rrsets.values())


def _rrset(response: dns.message.Message, name: dns.name.Name, rdtype: dns.rdatatype.RdataType,
           covers: dns.rdatatype.RdataType = dns.rdatatype.NONE) -> dns.rrset.RRset | None:
    """The IN RRset name/type of the answer section (read from the list: a lenient read rebuilt it)."""
    for rrset in response.answer:
        if (rrset.name, rrset.rdclass, rrset.rdtype, rrset.covers) == (name, dns.rdataclass.IN, rdtype, covers):
            return rrset
    return None


def _receive(sock: socket.socket, count: int, deadline: float) -> bytes:
    """Read exactly `count` bytes; EOFError when the peer closes first, TimeoutError at the deadline."""
    data = b""
    while len(data) < count:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("timed out")
        sock.settimeout(remaining)
        chunk = sock.recv(count - len(data))
        if not chunk:
            raise EOFError(f"connection closed after {len(data)} of {count} bytes")
        data += chunk
    return data


def _transact(address: str, port: int, request: dns.message.Message, timeout: float) -> bytes:
    """Send one message over TCP and return the answer's wire form (rendering signs a TSIG request)."""
    wire = request.to_wire(max_size=MAX_MESSAGE)
    deadline = time.monotonic() + timeout
    with socket.create_connection((address, port), timeout=timeout) as sock:
        sock.settimeout(max(deadline - time.monotonic(), 0.001))
        sock.sendall(struct.pack("!H", len(wire)) + wire)
        (length,) = struct.unpack("!H", _receive(sock, 2, deadline))
        return _receive(sock, length, deadline)


def _answer(response: dns.message.Message, name: str, rdtype: str) -> Answer:
    """The RRset at name/type in a response, following the CNAME chain it holds; any rcode but
    NOERROR/NXDOMAIN as an Answer with no values."""
    rcode = dns.rcode.to_text(response.rcode())
    secure = bool(response.flags & dns.flags.AD)
    if rcode not in ("NOERROR", "NXDOMAIN"):
        return Answer(rcode, frozenset())
    owner, wanted = dns.name.from_text(name), dns.rdatatype.from_text(rdtype)
    alias: str | None = None
    for _ in range(MAX_CHAIN):
        rrset = _rrset(response, owner, wanted)
        if rrset is not None:
            return Answer(rcode, frozenset(value_text(r) for r in rrset), rrset.ttl, alias, secure)
        cname = _rrset(response, owner, dns.rdatatype.CNAME)
        if cname is None or wanted == dns.rdatatype.CNAME:
            break
        owner = next(iter(cname)).target
        if alias is None:
            alias = owner.to_text().lower()
    return Answer(rcode, frozenset(), None, alias, secure)


def _shown(items: Sequence[str]) -> str:
    """The first few items, then how many more."""
    more = f" and {len(items) - _SHOWN} more" if len(items) > _SHOWN else ""
    return ", ".join(items[:_SHOWN]) + more


def _names(records: Iterable[Record | Require]) -> str:
    return _shown(sorted({f"{r.name} {r.rdtype}" for r in records}))


class DnsClient:
    """Talks to the primary (zone lookups, TSIG-signed updates) and to authoritative servers."""

    def __init__(self, settings: DnsSettings) -> None:
        self.settings = settings
        self._zones: dict[str, str] = {}
        self._servers: dict[str, tuple[Endpoint, ...]] = {}

    # -- transport -----------------------------------------------------------------------
    def _address(self, server: Endpoint) -> str:
        try:
            info = socket.getaddrinfo(server.host, server.port, type=socket.SOCK_STREAM)
        except OSError as err:
            raise ServerUnreachable(f"cannot resolve DNS server name {server.host!r}: {err}") from err
        return str(info[0][4][0])

    def _exchange(self, server: Endpoint, message: dns.message.Message, what: str) -> dns.message.Message:
        """One TCP exchange; every failure becomes a DnsError naming the server and `what` was asked."""
        address = self._address(server)
        timeout = self.settings.timeout
        try:
            wire = _transact(address, server.port, message, timeout)
        except dns.exception.TooBig as err:
            raise DnsError(f"{what} does not fit in one DNS message ({MAX_MESSAGE} bytes)") from err
        except TimeoutError as err:
            raise ServerUnreachable(f"{server}: no answer within {timeout:g}s ({what})") from err
        except EOFError as err:
            raise ServerUnreachable(f"{server} closed the connection without answering ({what}): {err}") from err
        except OSError as err:
            raise ServerUnreachable(f"{server}: {err.strerror or err} ({what})") from err
        response = self._parse(server, message, wire, what)
        if not message.is_response(response):
            raise DnsError(f"{server}: the answer to {what} does not match the question")
        return response

    def _parse(self, server: Endpoint, request: dns.message.Message, wire: bytes, what: str) -> dns.message.Message:
        key = self.settings.key.name if self.settings.key else "(none)"
        try:
            return compat.signed_answer(wire, request)
        except tuple(_TSIG_ERRORS) as err:
            raise TsigRejected(f"{server} rejected {what}: {_TSIG_ERRORS[type(err)].format(key=key)}") from err
        except dns.exception.FormError as err:
            if request.had_tsig:
                unsigned = self._parse_unsigned(wire)
                if unsigned is not None and not unsigned.had_tsig:
                    rcode = dns.rcode.to_text(unsigned.rcode())
                    raise TsigRejected(f"{server} answered {rcode} without a TSIG record to {what}: "
                                       f"{_UNSIGNED_REFUSAL.format(key=key)}") from err
                raise DnsError(f"{server}: bad answer to {what}: {err}") from err
            # A record dnspython refuses: keep everything else, and that record as raw rdata.
            try:
                response = dns.message.from_wire(wire, continue_on_error=True)
                response.answer = answer_section(wire)
            except dns.exception.DNSException as again:
                raise DnsError(f"{server}: bad answer to {what}: {again}") from err
            logger.debug("%s: %s: read leniently (%s)", server, what, err)
            return response
        except dns.exception.DNSException as err:
            raise DnsError(f"{server}: bad answer to {what}: {err}") from err

    @staticmethod
    def _parse_unsigned(wire: bytes) -> dns.message.Message | None:
        try:
            return dns.message.from_wire(wire, keyring=False, continue_on_error=True)
        except dns.exception.DNSException:
            return None

    # -- queries -------------------------------------------------------------------------
    def query(self, server: Endpoint, name: str, rdtype: str) -> Answer:
        """Ask `server` for name/type without recursion, over TCP.

        A name that is an alias answers with `alias` (the first CNAME target) and the values of
        the RRset at the end of the chain when the server included it. Any rcode other than
        NOERROR/NXDOMAIN (SERVFAIL, REFUSED, ...) comes back as an Answer with no values, never as
        "no records". A record dnspython cannot parse is listed as its text all the same.
        """
        request = dns.message.make_query(name, rdtype)
        request.flags &= ~dns.flags.RD
        return _answer(self._exchange(server, request, f"query {name} {rdtype}"), name, rdtype)

    def resolve(self, resolver: Endpoint, name: str, rdtype: str) -> Answer:
        """Ask a recursive, validating resolver, as a DANE sender does (RD, DO and AD set): the answer
        after its cache and the CNAME chain, `secure` when it validated the answer (AD bit).

        A validating resolver answers SERVFAIL for a bogus RRset (RFC 4035 §5.5).
        """
        request = dns.message.make_query(name, rdtype, want_dnssec=True)
        request.flags |= dns.flags.AD
        return _answer(self._exchange(resolver, request, f"resolver query {name} {rdtype}"), name, rdtype)

    def query_dnssec(self, server: Endpoint, name: str, rdtype: str) -> SignedAnswer:
        """Ask `server` for name/type with the DO bit, without recursion, over TCP: the RRset and its RRSIGs."""
        request = dns.message.make_query(name, rdtype, want_dnssec=True)
        request.flags &= ~dns.flags.RD
        response = self._exchange(server, request, f"DNSSEC query {name} {rdtype}")
        owner, wanted = dns.name.from_text(name), dns.rdatatype.from_text(rdtype)
        return SignedAnswer(dns.rcode.to_text(response.rcode()), bool(response.flags & dns.flags.AA),
                            _rrset(response, owner, wanted), _rrset(response, owner, dns.rdatatype.RRSIG, wanted))

    def find_zone(self, name: str) -> str:
        """The zone the primary is authoritative for that contains `name` (SOA walk, AA flag)."""
        name = absolute(name)
        if name in self._zones:
            return self._zones[name]
        labels = dns.name.from_text(name)
        asked = []
        while labels != dns.name.root:
            request = dns.message.make_query(labels, dns.rdatatype.SOA)
            request.flags &= ~dns.flags.RD
            response = self._exchange(self.settings.server, request, f"SOA query for {labels}")
            asked.append(labels.to_text())
            soa = _rrset(response, labels, dns.rdatatype.SOA)
            if soa is not None and response.flags & dns.flags.AA and response.rcode() == dns.rcode.NOERROR:
                zone = labels.to_text().lower()
                self._zones[name] = zone
                return zone
            labels = labels.parent()
        raise ZoneNotFound(f"{self.settings.server} is authoritative for no zone containing {name} "
                           f"(asked SOA of {', '.join(asked)})")

    def servers(self, zone: str) -> tuple[Endpoint, ...]:
        """The servers to wait for: configured `nameservers`, else the zone's NS RRset as addresses."""
        if self.settings.nameservers:
            return self.settings.nameservers
        if zone not in self._servers:
            self._servers[zone] = self._ns_addresses(zone)
        return self._servers[zone]

    def _ns_addresses(self, zone: str) -> tuple[Endpoint, ...]:
        primary = self.settings.server
        targets = self.query(primary, zone, "NS").values
        if not targets:
            raise DnsError(f"{primary} serves no NS RRset for zone {zone}; set [dns] nameservers")
        found: list[Endpoint] = []
        for target in sorted(targets):
            addresses: set[str] = set()
            for rdtype in ("A", "AAAA"):
                addresses |= self.query(primary, target, rdtype).values
            if not addresses:
                try:
                    infos = socket.getaddrinfo(target.rstrip("."), primary.port, type=socket.SOCK_STREAM)
                except OSError as err:
                    raise DnsError(f"cannot resolve name server {target} of zone {zone}: {err}") from err
                addresses = {str(info[4][0]) for info in infos}
            found.extend(Endpoint(a, primary.port) for a in sorted(addresses))
        logger.debug("authoritative servers of %s: %s", zone, ", ".join(map(str, found)))
        return tuple(found)

    # -- updates -------------------------------------------------------------------------
    def update(self, change: ZoneUpdate) -> None:
        """Apply `change` with TSIG-signed UPDATEs, confirming on the primary that each took effect.

        One message when it fits (see split_update for a batch that does not). After each NOERROR,
        every changed name/type of that message is asked of the primary (TCP, no recursion; again
        until `timeout` while the change is not visible yet) before the next message is sent:
        UpdateIgnored when an added record stays absent or a removed one stays served. Waiting also
        keeps BIND's inline signing in step: a second large UPDATE sent while BIND still signs the
        first was seen to never reach the signed zone.
        """
        parts = split_update(change)
        what = f"UPDATE of zone {change.zone} (+{len(change.add)} -{len(change.remove)} records)"
        for number, part in enumerate(parts, 1):
            step = f"{what}, message {number} of {len(parts)}" if len(parts) > 1 else what
            self._send_update(part, self._message(part), step)
            self._confirm(part, step)
        logger.info("%s: zone %s updated: %d added, %d removed (%d UPDATE message%s)", self.settings.server,
                    change.zone, len(change.add), len(change.remove), len(parts), "" if len(parts) == 1 else "s")

    def _message(self, change: ZoneUpdate) -> dns.update.UpdateMessage:
        """One signed UPDATE: prerequisites, removals, additions (names absolute, never relative to the zone)."""
        key = self.settings.signing_key()
        message = dns.update.UpdateMessage(change.zone, keyring=key.keyring(), keyname=dns.name.from_text(key.name))
        for need in change.require:  # RFC 2136 §2.4: exactly these values, or no such RRset
            owner = dns.name.from_text(need.name)
            if need.values:
                message.present(owner, *(to_rdata(need.rdtype, v) for v in sorted(need.values)))
            else:
                message.absent(owner, need.rdtype)
        for record in change.remove:
            message.delete(dns.name.from_text(record.name), to_rdata(record.rdtype, record.value))
        for record in change.add:
            message.add(dns.name.from_text(record.name), record.ttl, to_rdata(record.rdtype, record.value))
        return message

    def _send_update(self, change: ZoneUpdate, message: dns.update.UpdateMessage, what: str) -> None:
        server, key = self.settings.server, self.settings.signing_key().name
        names = _names((*change.require, *change.add, *change.remove))
        try:
            response = self._exchange(server, message, what)
        except TsigRejected as err:
            if isinstance(err.__cause__, dns.tsig.PeerBadKey) and self._key_is_known(change.zone):
                raise UpdateRejected(f"{server} answered BADKEY to {what} for {names}, yet answers a query "
                                     f"signed with key {key}: {_ACL_DENIES.format(key=key, zone=change.zone)}"
                                     ) from err
            raise
        rcode = dns.rcode.to_text(response.rcode())
        if rcode != "NOERROR":
            hint = _RCODE_HINTS.get(rcode, "see the server's log").format(key=key)
            raise UpdateRejected(f"{server} answered {rcode} to {what} for {names}: {hint}")

    def _key_is_known(self, zone: str) -> bool:
        """Whether the primary answers a SOA query for `zone` signed with our key (Knot's BADKEY is ambiguous)."""
        key = self.settings.signing_key()
        request = dns.message.make_query(zone, dns.rdatatype.SOA)
        request.flags &= ~dns.flags.RD
        request.use_tsig(key.keyring(), dns.name.from_text(key.name))
        try:
            response = self._exchange(self.settings.server, request, f"signed SOA query for {zone}")
        except DnsError:
            return False
        return response.rcode() == dns.rcode.NOERROR and response.had_tsig

    def _confirm(self, change: ZoneUpdate, what: str) -> None:
        """Look on the primary until every change shows (UpdateIgnored at `timeout` if some never does)."""
        server = self.settings.server
        wanted: dict[tuple[str, str], tuple[set[str], set[str]]] = defaultdict(lambda: (set(), set()))
        for record in change.add:
            wanted[(record.name, record.rdtype)][0].add(value_text(to_rdata(record.rdtype, record.value)))
        for record in set(change.remove) - set(change.add):
            wanted[(record.name, record.rdtype)][1].add(value_text(to_rdata(record.rdtype, record.value)))
        pending = sorted(wanted)
        deadline = time.monotonic() + self.settings.timeout
        pause = _CONFIRM_FIRST_POLL
        while True:
            missing: list[str] = []
            lingering: list[str] = []
            unknown: list[str] = []
            aliases: list[str] = []
            still = []
            for name, rdtype in pending:
                try:
                    answer = self.query(server, name, rdtype)
                except DnsError as err:
                    raise type(err)(f"{server} answered NOERROR to {what}, but confirming it failed: {err}") from err
                present, absent = wanted[(name, rdtype)]
                served = answer.values if answer.alias is None else frozenset()  # those are the target's
                if not answer.definite:
                    unknown.append(f"{name} {rdtype}: {answer.rcode}")
                elif present - served or absent & served:
                    missing += [f"{name} {rdtype} {v}" for v in sorted(present - served)]
                    lingering += [f"{name} {rdtype} {v}" for v in sorted(absent & served)]
                    if answer.alias is not None and present - served:
                        aliases.append(f"{name} is a CNAME to {answer.alias}")
                else:
                    continue
                still.append((name, rdtype))
            pending = still
            if not pending:
                return
            if time.monotonic() + pause > deadline:
                break
            time.sleep(pause)
            pause = min(pause * 2, 0.5)
        if not missing and not lingering:
            raise DnsError(f"{server} answered NOERROR to {what}, but {self.settings.timeout:g}s later it still "
                           f"answers {_shown(unknown)}: cannot confirm the change (see the server's log)")
        found = ([f"added but absent: {_shown(missing)}"] if missing else []) + \
                ([f"removed but still served: {_shown(lingering)}"] if lingering else []) + aliases
        raise UpdateIgnored(f"{server} answered NOERROR to {what} but after {self.settings.timeout:g}s does not "
                            f"serve the change ({'; '.join(found)}): {_POLICY_DROPS}")


def split_update(change: ZoneUpdate, budget: int = UPDATE_BUDGET) -> list[ZoneUpdate]:
    """`change` as the ZoneUpdates to send one after the other, each within `budget` bytes of records.

    A change that fits is one message: atomic. A bigger one (more than ~800 TLSA records: "The DNS
    message is too big") is split between owner names, never inside one: everything a change does
    at one TLSA owner (its records, their ownership claims at `<hash>._certbot-dane.<owner>`, the
    prerequisites on those) travels in one message, so that a record and its claim land together, a
    removal is always guarded by its own prerequisite, and an RRset never appears holding only some
    of the records added to it. Owners that gain records go first, then owners that lose some:
    between two messages a name holds its old records plus some of the new ones, never fewer than
    either. A record both removed and added is kept, as in one message (where the addition comes
    last). One owner's changes over `budget` get a message of their own.
    """
    costs = {r: _size(dns.name.from_text(r.name), to_rdata(r.rdtype, r.value)) for r in (*change.add, *change.remove)}
    required = {r: _require_size(r) for r in change.require}
    if sum(required.values()) + sum(costs.values()) <= budget:
        return [change]
    owners: dict[str, tuple[list[Record], list[Record], list[Require]]] = {}
    removals = tuple(r for r in change.remove if r not in change.add)
    for record in change.add:
        owners.setdefault(_owner(record.name), ([], [], []))[0].append(record)
    for record in removals:
        owners.setdefault(_owner(record.name), ([], [], []))[1].append(record)
    for need in change.require:
        owners.setdefault(_owner(need.name), ([], [], []))[2].append(need)
    ordered = [u for u in owners.values() if u[0]] + [u for u in owners.values() if not u[0]]
    parts: list[tuple[list[Record], list[Record], list[Require]]] = []
    used = budget
    for adds, removes, requires in ordered:
        cost = sum(costs[r] for r in (*adds, *removes)) + sum(required[r] for r in requires)
        if used + cost > budget or (parts and parts[-1][0] and not adds):  # removals never share with additions
            parts.append(([], [], []))
            used = 0
        parts[-1][0].extend(adds)
        parts[-1][1].extend(removes)
        parts[-1][2].extend(requires)
        used += cost
    return [ZoneUpdate(change.zone, tuple(add), tuple(remove), tuple(need)) for add, remove, need in parts]


def _owner(name: str) -> str:
    """The TLSA owner a record or prerequisite belongs to (a claim belongs to the record it claims)."""
    return plan.owner_of_claim(name) or name


def _require_size(need: Require) -> int:
    """Bytes a prerequisite takes in a message, at most."""
    owner = dns.name.from_text(need.name)
    if not need.values:
        return len(owner.to_wire() or b"") + 10
    return sum(_size(owner, to_rdata(need.rdtype, v)) for v in need.values)


def _size(name: dns.name.Name, rdata: dns.rdata.Rdata) -> int:
    """Bytes one record takes in a message, at most (owner uncompressed, type, class, TTL, length, rdata)."""
    return len(name.to_wire() or b"") + 10 + len(rdata.to_wire() or b"")
