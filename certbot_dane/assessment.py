"""Status assessment: pure functions from a lineage's state, certificates and DNS answers to findings."""


from __future__ import annotations

import datetime
import enum
import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from cryptography import x509

from certbot_dane import dnssec, rollover
from certbot_dane.config import Endpoint, LineageSettings, StatusSettings
from certbot_dane.dnssec import Verdict
from certbot_dane.records import Answer
from certbot_dane.rollover import Gate, LineageState
from certbot_dane.tlsa import TlsaRecord, association_data

if TYPE_CHECKING:  # mtastsreport builds on this module's findings
    from certbot_dane.mtastsreport import DomainReport

SCHEMA_VERSION = 1
OVERDUE = 300.0          # seconds a ready deploy may wait (a wake-up fires at the safe moment) before it is "overdue"
EXPIRY_WARNING_DAYS = 14
MAX_RRSET = 12           # some large receivers stop reading a TLSA RRset after this many records

PHASES = {
    "new": "nothing deployed",
    "steady": "steady",
    "waiting-for-servers": "staged, waiting for servers",
    "waiting-for-ttl": "staged, waiting for TTLs",
    "ready": "ready to deploy",
    "unverified": "deployed but unverified",
    "error": "error",
}
MATCHES = ("deployed", "staged", "previous", "stale", "foreign")



class Severity(enum.IntEnum):
    """Nagios plugin states; the value is the exit code."""

    OK = 0
    WARNING = 1
    CRITICAL = 2
    UNKNOWN = 3


def iso(moment: float | datetime.datetime) -> str:
    """ISO 8601 UTC, to the second: 2026-11-24T04:20:00Z."""
    if isinstance(moment, float | int):
        moment = datetime.datetime.fromtimestamp(moment, datetime.UTC)
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def short(value: str) -> str:
    """A TLSA value abbreviated for humans: '3 0 1 ab12cd34..'."""
    try:
        return TlsaRecord.from_text(value).abbreviated()
    except ValueError:
        return value


# -- observations (what gather() returns) ------------------------------------------------
@dataclass(frozen=True)
class CertView:
    """A certificate as status shows it; `accepts`: every TLSA value (usage 2/3) its chain satisfies."""

    fingerprint: str
    subject: str
    serial: str
    not_after: datetime.datetime
    records: tuple[str, ...]
    accepts: frozenset[str]


@dataclass(frozen=True)
class Local:
    """What this host knows about a lineage: the state file and the certificate files."""

    state: LineageState
    deployed: CertView | None
    staged: CertView | None


@dataclass(frozen=True)
class Served:
    """One server's TLSA answer at one name, with its DNSSEC verdict."""

    rcode: str
    values: frozenset[str]
    ttl: int | None
    dnssec: Verdict
    rrsig_expires: float | None = None  # the earliest expiration of the RRSIGs over the RRset


@dataclass(frozen=True)
class SenderAnswer:
    """A sender's view of one TLSA name: what a validating resolver answers (after its cache and CNAMEs)."""

    resolver: str
    asked: str                 # the configured name (the resolver follows its CNAMEs)
    rcode: str | None          # None: the resolver did not answer (`error` says why)
    values: frozenset[str] = frozenset()
    secure: bool = False       # the AD bit: the resolver validated the answer
    error: str | None = None


@dataclass(frozen=True)
class Presented:
    """What one address of one endpoint presented in a TLS handshake (STARTTLS where the scheme says so)."""

    target: str                # scheme://host:port
    name: str                  # the TLSA name a sender asks for it: _port._tcp.host.
    address: str
    chain: tuple[bytes, ...] = ()  # DER, leaf first; empty when the handshake failed
    error: str | None = None


@dataclass(frozen=True)
class ZoneAnswer:
    """One server's SOA serial for a zone and whether its DNSKEY RRset is signed."""

    rcode: str
    serial: int | None
    dnssec: Verdict


@dataclass(frozen=True)
class Observed:
    """Live DNS: each TLSA name's zone, each server's TLSA answer, each zone's SOA and DNSKEY per server."""

    zone_of: Mapping[str, str]
    tlsa: Mapping[str, Mapping[Endpoint, Served]]
    zones: Mapping[str, Mapping[Endpoint, ZoneAnswer]]
    sender: Mapping[str, SenderAnswer] = field(default_factory=dict)  # per owner name (after CNAMEs)
    endpoints: Mapping[str, tuple[Presented, ...]] = field(default_factory=dict)  # per lineage
    owner_of: Mapping[str, str] = field(default_factory=dict)  # configured TLSA name -> owner, where they differ


