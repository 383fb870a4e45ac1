"""An in-memory DNS world for model-based rollover tests: a primary, secondaries, caches, a clock.

The model honours what ROLLOVER.md relies on and nothing more:

* the primary holds TLSA RRsets (name -> (values, TTL): one TTL per RRset, RFC 2181 §5.2) and
  applies an RFC 2136 UPDATE atomically, removals first; like BIND, adding a record with another
  TTL changes the TTL of the whole RRset; SOA queries answer with the SOA TTL (default TTLs);
* every change to the primary is a new zone version (serial); a secondary serves one version and
  moves to a newer one only when told (in sync: at once; lagging: on "catch up", possibly to an
  intermediate version, as an IXFR would);
* every server remembers which RRset (values and TTL) it served over which interval, so that the
  tests can ask what any DANE sender in the world may still hold in its cache;
* `ModelDnsClient` has the interface of `certbot_dane.dnsclient.DnsClient` and raises the same
  errors (`ServerUnreachable`, `UpdateRejected`) when a fault is injected;
* `Sender` is a DANE-validating MTA with a resolver cache that honours the TTL it was given;
* `Crasher` makes the process "die" (a BaseException nobody catches) at a chosen step boundary,
  which `CrashingStore` and `CrashingRollout` (the real classes plus boundaries) and the model's
  UPDATE handling pass through, as well as `certbot_dane.deploy.fault_point`;
* `issue` makes deterministic Ed25519 certificates from a fixed pool of keys per lineage and two
  CAs, so that "renew with the same key" and "the CA rotated" are one argument away (and a
  replayed schedule sees byte-identical certificates).
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.x509.oid import NameOID

from certbot_dane.certificate import CertSet
from certbot_dane.certstore import CertStore
from certbot_dane.config import DnsSettings, Endpoint
from certbot_dane.deploy import Rollout
from certbot_dane.dnsclient import DnsClient, split_update
from certbot_dane.errors import ServerUnreachable, UpdateRejected, ZoneNotFound
from certbot_dane.records import Answer, ZoneUpdate, absolute
from certbot_dane.rollover import LineageState
from certbot_dane.tlsa import MTYPES, SELECTORS, TlsaRecord, association_data, load_chain
from certbot_dane.tsigkey import TsigKey

ZONE = "example.org."
PRIMARY = Endpoint("192.0.2.1", 53)
SOA_TEXT = "ns1.example.org. hostmaster.example.org. {serial} 3600 600 86400 {minimum}"
UPDATE_FAILURES = ("timeout", "timeout-after-apply", "REFUSED", "SERVFAIL")
#: The model's UPDATEs are split as the real client splits a batch too big for one message, but at a
#: few records (a TLSA record and its claim are ~200 bytes), so that crashes and failures fall between
#: the messages of one batch too.
SPLIT_BUDGET = 500

#: Real time when the module was imported: the simulated clock starts here, certificates are
#: valid from a day before it (one second apart, in issue order) for ten years.
EPOCH = float(int(time.time()))

RRset = tuple[frozenset[str], int]


# -- time ---------------------------------------------------------------------------------------
class Clock:
    """The simulated clock shared by the model and by `Rollout.now`."""

    def __init__(self, start: float = EPOCH) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        assert seconds >= 0
        self.now += seconds


# -- servers ------------------------------------------------------------------------------------
@dataclass
class Served:
    """One RRset a server served for one name from `start` until `end` (None: still served)."""

    values: frozenset[str]
    ttl: int
    start: float
    end: float | None = None

    def describe(self) -> str:
        """E.g. "['3 0 1 ab12cd34..'] (TTL 60) from +0s to +120s", times relative to EPOCH."""
        until = "still served" if self.end is None else f"to +{self.end - EPOCH:g}s"
        return f"{sorted(v[:14] + '..' for v in self.values)} (TTL {self.ttl}) from +{self.start - EPOCH:g}s {until}"

    def cacheable_until(self) -> float:
        """The last instant (exclusive) a resolver may still hold this RRset: fetched just before `end`."""
        return float("inf") if self.end is None else self.end + self.ttl


@dataclass
class Server:
    """One authoritative server: the zone version it serves, its reachability and its history."""

    endpoint: Endpoint
    version: int = 0
    lagging: bool = False
    down: bool = False
    view: dict[str, RRset] = field(default_factory=dict)
    history: dict[str, list[Served]] = field(default_factory=dict)

    def show(self, version: int, zone: Mapping[str, RRset], now: float) -> None:
        """Serve `zone` (version `version`) from now on, recording what changed for each name."""
        self.version = version
        for name in set(self.view) | set(zone):
            old, new = self.view.get(name), zone.get(name)
            if old == new:
                continue
            runs = self.history.setdefault(name, [])
            if old is not None:
                runs[-1].end = now
            if new is not None:
                runs.append(Served(new[0], new[1], now))
        self.view = dict(zone)

    def forget_before(self, now: float, horizon: float) -> None:
        """Drop intervals no cache can hold any more, even with a margin of `horizon` x TTL."""
        for name, runs in self.history.items():
            self.history[name] = [r for r in runs if r.end is None or r.end + horizon * r.ttl > now]


class ModelDns:
    """The authoritative side of one zone: the primary's versions and every server's view of them."""

    def __init__(self, clock: Clock, secondaries: int, soa_ttl: int, soa_minimum: int) -> None:
        self.clock = clock
        self.soa_ttl, self.soa_minimum = soa_ttl, soa_minimum
        self.versions: list[dict[str, RRset]] = [{}]
        self.servers = [Server(PRIMARY)] + [Server(Endpoint(f"192.0.2.{i + 2}", 53)) for i in range(secondaries)]
        self.next_update_fails: str | None = None
        #: TXT RRsets (ownership claims) on the primary; the model's senders never ask for them.
        self.txt: dict[str, frozenset[str]] = {}
        #: CNAMEs (alias -> target) in the zone; a TLSA question at an alias is answered from the target.
        self.cnames: dict[str, str] = {}
        #: The next UPDATE is answered NOERROR but not applied (a PowerDNS Lua policy that drops records).
        self.next_update_dropped = False
        #: The primary answers TLSA questions at these names with this rcode (SERVFAIL: a zone that fails to load).
        self.rcodes: dict[str, str] = {}
        self.crash: Callable[[str], None] = lambda label: None
        #: Called with (update, records actually removed, names whose RRset TTL the update changed).
        self.on_update: list[Callable[[ZoneUpdate, set[tuple[str, str]], set[str]], None]] = []

    # -- the primary ------------------------------------------------------------------------
    @property
    def primary(self) -> Server:
        return self.servers[0]

    @property
    def zone(self) -> dict[str, RRset]:
        """The primary's current zone content."""
        return self.versions[-1]

    def values(self, name: str, server: int = 0) -> frozenset[str]:
        """What server `server` (0: the primary) serves for `name`."""
        rrset = self.servers[server].view.get(absolute(name))
        return rrset[0] if rrset else frozenset()

    def ttl(self, name: str) -> int | None:
        rrset = self.zone.get(absolute(name))
        return rrset[1] if rrset else None

    def commit(self, zone: dict[str, RRset]) -> None:
        """A new zone version on the primary; secondaries in sync transfer it at once."""
        zone = {n: r for n, r in zone.items() if r[0]}
        if zone == self.zone:
            return
        self.versions.append(zone)
        latest = len(self.versions) - 1
        for server in self.servers:
            if server is self.primary or not server.lagging:
                server.show(latest, zone, self.clock())

    def admin_add(self, name: str, value: str, ttl: int) -> None:
        """An administrator adds a record by hand (nsupdate): the RRset takes the record's TTL."""
        name = absolute(name)
        values, _ = self.zone.get(name, (frozenset(), ttl))
        self.commit({**self.zone, name: (values | {value}, ttl)})

    def admin_set_ttl(self, name: str, ttl: int) -> None:
        """An administrator changes the TTL of an existing RRset."""
        name = absolute(name)
        if name in self.zone:
            self.commit({**self.zone, name: (self.zone[name][0], ttl)})

    def apply(self, change: ZoneUpdate) -> None:
        """Apply one UPDATE atomically (removals first, as the client writes them), or fail as injected."""
        failure, self.next_update_fails = self.next_update_fails, None
        if self.primary.down:
            raise ServerUnreachable(f"{PRIMARY}: no answer within 1s (UPDATE of zone {change.zone})")
        if failure in ("REFUSED", "SERVFAIL"):
            raise UpdateRejected(f"{PRIMARY} answered {failure} to UPDATE of zone {change.zone}")
        if failure == "timeout":
            raise ServerUnreachable(f"{PRIMARY}: no answer within 1s (UPDATE of zone {change.zone})")
        for need in change.require:
            found = self.txt.get(need.name, frozenset()) if need.rdtype == "TXT" else self.values(need.name)
            if need.values is None and found:
                raise UpdateRejected(f"{PRIMARY} answered YXRRSET to UPDATE of zone {change.zone}")
            if need.values is not None and found != need.values:
                raise UpdateRejected(f"{PRIMARY} answered NXRRSET to UPDATE of zone {change.zone}")
        if self.next_update_dropped:
            self.next_update_dropped = False
            return
        self.crash("dns:before-update-applied")
        txt = {n: set(v) for n, v in self.txt.items()}
        for record in change.remove:
            if record.rdtype == "TXT":
                txt.get(record.name, set()).discard(record.value)
        for record in change.add:
            if record.rdtype == "TXT":
                txt.setdefault(record.name, set()).add(record.value)
        self.txt = {n: frozenset(v) for n, v in txt.items() if v}
        zone = {n: (set(v), t) for n, (v, t) in self.zone.items()}
        removed: set[tuple[str, str]] = set()
        for record in change.remove:
            if record.rdtype != "TLSA":
                continue
            values = zone.get(record.name, (set(), 0))[0]
            if record.value in values:
                values.discard(record.value)
                removed.add((record.name, record.value))
        retimed: set[str] = set()
        for record in change.add:
            if record.rdtype != "TLSA":
                continue
            values, ttl = zone.get(record.name, (set(), record.ttl))
            if values and ttl != record.ttl:
                retimed.add(record.name)
            zone[record.name] = (values | {record.value}, record.ttl)
        self.commit({n: (frozenset(v), t) for n, (v, t) in zone.items()})
        for hook in self.on_update:
            hook(change, removed, retimed)
        self.crash("dns:after-update-applied")
        if failure == "timeout-after-apply":
            raise ServerUnreachable(f"{PRIMARY}: no answer within 1s (UPDATE of zone {change.zone})")

    # -- secondaries ------------------------------------------------------------------------
    def fall_behind(self, index: int) -> None:
        """Secondary `index` (1-based) stops transferring until it is told to catch up."""
        self.servers[index].lagging = True

    def catch_up(self, index: int, fraction: float = 1.0) -> None:
        """Secondary `index` transfers a newer version: the latest (fraction 1) or one on the way."""
        server = self.servers[index]
        latest = len(self.versions) - 1
        target = server.version + round((latest - server.version) * fraction)
        server.show(target, self.versions[target], self.clock())
        server.lagging = target < latest

    def answer(self, endpoint: Endpoint, name: str, rdtype: str) -> Answer:
        """What a server answers (authoritatively, no recursion)."""
        server = next(s for s in self.servers if s.endpoint == endpoint)
        if server.down:
            raise ServerUnreachable(f"{endpoint}: no answer within 1s (query {name} {rdtype})")
        name = absolute(name)
        if rdtype == "SOA":
            if name != ZONE:
                return Answer("NOERROR", frozenset())
            soa = SOA_TEXT.format(serial=server.version + 1, minimum=self.soa_minimum)
            return Answer("NOERROR", frozenset({soa}), self.soa_ttl)
        if rdtype == "TXT":
            return Answer("NOERROR", self.txt.get(name, frozenset()))
        if rdtype != "TLSA":
            return Answer("NOERROR", frozenset())
        if name in self.rcodes and server is self.primary:
            return Answer(self.rcodes[name], frozenset())
        alias = self.cnames.get(name)
        rrset = server.view.get(alias or name)
        if rrset is None:
            return Answer("NOERROR" if alias else "NXDOMAIN", frozenset(), None, alias)
        return Answer("NOERROR", rrset[0], rrset[1], alias)

    def owner(self, name: str) -> str:
        """Where the TLSA RRset of `name` lives (the CNAME target, or the name itself)."""
        name = absolute(name)
        return self.cnames.get(name, name)

    def negative_ttl(self) -> int:
        """How long a resolver caches NODATA/NXDOMAIN (RFC 2308 §5)."""
        return min(self.soa_ttl, self.soa_minimum)


