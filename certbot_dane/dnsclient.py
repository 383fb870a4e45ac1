"""The DNS adapter: every socket certbot-dane opens to a DNS server is opened here."""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable
from typing import TypeVar

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.TLSA
import dns.tsig
import dns.update

from certbot_dane.config import DnsSettings, Endpoint
from certbot_dane.dnssec import SignedAnswer
from certbot_dane.errors import DnsError, ServerUnreachable, TsigRejected, UpdateRejected, ZoneNotFound
from certbot_dane.records import Answer, ZoneUpdate, absolute

logger = logging.getLogger(__name__)

T = TypeVar("T")

_RCODE_HINTS = {
    "REFUSED": "the server's update-policy does not grant key {key} this change (or the zone refuses updates)",
    "NOTAUTH": "the server is not authoritative for the zone or does not accept key {key}",
    "NOTZONE": "a name lies outside the zone",
    "SERVFAIL": "the server failed to apply the update; see its log",
    "NXRRSET": "a prerequisite failed: another host changed the ownership claims meanwhile; nothing was changed, "
               "the next run decides again",
    "YXRRSET": "a prerequisite failed: another host changed the ownership claims meanwhile; nothing was changed, "
               "the next run decides again",
}
_TSIG_ERRORS = {
    dns.tsig.PeerBadKey: "BADKEY: the server does not know key {key} with this algorithm",
    dns.tsig.PeerBadSignature: "BADSIG: the server knows key {key} but the secret differs",
    dns.tsig.PeerBadTime: "BADTIME: the clocks of this host and the server differ too much",
    dns.tsig.PeerBadTruncation: "BADTRUNC: the server rejected the truncated MAC",
}


def value_text(rdata: dns.rdata.Rdata) -> str:
    """Canonical presentation form: TLSA data as one lower-case hex string, others as dnspython prints."""
    if isinstance(rdata, dns.rdtypes.ANY.TLSA.TLSA):
        return f"{rdata.usage} {rdata.selector} {rdata.mtype} {rdata.cert.hex()}"
    return rdata.to_text()


class DnsClient:
    """Talks to the primary (zone lookups, TSIG-signed updates) and to authoritative servers."""

    def __init__(self, settings: DnsSettings) -> None:
        self.settings = settings
        self._zones: dict[str, str] = {}
        self._servers: dict[str, tuple[Endpoint, ...]] = {}

    # -- helpers -------------------------------------------------------------------------
    def _address(self, server: Endpoint) -> str:
        try:
            info = socket.getaddrinfo(server.host, server.port, type=socket.SOCK_STREAM)
        except OSError as err:
            raise ServerUnreachable(f"cannot resolve DNS server name {server.host!r}: {err}") from err
        return str(info[0][4][0])

    def _exchange(self, server: Endpoint, message: dns.message.Message, what: str,
                  tcp: bool = True) -> dns.message.Message:
        address = self._address(server)
        send: Callable[..., dns.message.Message] = dns.query.tcp if tcp else dns.query.udp
        key = self.settings.key.name
        try:
            return send(message, address, timeout=self.settings.timeout, port=server.port)
        except dns.exception.Timeout as err:
            raise ServerUnreachable(f"{server}: no answer within {self.settings.timeout:g}s ({what})") from err
        except tuple(_TSIG_ERRORS) as err:
            raise TsigRejected(f"{server} rejected {what}: {_TSIG_ERRORS[type(err)].format(key=key)}") from err
        except OSError as err:
            raise ServerUnreachable(f"{server}: {err.strerror or err} ({what})") from err
        except dns.exception.DNSException as err:
            raise DnsError(f"{server}: bad answer to {what}: {err}") from err

    # -- queries -------------------------------------------------------------------------
    def query(self, server: Endpoint, name: str, rdtype: str) -> Answer:
        """Ask `server` for name/type without recursion, over TCP."""
        request = dns.message.make_query(name, rdtype)
        request.flags &= ~dns.flags.RD
        response = self._exchange(server, request, f"query {name} {rdtype}")
        rrset = response.get_rrset(response.answer, dns.name.from_text(name),
                                   dns.rdataclass.IN, dns.rdatatype.from_text(rdtype))
        rcode = dns.rcode.to_text(response.rcode())
        if rrset is None:
            return Answer(rcode, frozenset())
        return Answer(rcode, frozenset(value_text(r) for r in rrset), rrset.ttl)

    def query_dnssec(self, server: Endpoint, name: str, rdtype: str) -> SignedAnswer:
        """Ask `server` for name/type with the DO bit, without recursion, over TCP: the RRset and its RRSIGs."""
        request = dns.message.make_query(name, rdtype, want_dnssec=True)
        request.flags &= ~dns.flags.RD
        response = self._exchange(server, request, f"DNSSEC query {name} {rdtype}")
        owner, wanted = dns.name.from_text(name), dns.rdatatype.from_text(rdtype)
        return SignedAnswer(dns.rcode.to_text(response.rcode()), bool(response.flags & dns.flags.AA),
                            response.get_rrset(response.answer, owner, dns.rdataclass.IN, wanted),
                            response.get_rrset(response.answer, owner, dns.rdataclass.IN, dns.rdatatype.RRSIG, wanted))

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
            soa = response.get_rrset(response.answer, labels, dns.rdataclass.IN, dns.rdatatype.SOA)
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
        """Send one TSIG-signed UPDATE adding and removing the given records in one zone."""
        key = self.settings.key
        update = dns.update.UpdateMessage(change.zone, keyring=key.keyring(),
                                           keyname=dns.name.from_text(key.name))
        for need in change.require:  # RFC 2136 §2.4: exactly these values, or no such RRset
            owner = dns.name.from_text(need.name)
            if need.values is None:
                update.absent(owner, need.rdtype)
            else:
                update.present(owner, *(dns.rdata.from_text("IN", need.rdtype, v) for v in sorted(need.values)))
        for record in change.remove:  # names are absolute, never relative to the zone
            update.delete(dns.name.from_text(record.name), dns.rdata.from_text("IN", record.rdtype, record.value))
        for record in change.add:
            update.add(dns.name.from_text(record.name), record.ttl,
                       dns.rdata.from_text("IN", record.rdtype, record.value))
        what = f"UPDATE of zone {change.zone} (+{len(change.add)} -{len(change.remove)} records)"
        response = self._exchange(self.settings.server, update, what)
        rcode = dns.rcode.to_text(response.rcode())
        if rcode != "NOERROR":
            hint = _RCODE_HINTS.get(rcode, "see the server's log").format(key=key.name)
            names = ", ".join(sorted({f"{r.name} {r.rdtype}" for r in change.add + change.remove}))
            raise UpdateRejected(f"{self.settings.server} answered {rcode} to {what} for {names}: {hint}")
        logger.info("%s: zone %s updated: %d added, %d removed",
                    self.settings.server, change.zone, len(change.add), len(change.remove))