# -- the report (what assess() returns) ----------------------------------------------------
@dataclass(frozen=True)
class Finding:
    """One thing the admin should know, with a stable `code` for scripts."""

    severity: Severity
    code: str
    text: str


@dataclass(frozen=True)
class RecordView:
    """One served TLSA record: whose it is, and whether it lets senders accept the deployed certificate."""

    value: str
    match: str
    accepts_deployed: bool


@dataclass(frozen=True)
class ServerView:
    """What one server serves at one TLSA name."""

    server: str
    rcode: str
    ttl: int | None
    soa_serial: int | None
    records: tuple[RecordView, ...]
    dnssec: Verdict
    rrsig_expires: float | None = None


@dataclass(frozen=True)
class NameView:
    """One configured TLSA name across its authoritative servers."""

    name: str
    zone: str
    servers: tuple[ServerView, ...]


@dataclass(frozen=True)
class ZoneServer:
    """One server's view of a zone."""

    server: str
    rcode: str
    soa_serial: int | None
    dnssec: Verdict


@dataclass(frozen=True)
class ZoneView:
    """A zone holding some of the lineage's TLSA names."""

    zone: str
    signed: bool
    servers: tuple[ZoneServer, ...]


@dataclass(frozen=True)
class EndpointView:
    """The verdict on one address of one endpoint: the certificate it presents, the record that matched it."""

    target: str
    address: str
    status: Severity
    fingerprint: str | None    # SHA-256 of the leaf presented (None: no handshake)
    matched: str | None        # the published TLSA record that matched the chain, if any
    text: str


@dataclass(frozen=True)
class LineageReport:
    """Everything status says about one lineage."""

    lineage: str
    phase: str
    reason: str
    safe_at: float | None
    deployed: CertView | None
    staged: CertView | None
    names: tuple[NameView, ...]
    zones: tuple[ZoneView, ...]
    dnssec: str
    findings: tuple[Finding, ...]
    pending: tuple[str, ...] = ()  # what the next `certbot-dane deploy` run's plans would do
    sender: tuple[SenderAnswer, ...] = ()
    endpoints: tuple[EndpointView, ...] = ()
    advice: tuple[str, ...] = ()  # suggestions that change no status

    @property
    def status(self) -> Severity:
        """The most severe finding (OK when there is none)."""
        return max((f.severity for f in self.findings), default=Severity.OK)


@dataclass(frozen=True)
class Report:
    """The whole answer: one report per lineage (and one per MTA-STS domain)."""

    checked_at: float
    lineages: tuple[LineageReport, ...]
    mta_sts: tuple[DomainReport, ...] = ()

    @property
    def status(self) -> Severity:
        """The most severe lineage (or MTA-STS domain) status."""
        return max([*(lr.status for lr in self.lineages), *(d.status for d in self.mta_sts)], default=Severity.OK)


# -- assess: pure ------------------------------------------------------------------------
def assess(lineage: LineageSettings, local: Local, observed: Observed, now: float,
           uptime: rollover.Uptime | None = None, settings: StatusSettings | None = None) -> LineageReport:
    """Phase, record classification and findings of one lineage, from values only (no I/O)."""
    deployed, staged = local.deployed, local.staged
    st = rollover.reconcile(local.state, deployed.fingerprint if deployed else None)
    gate = rollover.gate(st, _for_gate(lineage.tlsa, observed), now, uptime, lineage.min_wait) if st.staged else None
    phase, reason, safe_at = _phase(st, gate)
    names = tuple(_name_view(name, st, deployed, staged, observed) for name in lineage.tlsa)
    zones = tuple(_zone_view(z, observed) for z in dict.fromkeys(observed.zone_of[n] for n in lineage.tlsa))
    sender = tuple(observed.sender[n] for n in dict.fromkeys(lineage.tlsa) if n in observed.sender)
    endpoints = tuple(_endpoint_view(p, observed, deployed) for p in observed.endpoints.get(lineage.name, ()))
    findings = [*_cert_findings(st, deployed, now), *_dns_findings(st, deployed, names, zones),
                *_rollover_findings(lineage, st, staged, gate, observed, now),
                *_slow_findings(lineage, deployed, names, observed, now, settings or StatusSettings()),
                *_sender_findings(sender, deployed, st), *_endpoint_findings(endpoints)]
    findings.sort(key=lambda f: -f.severity)
    verdicts = [s.dnssec for z in zones for s in z.servers] + [s.dnssec for n in names for s in n.servers]
    return LineageReport(lineage.name, phase, reason, safe_at, deployed, staged, names, zones,
                         dnssec.worst(verdicts), tuple(f for f in findings if f.severity > Severity.OK),
                         sender=sender, endpoints=endpoints,
                         advice=tuple(f.text for f in findings if f.severity == Severity.OK))