def dns_settings(dns: ModelDns) -> DnsSettings:
    """Real settings pointing at the model: the primary takes updates, every server is waited for."""
    return DnsSettings(server=PRIMARY, key=TsigKey("certbot-dane.", "hmac-sha256", b"0" * 32),
                       nameservers=tuple(s.endpoint for s in dns.servers), timeout=1.0, propagation_timeout=1.0)


class ModelDnsClient(DnsClient):
    """The DnsClient interface (settings, find_zone, servers, query, update) over a ModelDns."""

    def __init__(self, settings: DnsSettings, dns: ModelDns) -> None:
        super().__init__(dataclasses.replace(settings, timeout=0.0))  # confirm once, never sleep
        self.dns = dns

    def _exchange(self, *args: object, **kwargs: object) -> NoReturn:
        raise AssertionError("the model client must never open a socket")

    def find_zone(self, name: str) -> str:
        name = absolute(name)
        if name in self._zones:
            return self._zones[name]
        if self.dns.primary.down:  # the real client walks SOA queries to the primary
            raise ServerUnreachable(f"{PRIMARY}: no answer within 1s (SOA query for {name})")
        if name != ZONE and not name.endswith("." + ZONE):
            raise ZoneNotFound(f"{PRIMARY} is authoritative for no zone containing {name}")
        self._zones[name] = ZONE
        return ZONE

    def servers(self, zone: str) -> tuple[Endpoint, ...]:
        return self.settings.nameservers

    def query(self, server: Endpoint, name: str, rdtype: str) -> Answer:
        return self.dns.answer(server, name, rdtype)

    def update(self, change: ZoneUpdate) -> None:
        """Apply, then confirm on the primary as the real client does (a dropped update is UpdateIgnored)."""
        for part in split_update(change, budget=SPLIT_BUDGET):  # as the real client, in small messages
            self.dns.apply(part)
            self._confirm(part, f"UPDATE of zone {change.zone}")


