"""`certbot-dane status`: is DANE safe right now? Gather disk and live DNS, assess (pure), render.

Read-only: takes no lock (state files are replaced atomically), sends no UPDATE, writes nothing.
Exit codes follow the Nagios plugin convention: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN.

JSON schema, version 1 (docs/status-json.md has the full description; fields are only ever added)::

    {"schema_version": 1, "status": "OK|WARNING|CRITICAL|UNKNOWN", "checked_at": ISO,
     "error": null | "why the check could not run (status UNKNOWN)",
     "lineages": [{
        "lineage": NAME, "status": "OK|WARNING|CRITICAL",
        "phase": "new|steady|waiting-for-servers|waiting-for-ttl|ready|unverified|error",
        "reason": TEXT, "safe_at": ISO | null, "dnssec": "valid|unsigned|bogus|none",
        "deployed": CERT | null, "staged": CERT | null,
        "names": [{"name": FQDN, "zone": FQDN, "servers": [{"server": "HOST:PORT", "rcode": TEXT,
                   "ttl": INT | null, "soa_serial": INT | null,
                   "dnssec": {"status": "valid|unsigned|bogus|none", "reason": TEXT}, "rrsig_expires": ISO | null,
                   "records": [{"value": "3 0 1 HEX", "match": "deployed|staged|previous|stale|foreign",
                                "accepts_deployed": BOOL}]}]}],
        "zones": [{"zone": FQDN, "signed": BOOL, "servers": [{"server": ..., "rcode": TEXT,
                   "soa_serial": INT | null, "dnssec": {...}}]}],
        "findings": [{"severity": "CRITICAL|WARNING", "code": CODE, "text": TEXT}], "advice": [TEXT, ...],
        "pending": [TEXT, ...],
        "sender": [{"resolver": "HOST:PORT", "name": FQDN, "rcode": TEXT | null, "secure": BOOL,
                    "records": ["3 0 1 HEX", ...], "error": TEXT | null}],
        "endpoints": [{"endpoint": URL, "address": ADDRESS, "status": "OK|WARNING|CRITICAL",
                       "fingerprint": HEX | null, "matched": "3 0 1 HEX" | null, "text": TEXT}]}]}
    CERT = {"fingerprint": HEX, "subject": TEXT, "serial": HEX, "not_after": ISO,
            "days_left": FLOAT, "expired": BOOL, "records": ["3 0 1 HEX", ...]}
    and, at the top level, one entry per MTA-STS domain (certbot_dane.mtastsreport)::
    "mta_sts": [{"domain": DOMAIN, "status": "OK|WARNING|CRITICAL", "mode": "enforce|testing|none",
        "intended": {"id": ID, "text": POLICY} | null,
        "served": [{"address": ADDRESS, "id": ID | null, "matches_intended": BOOL, "error": TEXT | null,
                    "https_not_after": ISO | null, "https_days_left": FLOAT | null}],
        "txt": {"name": FQDN, "records": [TEXT, ...], "id": ID | null, "matches_served": BOOL},
        "mx": [{"host": HOST, "matched": BOOL | null, "endpoints": [{"address": ADDRESS, "valid": BOOL,
                "error": TEXT | null, "names": [NAME, ...], "not_after": ISO | null, "days_left": FLOAT | null}]}],
        "tlsrpt": {"name": FQDN, "intended": TEXT | null, "records": [TEXT, ...]}, "findings": [...]}]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor

import dns.exception
import dns.resolver

from certbot_dane import boot, certificate, certstore, config, dnssec, plan, rollover, state, verify, zone
from certbot_dane.assessment import (
    CertView,
    Local,
    Observed,
    Presented,
    Report,
    SenderAnswer,
    Served,
    Severity,
    ZoneAnswer,
    assess,
)
from certbot_dane.certstore import CertStore
from certbot_dane.config import Config, Endpoint, LineageSettings, StatusSettings, VerifyTarget
from certbot_dane.dnsclient import DnsClient, value_text
from certbot_dane.dnssec import SignedAnswer, Verdict
from certbot_dane.errors import ConfigError, DaneError, StateError
from certbot_dane.monitorformat import nagios, prometheus, prometheus_unknown
from certbot_dane.mtasts_io import mta_sts_reports
from certbot_dane.records import DEFINITE_RCODES, Answer
from certbot_dane.reports import status_findings
from certbot_dane.statusformat import to_json, to_text, unknown_json
from certbot_dane.tlsa import MTYPES, SELECTORS, TlsaRecord, association_data, load_chain

WORKERS = zone.WORKERS


def cert_view(certs: certificate.CertSet, lineage: LineageSettings) -> CertView:
    """Describe a certificate set: its identity, its records for the lineage, every record its chain satisfies."""
    info = certificate.info(certs.cert)
    chain = load_chain(certs.fullchain)
    accepts = {TlsaRecord(usage, selector, mtype, association_data(target, selector, mtype)).to_text()
               for usage, targets in ((3, chain[:1]), (2, chain[1:])) for target in targets
               for selector in SELECTORS for mtype in MTYPES}
    records = tuple(r.to_text() for r in certificate.tlsa_records(certs, lineage.params))
    return CertView(info.fingerprint, info.subject, info.serial, info.not_after, records, frozenset(accepts))


def local(cfg: Config, lineage: LineageSettings) -> Local:
    """Read a lineage's state file and its deployed and staged certificate files (no lock needed)."""
    st = state.load_lineage(cfg.state_dir, lineage.name)
    store = CertStore(cfg.state_dir, cfg.deploy_dir)
    directories = [store.live_dir(lineage.name),
                   store.staged_dir(lineage.name, st.staged.fingerprint) if st.staged else None]
    views: list[CertView | None] = []
    for directory in directories:
        try:
            found = certstore.read_dir(directory, private=False) if directory else None
            views.append(cert_view(found, lineage) if found else None)
        except ValueError as err:
            raise StateError(f"{directory}: cannot parse the certificate: {err}") from err
    return Local(st, views[0], views[1])