def _for_gate(names: Iterable[str], observed: Observed) -> rollover.Observation:
    return {n: {s: Answer(a.rcode, a.values, a.ttl) for s, a in observed.tlsa[n].items()} for n in names}


def _phase(st: LineageState, gate: Gate | None) -> tuple[str, str, float | None]:
    safe_at = gate.safe_at if gate else None
    if st.deployed is None and st.staged is None:
        return "new", "nothing deployed or staged yet: issue the certificate with certbot (-i dane or the " \
                      "certbot-dane deploy hook)", None
    if st.error:
        return "error", st.error, safe_at
    if st.unverified:
        return "unverified", "swapped in; the next deploy run reloads and verifies the services, then retires " \
                             "the old records", None
    if gate is None:
        return "steady", "nothing staged", None
    if gate.lagging:
        return "waiting-for-servers", f"{gate.reason} ({', '.join(sorted({g.split()[0] for g in gate.lagging}))})", None
    if not gate.ready:
        return "waiting-for-ttl", gate.reason, safe_at
    return "ready", gate.reason, safe_at


def _name_view(name: str, st: LineageState, deployed: CertView | None, staged: CertView | None,
               observed: Observed) -> NameView:
    kinds: dict[str, str] = {}
    for kind, values in (("previous", st.previous.records if st.previous else ()),
                         ("staged", (*(st.staged.records if st.staged else ()), *(staged.records if staged else ()))),
                         ("deployed", (*(st.deployed.records if st.deployed else ()),
                                       *(deployed.records if deployed else ())))):
        kinds.update(dict.fromkeys(values, kind))  # later kinds win: deployed over staged over previous
    ours = {p.value for p in st.published if p.name == name}
    accepted = deployed.accepts if deployed else frozenset(st.deployed.records if st.deployed else ())
    zone = observed.zone_of[name]
    servers = []
    for server, answer in sorted(observed.tlsa[name].items(), key=lambda kv: str(kv[0])):
        records = tuple(RecordView(v, kinds.get(v, "stale" if v in ours else "foreign"), v in accepted)
                        for v in sorted(answer.values))
        zone_answer = observed.zones[zone].get(server)
        servers.append(ServerView(str(server), answer.rcode, answer.ttl,
                                  zone_answer.serial if zone_answer else None, records, answer.dnssec,
                                  answer.rrsig_expires))
    return NameView(name, zone, tuple(servers))


def _zone_view(zone: str, observed: Observed) -> ZoneView:
    servers = tuple(ZoneServer(str(s), a.rcode, a.serial, a.dnssec)
                    for s, a in sorted(observed.zones[zone].items(), key=lambda kv: str(kv[0])))
    signed = any(s.dnssec.status in (dnssec.VALID, dnssec.BOGUS) for s in servers)
    return ZoneView(zone, signed, servers)


def _cert_findings(st: LineageState, deployed: CertView | None, now: float) -> list[Finding]:
    if deployed is None:
        if st.deployed is None:
            return []
        return [Finding(Severity.CRITICAL, "deployed-missing",
                        f"the state says {st.deployed.fingerprint[:16]} is deployed, but its certificate files are "
                        "missing from the deploy directory: services cannot load it")]
    days = (deployed.not_after.timestamp() - now) / 86400
    if days <= 0:
        return [Finding(Severity.CRITICAL, "deployed-expired",
                        f"the deployed certificate {deployed.fingerprint[:16]} expired on {iso(deployed.not_after)}: "
                        "every TLS client rejects it")]
    if days < EXPIRY_WARNING_DAYS:
        return [Finding(Severity.WARNING, "expires-soon",
                        f"the deployed certificate {deployed.fingerprint[:16]} expires in {days:.1f} days "
                        f"({iso(deployed.not_after)}); is certbot renewing it and the deploy timer running?")]
    return []