# -- senders -------------------------------------------------------------------------------------
class Sender:
    """A DANE-validating MTA behind a caching resolver that asks one server per cache miss."""

    def __init__(self, dns: ModelDns, pick: Callable[[list[Server]], Server]) -> None:
        self.dns = dns
        self.pick = pick
        self.cache: dict[str, tuple[frozenset[str], float]] = {}
        self.fetches = 0

    def tlsa(self, name: str) -> frozenset[str] | None:
        """The TLSA RRset this sender uses now (empty: no DANE); None when no server answers."""
        now = self.dns.clock()
        cached = self.cache.get(name)
        if cached is not None and now < cached[1]:
            return cached[0]
        reachable = [s for s in self.dns.servers if not s.down]
        if not reachable:
            return None
        server = self.pick(reachable)
        answer = self.dns.answer(server.endpoint, name, "TLSA")
        self.fetches += 1
        ttl = answer.ttl if answer.values and answer.ttl is not None else self.dns.negative_ttl()
        self.cache[name] = (answer.values, now + ttl)
        return answer.values


def senders(dns: ModelDns, seed: int) -> list[Sender]:
    """One sender bound to each server, and one that asks a random server on every cache miss."""
    chooser = random.Random(seed)
    pinned = [Sender(dns, functools.partial(_pinned, server.endpoint)) for server in dns.servers]
    return [*pinned, Sender(dns, chooser.choice)]