def gather(client: DnsClient, lineages: Sequence[LineageSettings], now: float,
           workers: int = WORKERS) -> Observed:
    """Ask the servers through `zone.ask`, `workers` questions at a time (1: one after the other);
    DnsError naming every server that did not answer.

    1. Each name's TLSA RRset from the primary (DO bit): its RRSIG signer names the zone, so the SOA walk
       (DnsClient.find_zone) is needed only for names that are unsigned or absent.
    2. Each zone's SOA, then DNSKEY, from each of its authoritative servers.
    3. Each name's TLSA RRset from each other server; then every RRset is validated against its server's DNSKEY.
    """
    names = list(dict.fromkeys(n for lineage in lineages for n in lineage.tlsa))
    primary = client.settings.server
    first = zone.answered(zone.ask_signed(client, [(primary, n, "TLSA") for n in names], workers))
    zone_of = {n: _zone(client, n, first[(primary, n, "TLSA")]) for n in names}
    servers = {z: client.servers(z) for z in dict.fromkeys(zone_of.values())}
    soa = zone.answered(zone.ask(client, [(s, z, "SOA") for z, found in servers.items() for s in found], workers))
    keys = zone.answered(zone.ask_signed(client, [(s, z, "DNSKEY") for (s, z, _), a in soa.items() if a.values],
                                         workers))
    answers = zone.answered(zone.ask_signed(client, [(s, n, "TLSA") for n in names for s in servers[zone_of[n]]
                                                     if s != primary], workers))
    answers.update(first)
    zones = {z: {s: _zone_answer(z, s, soa[(s, z, "SOA")], keys.get((s, z, "DNSKEY")), now) for s in found}
             for z, found in servers.items()}
    validated: dict[tuple[str, ...], Verdict] = {}  # servers in sync serve the same RRset and RRSIGs: check once
    keys = {q: k for q, k in keys.items() if k.rcode in DEFINITE_RCODES}  # unknown keys validate nothing
    tlsa = {n: {s: _served(zone_of[n], answers[(s, n, "TLSA")], zones[zone_of[n]][s],
                           keys.get((s, zone_of[n], "DNSKEY")), now, validated)
                for s in servers[zone_of[n]]} for n in names}
    return Observed(zone_of, tlsa, zones)