def _dns_findings(st: LineageState, deployed: CertView | None, names: Sequence[NameView],
                  zones: Sequence[ZoneView]) -> list[Finding]:
    found: list[Finding] = []
    live = deployed is not None or st.deployed is not None
    for view in names:
        stale: dict[str, list[str]] = {}
        for sv in view.servers:
            if sv.rcode not in ("NOERROR", "NXDOMAIN"):
                found.append(Finding(Severity.WARNING, "server-error", f"{sv.server} answered {sv.rcode} for "
                                                                       f"{view.name} TLSA"))
            elif not sv.records and live:
                found.append(Finding(Severity.WARNING, "no-tlsa-rrset",
                                     f"{sv.server} serves no TLSA record at {view.name}: senders asking it do not "
                                     "use DANE for this service"))
            elif live and not any(r.accepts_deployed for r in sv.records):
                found.append(Finding(Severity.CRITICAL, "deployed-unmatched",
                                     f"{sv.server} serves {len(sv.records)} TLSA record(s) at {view.name}, none "
                                     "matching the deployed certificate: DANE-validating senders fail now"))
            if sv.dnssec.status == dnssec.BOGUS:
                found.append(Finding(Severity.CRITICAL, "dnssec-bogus",
                                     f"{sv.server}: {sv.dnssec.reason}: validating resolvers answer SERVFAIL and "
                                     "DANE senders defer mail"))
            for record in sv.records:
                if record.match == "stale":
                    stale.setdefault(record.value, []).append(sv.server)
        for value, servers in stale.items():
            found.append(Finding(Severity.WARNING, "stale-record",
                                 f"{view.name} {short(value)} (published by certbot-dane, matches nothing deployed "
                                 f"or staged) lingers on {', '.join(servers)}: the next successful deploy run "
                                 "retires it"))
    for zone in zones:
        unsigned = [s.server for s in zone.servers if s.dnssec.status == dnssec.UNSIGNED]
        if unsigned:
            found.append(Finding(Severity.WARNING, "dnssec-missing",
                                 f"zone {zone.zone} is not signed (no DNSKEY on {', '.join(unsigned)}): "
                                 "DANE without DNSSEC protects nothing"))
        found += [Finding(Severity.CRITICAL, "dnssec-bogus", f"{s.server}: {s.dnssec.reason}")
                  for s in zone.servers if s.dnssec.status == dnssec.BOGUS]
        found += [Finding(Severity.WARNING, "server-error", f"{s.server} answered {s.rcode} for zone {zone.zone} SOA")
                  for s in zone.servers if s.soa_serial is None]
        found += [Finding(Severity.WARNING, "server-error", f"{s.server}: {s.dnssec.reason}")
                  for s in zone.servers if s.soa_serial is not None and s.rcode not in ("NOERROR", "NXDOMAIN")]
        serials = {s.server: s.soa_serial for s in zone.servers if s.soa_serial is not None}
        for server, serial in serials.items():
            ahead = sorted((other for other in serials.items() if _behind(serial, other[1])),
                           key=lambda other: (other[1] - serial) % 2**32)
            if ahead:
                found.append(Finding(Severity.WARNING, "server-lags",
                                     f"{server} serves zone {zone.zone} at SOA serial {serial}, behind "
                                     f"{ahead[-1][1]} on {ahead[-1][0]}"))
    return found