def _pinned(endpoint: Endpoint, reachable: list[Server]) -> Server:
    return next((s for s in reachable if s.endpoint == endpoint), reachable[0])


# -- crashes -------------------------------------------------------------------------------------
class Killed(BaseException):
    """The process died here (kill -9): nothing in certbot-dane may catch this."""


#: Every step boundary a run passes: certbot_dane.deploy's fault points, then those of this model.
BOUNDARIES = (
    "run:start",
    "fault:after-stage-files", "fault:before-publish", "fault:after-publish", "fault:before-swap",
    "fault:after-swap", "fault:after-reload", "fault:after-retire",
    "state:before-save", "state:after-save",
    "store:before-stage", "store:after-stage", "store:before-swap", "store:after-swap",
    "store:before-prune-staging-others", "store:after-prune-staging-others",
    "store:before-prune-staging-all", "store:after-prune-staging-all",
    "store:before-prune-versions", "store:after-prune-versions",
    "dns:before-update-applied", "dns:after-update-applied",
)


@dataclass(frozen=True)
class Crash:
    """Where a run dies: at the `nth` passage through boundary `at`, or at the `step`-th boundary of the run."""

    at: str | None = None
    nth: int = 0
    step: int | None = None

    def __repr__(self) -> str:
        if self.at is None:
            return f"Crash(step={self.step})"
        return f"Crash(at={self.at!r}" + (f", nth={self.nth})" if self.nth else ")")


class Crasher:
    """Counts step boundaries (fault points, disk writes, DNS updates) and kills the run at the chosen one."""

    def __init__(self, plan: Crash | None = None) -> None:
        self.plan = plan
        self.seen: list[str] = []
        self.fired: str | None = None

    def __call__(self, label: str) -> None:
        if self.plan is None or self.fired is not None:
            self.seen.append(label)
            return
        if self.plan.at is not None:
            hit = label == self.plan.at and self.seen.count(label) == self.plan.nth
        else:
            hit = len(self.seen) == self.plan.step
        self.seen.append(label)
        if hit:
            self.fired = label
            raise Killed(label)