def _zone(client: DnsClient, name: str, answer: SignedAnswer) -> str:
    """The zone of `name`: the signer of the primary's authoritative answer, else the SOA walk."""
    signer = answer.signer if answer.authoritative else None
    if signer and (name == signer or name.endswith("." + signer)):
        return signer
    return client.find_zone(name)


def _zone_answer(zone_: str, server: Endpoint, soa: Answer, keys: SignedAnswer | None, now: float) -> ZoneAnswer:
    if keys is None:
        return ZoneAnswer(soa.rcode, None, Verdict(dnssec.NONE, f"{server} does not serve zone {zone_}"))
    serial = int(next(iter(soa.values)).split()[2])
    if keys.rcode not in DEFINITE_RCODES:  # SERVFAIL & co. say nothing about the keys: not "unsigned"
        return ZoneAnswer(keys.rcode, serial, Verdict(dnssec.NONE, f"{server} answered {keys.rcode} for {zone_} "
                                                                   "DNSKEY: cannot tell whether the zone is signed"))
    return ZoneAnswer(soa.rcode, serial, dnssec.check_zone(zone_, keys.rrset, keys.sigs, now))


def _served(zone_: str, answer: SignedAnswer, served_zone: ZoneAnswer, keys: SignedAnswer | None, now: float,
            validated: dict[tuple[str, ...], Verdict]) -> Served:
    rrset, sigs = answer.rrset, answer.sigs
    values = frozenset(value_text(r) for r in rrset) if rrset is not None else frozenset()
    expires = min((float(sig.expiration) for sig in sigs), default=None) if sigs is not None else None
    if keys is None:
        verdict = served_zone.dnssec
    else:
        seen = (zone_, *(x.to_text() if x is not None else "" for x in (rrset, sigs, keys.rrset)))
        if seen not in validated:
            validated[seen] = dnssec.check_rrset(zone_, rrset, sigs, keys.rrset, now)
        verdict = validated[seen]
    return Served(answer.rcode, values, rrset.ttl if rrset is not None else None, verdict, expires)


def report(cfg: Config, lineages: Sequence[LineageSettings], client: DnsClient | None = None,
           now: float | None = None, workers: int = WORKERS) -> Report:
    """Gather everything for these lineages and assess each one."""
    given_now, now = now, time.time() if now is None else now
    client = client or DnsClient(cfg.dns)
    owners = zone.owners(client, dict.fromkeys(n for lineage in lineages for n in lineage.tlsa))
    senders = sender_view(client, cfg.status, {n: o for n, (o, _) in owners.items()}, workers)
    endpoints = presented(client, cfg.status, lineages, workers)
    reported = status_findings(cfg, lineages, now)  # TLSRPT: DANE failures senders reported at the MX hosts
    # a CNAME'd TLSA name is reported (and assessed) where its RRset lives, as senders see it
    lineages = [dataclasses.replace(lineage, tlsa=tuple(dict.fromkeys(owners[n][0] for n in lineage.tlsa)))
                for lineage in lineages]
    found = {lineage.name: local(cfg, lineage) for lineage in lineages}
    observed = dataclasses.replace(gather(client, lineages, now, workers), sender=senders, endpoints=endpoints,
                                   owner_of={n: o for n, (o, _) in owners.items() if n != o})
    # deploy runs count the gate's wait in this host's uptime; a caller's own `now` is the wall clock only
    up = boot.uptime() if given_now is None else None
    reports = [assess(lineage, found[lineage.name], observed, now, up, cfg.status) for lineage in lineages]
    reports = [dataclasses.replace(r, findings=tuple(sorted(r.findings + reported[r.lineage],
                                                            key=lambda f: -f.severity))) for r in reports]
    steps = pending(cfg, client, lineages, found, observed, now)
    resolver = system_resolver() if cfg.status.resolver == "system" else cfg.status.resolver  # MTA-STS: sender's view
    sts = mta_sts_reports(cfg, client, now, resolver if isinstance(resolver, Endpoint) else None)
    return Report(now, tuple(dataclasses.replace(r, pending=steps[r.lineage] + (
        (f"deploy certificate {r.staged.fingerprint[:16]}",) if r.phase == "ready" and r.staged else ()))
        for r in reports), mta_sts=sts)