def _rollover_findings(lineage: LineageSettings, st: LineageState, staged: CertView | None, gate: Gate | None,
                       observed: Observed, now: float) -> list[Finding]:
    found: list[Finding] = []
    if st.deployed is None and st.staged is None:
        found.append(Finding(Severity.WARNING, "nothing-deployed", f"{lineage.name} is configured but nothing "
                                                                   "is deployed or staged"))
    if st.error:
        found.append(Finding(Severity.WARNING, "last-run-failed", f"the last deploy run failed: {st.error}"))
    if st.staged is None or gate is None:
        return found
    if staged is None:
        found.append(Finding(Severity.WARNING, "staged-missing",
                             f"the staged certificate {st.staged.fingerprint[:16]} is missing from the staging area: "
                             "it cannot be deployed; renew with certbot --force-renewal"))
    missing: dict[str, list[str]] = {}
    for name in lineage.tlsa:
        for server, answer in observed.tlsa[name].items():
            if not set(st.staged.records) <= answer.values:
                missing.setdefault(str(server), []).append(name)
    found += [Finding(Severity.WARNING, "server-lags", f"{server} does not serve the staged records at "
                                                       f"{', '.join(names)} yet: the 2 x TTL clock waits for it")
              for server, names in sorted(missing.items())]
    if gate.ready:
        since = st.staged.staged_at if st.staged.no_wait else (gate.safe_at or now)
        if now - since > OVERDUE:
            found.append(Finding(Severity.WARNING, "deploy-overdue",
                                 f"ready to deploy since {iso(since)} but not deployed: is certbot-dane.timer "
                                 "running?"))
    elif not gate.lagging and st.staged.served_at is None and now - st.staged.staged_at > OVERDUE:
        found.append(Finding(Severity.WARNING, "deploy-overdue",
                             f"staged at {iso(st.staged.staged_at)} and served everywhere, but no deploy run has "
                             "started its 2 x TTL clock: is certbot-dane.timer running?"))
    if staged is not None:
        ttls = [a.ttl or 0 for n in lineage.tlsa for a in observed.tlsa[n].values()]
        earliest = max(now, gate.safe_at) if gate.safe_at is not None else now + 2 * max([st.staged.old_ttl, *ttls])
        if staged.not_after.timestamp() <= earliest:
            found.append(Finding(Severity.CRITICAL, "staged-expires-first",
                                 f"the staged certificate {staged.fingerprint[:16]} expires {iso(staged.not_after)}, "
                                 f"before it can be deployed (at the earliest {iso(earliest)}): renew now"))
    return found


def _slow_findings(lineage: LineageSettings, deployed: CertView | None, names: Sequence[NameView],
                   observed: Observed, now: float, settings: StatusSettings) -> list[Finding]:
    """What goes wrong slowly: signatures running out, servers drifting apart, RRsets growing, CAs rotating."""
    found: list[Finding] = []
    horizon = settings.rrsig_warning_days * 86400
    for view in names:
        answers = observed.tlsa[view.name]
        for server, answer in sorted(answers.items(), key=lambda kv: str(kv[0])):
            expires = answer.rrsig_expires
            if expires is not None and now < expires < now + horizon:
                found.append(Finding(Severity.WARNING, "rrsig-expiring",
                                     f"{server}: the RRSIG over {view.name} TLSA expires {iso(expires)} (in "
                                     f"{(expires - now) / 86400:.1f} days): is the zone still being re-signed?"))
            if len(answer.values) > MAX_RRSET:
                found.append(Finding(Severity.WARNING, "rrset-large",
                                     f"{server} serves {len(answer.values)} TLSA records at {view.name}: some "
                                     f"large receivers read only the first {MAX_RRSET}"))
        serials = {s.soa_serial for s in view.servers}
        served = {frozenset(a.values) for a in answers.values() if a.rcode == "NOERROR" or a.rcode == "NXDOMAIN"}
        if len(serials) == 1 and len(served) > 1:
            found.append(Finding(Severity.WARNING, "servers-differ",
                                 f"the servers of {view.zone} serve different TLSA RRsets at {view.name} under the "
                                 f"same SOA serial {next(iter(serials))}: " + "; ".join(
                                     f"{s.server}: {', '.join(short(r.value) for r in s.records) or 'none'}"
                                     for s in view.servers)))
        if deployed is not None and any(p.usage == 2 for p in lineage.params):
            rotated = sorted({r.value for s in view.servers for r in s.records
                              if r.value.startswith("2 ") and not r.accepts_deployed
                              and r.match in ("stale", "foreign")})
            found += [Finding(Severity.WARNING, "ca-mismatch",
                              f"{view.name} {short(value)} matches no CA certificate in the deployed chain: did the "
                              "CA rotate its intermediate? Senders relying on it fail once the other records go")
                      for value in rotated]
    if lineage.params and all(p.usage == 3 and p.selector == 0 for p in lineage.params):
        found.append(Finding(Severity.OK, "advice-spki",
                             "every record of this lineage is 3 0 x (the whole certificate), so each "
                             "renewal waits 2 x TTL; 3 1 1 with certbot --reuse-key keeps the key, and renewals "
                             "deploy at once"))
    return found