class CrashingStore(CertStore):
    """The real CertStore, with a step boundary before and after each change it makes on disk."""

    def __init__(self, state_dir: Path, deploy_dir: Path, crash: Callable[[str], None]) -> None:
        super().__init__(state_dir, deploy_dir)
        self.crash = crash

    def stage(self, lineage: str, certs: CertSet) -> Path:
        self.crash("store:before-stage")
        path = super().stage(lineage, certs)
        self.crash("store:after-stage")
        return path

    def prune_staging(self, lineage: str, keep: str | None) -> None:
        which = "all" if keep is None else "others"
        self.crash(f"store:before-prune-staging-{which}")
        super().prune_staging(lineage, keep)
        self.crash(f"store:after-prune-staging-{which}")

    def swap(self, lineage: str, certs: CertSet, gid: int | None) -> None:
        self.crash("store:before-swap")
        super().swap(lineage, certs, gid)
        self.crash("store:after-swap")

    def prune_versions(self, lineage: str, keep: set[str]) -> None:
        self.crash("store:before-prune-versions")
        super().prune_versions(lineage, keep)
        self.crash("store:after-prune-versions")


@dataclass
class CrashingRollout(Rollout):
    """The real Rollout, with a step boundary before and after each state file it writes."""

    crash: Callable[[str], None] = lambda label: None

    def save(self, st: LineageState) -> LineageState:
        self.crash("state:before-save")
        saved = super().save(st)
        self.crash("state:after-save")
        return saved


# -- certificates --------------------------------------------------------------------------------
KEYS_PER_LINEAGE = 8
CAS = 2


@functools.cache
def _ca(index: int) -> tuple[ed25519.Ed25519PrivateKey, x509.Certificate]:
    key = ed25519.Ed25519PrivateKey.from_private_bytes(bytes([0xCA, index]) * 16)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"Model CA {index}")])
    start = datetime.datetime.fromtimestamp(EPOCH - 10 * 86400, datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1000 + index).not_valid_before(start).not_valid_after(start + datetime.timedelta(days=7300))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .sign(key, None))
    return key, cert


@functools.cache
def leaf_key(lineage: str, index: int) -> ed25519.Ed25519PrivateKey:
    """Key number `index` of a lineage's pool (deterministic, distinct across lineages)."""
    seed = f"{lineage}/{index}".encode().ljust(32, b".")[:32]
    return ed25519.Ed25519PrivateKey.from_private_bytes(seed)


@functools.cache
def issue(lineage: str, hosts: tuple[str, ...], key: int, ca: int, serial: int) -> CertSet:
    """Certificate number `serial` of a lineage: valid from EPOCH - 1 day + serial seconds, for ten years."""
    ca_key, ca_cert = _ca(ca)
    private = leaf_key(lineage, key)
    start = datetime.datetime.fromtimestamp(EPOCH - 86400 + serial, datetime.UTC)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
            .issuer_name(ca_cert.subject).public_key(private.public_key()).serial_number(serial + 1)
            .not_valid_before(start).not_valid_after(start + datetime.timedelta(days=3650))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(h) for h in hosts]), critical=False)
            .sign(ca_key, None))
    leaf = cert.public_bytes(serialization.Encoding.PEM)
    chain = ca_cert.public_bytes(serialization.Encoding.PEM)
    key_pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
    return CertSet(leaf, chain, leaf + chain, key_pem)


def write_live(directory: Path, certs: CertSet) -> None:
    """Put a certificate where certbot's live/<lineage>/ symlinks would point after a renewal."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, data in certs.files().items():
        tmp = directory / f".{name}.tmp"
        tmp.write_bytes(data)
        tmp.replace(directory / name)


@functools.cache
def matching_values(fullchain: bytes) -> frozenset[str]:
    """Every TLSA rdata (usage 2/3, selector 0/1, mtype 1/2) a DANE sender accepts for this chain."""
    chain = load_chain(fullchain)
    found = set()
    for usage, target in ((3, chain[0]), (2, chain[1] if len(chain) > 1 else None)):
        if target is None:
            continue
        for selector in SELECTORS:
            for mtype in MTYPES:
                found.add(TlsaRecord(usage, selector, mtype, association_data(target, selector, mtype)).to_text())
    return frozenset(found)