def system_resolver() -> Endpoint | None:
    """The first nameserver of /etc/resolv.conf (what the machine's own MTA asks), if any."""
    try:
        found = dns.resolver.Resolver(configure=True).nameservers
    except dns.exception.DNSException:
        return None
    return Endpoint(str(found[0]), 53) if found else None


def sender_view(client: DnsClient, settings: StatusSettings, owners: Mapping[str, str],
                workers: int = WORKERS) -> dict[str, SenderAnswer]:
    """What a validating resolver answers for each configured TLSA name, keyed by where its RRset lives."""
    resolver = system_resolver() if settings.resolver == "system" else settings.resolver
    if settings.resolver is None:
        return {}
    if not isinstance(resolver, Endpoint):
        return {owner: SenderAnswer("system", name, None, error="no nameserver in /etc/resolv.conf")
                for name, owner in owners.items()}
    replies = zone.resolve(client, [(resolver, name, "TLSA") for name in owners], workers)
    found: dict[str, SenderAnswer] = {}
    for (_, name, _), reply in replies.items():
        view = SenderAnswer(str(resolver), name, reply.rcode, reply.values, reply.secure) \
            if isinstance(reply, Answer) else SenderAnswer(str(resolver), name, None, error=reply.reason)
        found.setdefault(owners[name], view)
    return found


def presented(client: DnsClient, settings: StatusSettings, lineages: Sequence[LineageSettings],
              workers: int = WORKERS) -> dict[str, tuple[Presented, ...]]:
    """A TLS handshake with every address of every endpoint the lineages name in `verify`, in parallel.

    A host's addresses (A and AAAA) come from the validating resolver when one is configured (as a
    sender finds them), else from the primary; `verify_address` pins one address instead.
    """
    resolver = system_resolver() if settings.resolver == "system" else settings.resolver
    jobs: list[tuple[str, VerifyTarget, str]] = []
    failed: dict[str, list[Presented]] = {}
    for lineage in lineages:
        for target in lineage.verify:
            name = f"_{target.port}._tcp.{target.host.lower().rstrip('.')}."
            if lineage.verify_address:
                jobs.append((lineage.name, target, lineage.verify_address))
                continue
            addresses, why = _addresses(client, resolver if isinstance(resolver, Endpoint) else None, target.host)
            jobs += [(lineage.name, target, address) for address in addresses]
            if not addresses:
                failed.setdefault(lineage.name, []).append(Presented(str(target), name, "-", error=why))

    def handshake(job: tuple[str, VerifyTarget, str]) -> Presented:
        _, target, address = job
        name = f"_{target.port}._tcp.{target.host.lower().rstrip('.')}."
        try:
            return Presented(str(target), name, address, verify.served_chain(
                target, address, timeout=settings.endpoint_timeout))
        except DaneError as err:
            return Presented(str(target), name, address, error=str(err))

    found: dict[str, list[Presented]] = failed
    if jobs:
        with ThreadPoolExecutor(max_workers=max(1, min(workers, len(jobs)))) as pool:
            for job, seen in zip(jobs, pool.map(handshake, jobs), strict=True):
                found.setdefault(job[0], []).append(seen)
    return {name: tuple(views) for name, views in found.items()}


def _addresses(client: DnsClient, resolver: Endpoint | None, host: str) -> tuple[list[str], str]:
    """Every A and AAAA address of `host`, and why there are none."""
    questions = [(resolver or client.settings.server, host.rstrip(".") + ".", t) for t in ("A", "AAAA")]
    replies = (zone.resolve if resolver else zone.ask)(client, questions)
    addresses = sorted(v for r in replies.values() if isinstance(r, Answer) for v in r.values)
    why = "; ".join(r.describe() for r in replies.values()) or "no address"
    return addresses, f"no A or AAAA address for {host} ({why})"