def _sender_findings(sender: Sequence[SenderAnswer], deployed: CertView | None, st: LineageState) -> list[Finding]:
    """A validating resolver's answers, as senders get them after caches."""
    found: list[Finding] = []
    live = deployed is not None or st.deployed is not None
    accepted = deployed.accepts if deployed else frozenset(st.deployed.records if st.deployed else ())
    for view in sender:
        where = f"resolver {view.resolver} for {view.asked} TLSA"
        if view.rcode is None:
            found.append(Finding(Severity.WARNING, "resolver-unreachable", f"{where}: no answer: {view.error}"))
        elif view.rcode == "SERVFAIL":
            found.append(Finding(Severity.CRITICAL, "resolver-bogus",
                                 f"{where}: SERVFAIL: the validating resolver finds the answer bogus (or cannot "
                                 "reach the servers); DANE senders defer mail"))
        elif view.rcode not in ("NOERROR", "NXDOMAIN"):
            found.append(Finding(Severity.WARNING, "resolver-error", f"{where}: {view.rcode}"))
        elif not view.secure:
            found.append(Finding(Severity.WARNING, "resolver-insecure",
                                 f"{where}: answered without the AD bit: senders behind it do not use DANE (is it "
                                 "validating, with a trust anchor for the zone?)"))
        elif live and view.values and not view.values & accepted:
            found.append(Finding(Severity.CRITICAL, "resolver-unmatched",
                                 f"{where}: none of the {len(view.values)} record(s) senders get match the deployed "
                                 "certificate: DANE-validating senders fail now"))
        elif live and not view.values:
            found.append(Finding(Severity.WARNING, "resolver-no-tlsa",
                                 f"{where}: no TLSA records: senders do not use DANE for this service"))
    return found


def _endpoint_view(seen: Presented, observed: Observed, deployed: CertView | None) -> EndpointView:
    """Match the chain an address presented against the records every authoritative server publishes."""
    owner = observed.owner_of.get(seen.name, seen.name)
    if seen.error is not None or not seen.chain:
        return EndpointView(seen.target, seen.address, Severity.WARNING, None, None,
                            f"{seen.target} at {seen.address}: {seen.error or 'no certificate presented'}")
    answers = [a.values for a in observed.tlsa.get(owner, {}).values()]
    published = frozenset.intersection(*answers) if answers else frozenset()
    leaf_fp = _fingerprint(seen.chain[0])
    matched = next((v for v in sorted(published) if _matches(v, seen.chain)), None)
    where = f"{seen.target} at {seen.address}"
    if matched is None:
        return EndpointView(seen.target, seen.address, Severity.CRITICAL, leaf_fp, None,
                            f"{where} presents certificate {leaf_fp[:16]}, which matches none of the "
                            f"{len(published)} TLSA record(s) every server publishes at {owner}: DANE senders "
                            "defer mail to this address")
    if deployed is not None and leaf_fp != deployed.fingerprint:
        return EndpointView(seen.target, seen.address, Severity.CRITICAL, leaf_fp, matched,
                            f"{where} presents certificate {leaf_fp[:16]}, not the deployed "
                            f"{deployed.fingerprint[:16]} (not reloaded? another host behind this address?); it "
                            f"still matches {short(matched)}, until that record is retired")
    return EndpointView(seen.target, seen.address, Severity.OK, leaf_fp, matched,
                        f"{where} presents the deployed certificate, matching {short(matched)}")


def _endpoint_findings(endpoints: Sequence[EndpointView]) -> list[Finding]:
    codes = {Severity.WARNING: "endpoint-unreachable"}
    return [Finding(e.status, codes.get(e.status, "endpoint-stale" if e.matched else "endpoint-unmatched"), e.text)
            for e in endpoints if e.status != Severity.OK]


def _fingerprint(der: bytes) -> str:
    return hashlib.sha256(der).hexdigest()


def _matches(value: str, chain: Sequence[bytes]) -> bool:
    """Whether a TLSA record matches a presented chain as an SMTP client uses it (RFC 7672 §3.1: only
    DANE-EE(3) against the leaf and DANE-TA(2) against a CA certificate the server sent)."""
    try:
        record = TlsaRecord.from_text(value)
    except ValueError:
        return False
    targets = chain[:1] if record.usage == 3 else chain[1:] if record.usage == 2 else ()
    for der in targets:
        try:
            cert = x509.load_der_x509_certificate(der)
        except ValueError:
            continue
        if association_data(cert, record.selector, record.mtype) == record.cert:
            return True
    return False


def _behind(serial: int, other: int) -> bool:
    """RFC 1982: `serial` is older than `other`."""
    return 0 < (other - serial) % 2**32 < 2**31