def pending(cfg: Config, client: DnsClient, lineages: Sequence[LineageSettings], found: dict[str, Local],
            observed: Observed, now: float) -> dict[str, tuple[str, ...]]:
    """The publish and retire plans the next deploy run would apply, as the lines it would print.

    The same pure planners as `deploy` (`plan.publish`, `plan.retire`) over what `status` observed
    on the primary, plus the ownership claims (read-only TXT queries; no key needed).
    """
    primary = client.settings.server
    intents: list[plan.Intent] = []
    lineages_: list[tuple[Sequence[str], rollover.LineageState, Sequence[str]]] = [
        (other.tlsa, state.load_lineage(cfg.state_dir, other.name), ())  # not reported on: what it wants stays
        for other in cfg.lineages.values() if all(other.name != lineage.name for lineage in lineages)]
    for lineage in lineages:
        local_ = found[lineage.name]
        st = rollover.reconcile(local_.state, local_.deployed.fingerprint if local_.deployed else None)
        deployed = local_.deployed.records if local_.deployed and st.deployed and \
            local_.deployed.fingerprint == st.deployed.fingerprint else None
        st = rollover.refresh(st, deployed, local_.staged.records if local_.staged else None)
        intents.append(plan.Intent(lineage.name, lineage.tlsa, st))
        lineages_.append((lineage.tlsa, st, deployed or ()))
    kept, _ = plan.kept(lineages_)
    answers = {o: Answer(a.rcode, a.values, a.ttl) for o, by in observed.tlsa.items() for s, a in by.items()
               if s == primary}
    if not all(o in answers and answers[o].definite for i in intents for o in i.owners):
        return {lineage.name: () for lineage in lineages}  # the findings say why
    instance = state.instance_id(cfg.state_dir, create=False)
    claims = zone.claims(client, plan.to_claim(intents, answers) | plan.to_retire(intents, kept))
    steps: dict[str, list[str]] = {lineage.name: [] for lineage in lineages}
    planned = (plan.publish(intents, answers, claims, instance, now), plan.retire(intents, kept, claims, instance))
    for changes in planned:
        for name, line in changes.lines:
            steps[name].append(line)
    return {name: tuple(lines) for name, lines in steps.items()}


def select(cfg: Config, name: str | None) -> list[LineageSettings]:
    """The lineages to report on; ConfigError if `name` is not configured or nothing is."""
    if name is not None:
        if name not in cfg.lineages:
            raise ConfigError(f"lineage {name!r} is not configured in {cfg.path}")
        return [cfg.lineages[name]]
    if not cfg.lineages and not cfg.mta_sts:
        raise ConfigError(f"no lineage is configured in {cfg.path}: nothing to check")
    return [cfg.lineages[n] for n in sorted(cfg.lineages)]


def main(args: argparse.Namespace) -> int:
    """`certbot-dane status [--lineage NAME] [--json | --prometheus]`: print the report, exit with its Nagios state.

    Needs no TSIG key (only queries): runs as a monitoring user that cannot read it (README).
    """
    colour = sys.stdout.isatty() and not os.environ.get("NO_COLOR")
    try:
        cfg = config.load(args.config, need_key=False)
        rep = report(cfg, select(cfg, args.lineage))
    except DaneError as err:
        print(f"certbot-dane status: UNKNOWN: {err}", file=sys.stderr)
        print(json.dumps(unknown_json(str(err), time.time()), indent=2) if args.json else
              prometheus_unknown(time.time()) if args.prometheus else f"DANE UNKNOWN: {err}")
        return int(Severity.UNKNOWN)
    print(json.dumps(to_json(rep), indent=2) if args.json else prometheus(rep) if args.prometheus
          else nagios(to_text(rep, colour), rep))
    return int(rep.status)
