"""Start real named (primary, secondary), Knot and PowerDNS primaries and Pebble as child processes on 127/8 only."""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import ssl
import stat
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import dns.exception
import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import dns.tsig
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

REQUIRED_BINARIES = ("named", "tsig-keygen", "rndc", "pebble")
"""Programs the sandbox runs; Debian ships them in bind9, bind9-utils and pebble."""

APT_PACKAGES = "bind9 bind9-utils bind9-dnsutils pebble"
"""What `apt-get install` needs to provide REQUIRED_BINARIES (and `dig` for debugging)."""

KNOT_BINARIES = ("knotd", "knotc")
KNOT_APT_PACKAGES = "knot"
"""Knot DNS 3.2 for `KnotServer`."""

POWERDNS_BINARIES = ("pdns_server", "pdnsutil", "pdns_control")
POWERDNS_SCHEMA = Path("/usr/share/doc/pdns-backend-sqlite3/schema.sqlite3.sql")
POWERDNS_APT_PACKAGES = "pdns-server pdns-backend-sqlite3"
"""PowerDNS Authoritative 4.7 with its SQLite backend for `PowerDnsServer`."""

NOBODY = 65534
"""uid/gid the servers run as when the sandbox is started by root."""

PRIMARY_ADDRESS = "127.0.0.1"
SECONDARY_ADDRESS = "127.0.0.2"
START_TIMEOUT = 20.0
"""Seconds a server gets to come up (and, for named, to sign its zones)."""

PEBBLE_ENV = {"PEBBLE_VA_NOSLEEP": "1", "PEBBLE_AUTHZREUSE": "0", "PEBBLE_WFE_NONCEREJECT": "0"}

_POLL_INTERVAL = 0.05
_SECRET_RE = re.compile(r'secret\s+"([^"]+)"')


class SandboxError(Exception):
    """A sandbox server could not be prepared, started or asked something."""


@dataclass(frozen=True)
class TsigKey:
    """A TSIG key and the BIND key file (as `tsig-keygen` writes it, mode 0600) holding it."""

    name: str
    algorithm: str
    secret: str
    path: Path

    def as_dnspython(self) -> dns.tsig.Key:
        """Return the key as dnspython wants it for `dns.update.UpdateMessage(keyring=...)`."""
        return dns.tsig.Key(self.name, self.secret, self.algorithm)


@dataclass(frozen=True)
class ZoneSpec:
    """One zone served by the primary: its update policy, whether it is signed, extra records."""

    name: str
    update_policy: str
    signed: bool = True
    records: tuple[str, ...] = ()


def _zonesub_policy(key: str) -> str:
    """Grant `key` TXT and TLSA anywhere in the zone."""
    return f"grant {key} zonesub TXT TLSA;"


ALGORITHMS = ("hmac-md5", "hmac-sha1", "hmac-sha224", "hmac-sha256", "hmac-sha384", "hmac-sha512")
"""TSIG algorithms `tsig-keygen` makes: the sandbox has a key `alg-<algorithm>.` for each."""

CNAME_RECORDS = (
    "_25._tcp.alias CNAME _dane",
    "_dane TLSA 3 1 1 " + "cd" * 32,
    "_25._tcp.far CNAME _dane.elsewhere.test.",
)
"""A TLSA name that is a CNAME to a target in the zone (RFC 7671 §7), and one pointing out of every
zone the sandbox serves."""

MALFORMED_RECORDS = (
    "_25._tcp.bad TLSA 3 1 1 aabbccdd",
    "_25._tcp.bad TLSA 3 1 1 " + "ab" * 32,
)
"""A hand-added TLSA record with a digest of the wrong length (BIND, Knot and PowerDNS all accept
it; dnspython refuses to parse it) next to a good one."""

DUAL_ADDRESSES = ("127.0.0.21", "127.0.0.22")
"""dual.example.org's two A records: one host, two addresses (status checks each)."""

ODD_RECORDS = CNAME_RECORDS + MALFORMED_RECORDS
"""Records met in the wild, in the Knot and PowerDNS zones (named's example.org has the CNAMEs)."""

ZONES = (
    ZoneSpec("example.org", " ".join([_zonesub_policy("certbot-dane."),
                                      *(_zonesub_policy(f"alg-{a}.") for a in ALGORITHMS),
                                      "grant zone-admin. zonesub A MX;"]),  # the admin's (MTA-STS tests)
             records=("mx A 127.0.0.1", *(f"dual A {a}" for a in DUAL_ADDRESSES), *CNAME_RECORDS)),
    ZoneSpec("example.net", _zonesub_policy("certbot-dane.")),
    ZoneSpec("locked.example", "grant certbot-dane. name _acme-challenge.ok.locked.example. TXT;"),
    ZoneSpec("unsigned.example", _zonesub_policy("certbot-dane."), signed=False),
)
"""The primary's zones; each has NS ns1.<zone> with ns1.<zone> A 127.0.0.1."""

SECONDARY_ZONES = ("example.org", "example.net")
"""Zones the (lagging) secondary transfers from the primary."""


@dataclass(frozen=True)
class PolicyZone:
    """A primary zone on Knot or PowerDNS: what key certbot-dane. may change there, extra records.

    `update_types=()` grants the key nothing in the zone; `update_names` narrows the grant to
    these owner names (empty: anywhere in the zone); `loaded=False` configures the zone without
    any data, so that the server answers SERVFAIL for it (Knot); `signed=False` leaves it unsigned.
    """

    name: str
    update_types: tuple[str, ...] = ("TXT", "TLSA")
    records: tuple[str, ...] = ()
    loaded: bool = True
    signed: bool = True
    update_names: tuple[str, ...] = ()


KNOT_ZONES = (
    PolicyZone("knot.test", records=ODD_RECORDS),
    PolicyZone("knot-txt.test", update_types=("TXT",)),
    PolicyZone("knot-broken.test", loaded=False),
)
"""Knot's zones: TXT and TLSA granted; TXT only (a TLSA update is denied by the ACL); no data (SERVFAIL)."""

POWERDNS_ZONES = (
    PolicyZone("pdns.test", records=ODD_RECORDS),
    PolicyZone("pdns-txt.test", update_types=("TXT",)),
    PolicyZone("pdns-locked.test", update_types=()),
)
"""PowerDNS's zones. Zone metadata can only grant a key a whole zone: the TXT-only grant of
pdns-txt.test holds only with the Lua update policy (`PowerDnsServer(lua_policy=True)`)."""

SANDBOX_ZONES = (
    PolicyZone("example.org", records=("mx A 127.0.0.1", *CNAME_RECORDS)),
    PolicyZone("example.net"),
    PolicyZone("locked.example", update_types=("TXT",), update_names=("_acme-challenge.ok.locked.example.",)),
    PolicyZone("unsigned.example", signed=False),
)
"""named's ZONES on a Knot or PowerDNS primary of a `Sandbox`: the same names, the same grants
(TXT and TLSA anywhere; in locked.example TXT at one name only), so that one scenario runs on each."""

SERVER_KINDS = ("bind", "knot", "powerdns")
"""The DNS servers a `Sandbox` can run as its primary (and secondary)."""


def find_binary(name: str) -> Path | None:
    """Locate a program on PATH or in the sbin directories a non-root PATH often lacks."""
    search = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/bin", "/sbin"])
    found = shutil.which(name, path=search)
    return Path(found) if found else None


def missing_binaries(names: Sequence[str] = REQUIRED_BINARIES) -> list[str]:
    """Return the programs of `names` (default: REQUIRED_BINARIES) that are not installed."""
    return [name for name in names if find_binary(name) is None]


def _binary(name: str) -> str:
    """Return the path of a required program or raise naming the apt packages."""
    found = find_binary(name)
    if found is None:
        raise SandboxError(f"{name} not found: apt-get install {APT_PACKAGES}")
    return str(found)


def _running_as_root() -> bool:
    """True when the servers must drop privileges before they run."""
    return os.geteuid() == 0


def _launcher() -> list[str]:
    """Prefix that kills the child with its parent and, as root, drops to nobody."""
    setpriv = find_binary("setpriv")
    if setpriv is None:
        if _running_as_root():
            raise SandboxError("setpriv (util-linux) is needed to run servers unprivileged")
        return []
    prefix = [str(setpriv), "--pdeathsig", "TERM"]
    if _running_as_root():
        prefix += [f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
    return prefix


def _loopback_addresses() -> set[str]:
    """IPv4 addresses configured on `lo` (named listens only on interface addresses)."""
    output = subprocess.run(
        [_binary("ip"), "-4", "-o", "addr", "show", "dev", "lo"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return set(re.findall(r"inet (\d+\.\d+\.\d+\.\d+)/", output))


def ensure_loopback_address(address: str) -> None:
    """Put a 127/8 `address` on `lo` (as root) so that named can listen on it.

    Linux answers on all of 127.0.0.0/8, but named binds only to addresses it finds on an
    interface, and `lo` carries just 127.0.0.1 by default. The address is left in place:
    removing it could break a concurrent sandbox.
    """
    if not ipaddress.ip_address(address).is_loopback:
        raise SandboxError(f"{address} is not a loopback address")
    if address == PRIMARY_ADDRESS or address in _loopback_addresses():
        return
    if not _running_as_root():
        raise SandboxError(f"{address} is not on lo: run `ip addr add {address}/32 dev lo` as root")
    subprocess.run(
        [_binary("ip"), "addr", "add", f"{address}/32", "dev", "lo"],
        capture_output=True,
        text=True,
        check=False,
    )
    if address not in _loopback_addresses():
        raise SandboxError(f"could not add {address} to lo (needs CAP_NET_ADMIN)")


def _hand_over(directory: Path) -> None:
    """Make a directory tree writable by the unprivileged server user (no-op when not root)."""
    if not _running_as_root():
        return
    for path in [directory, *directory.rglob("*")]:
        os.chown(path, NOBODY, NOBODY)


def _write_private(path: Path, text: str) -> Path:
    """Write `text` to `path` with mode 0600 from the first byte on."""
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    return path


def _port_is_free(address: str, port: int, kind: socket.SocketKind) -> bool:
    """True when `address:port` can be bound for this socket kind right now."""
    with socket.socket(socket.AF_INET, kind) as probe:
        try:
            probe.bind((address, port))
        except OSError:
            return False
    return True


def free_port(addresses: Sequence[str], *, udp: bool = True, exclude: Iterable[int] = ()) -> int:
    """Return a port free for TCP (and UDP) on every one of `addresses` (all loopback)."""
    kinds = (socket.SOCK_STREAM, socket.SOCK_DGRAM) if udp else (socket.SOCK_STREAM,)
    excluded = set(exclude)
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind((addresses[0], 0))
            port = int(probe.getsockname()[1])
        if port in excluded:
            continue
        if all(_port_is_free(a, port, k) for a in addresses for k in kinds):
            return port
    raise SandboxError(f"no port free on {', '.join(addresses)}")


def generate_tsig_key(name: str, directory: Path, algorithm: str = "hmac-sha256") -> TsigKey:
    """Run `tsig-keygen` and keep its output verbatim in `directory/<name>key` (mode 0600)."""
    output = subprocess.run(
        [_binary("tsig-keygen"), "-a", algorithm, name],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    match = _SECRET_RE.search(output)
    if match is None:
        raise SandboxError(f"tsig-keygen wrote no secret for {name}")
    path = _write_private(directory / f"{name.rstrip('.')}.key", output)
    return TsigKey(name=name, algorithm=algorithm, secret=match.group(1), path=path)


def log_tail(path: Path, lines: int = 25) -> str:
    """Return the last lines of a server's log for an error message."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


def stop_process(process: subprocess.Popen[bytes] | None, grace: float = 10.0) -> None:
    """Terminate a child process and reap it, killing it if it ignores SIGTERM."""
    if process is None or process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _zone_file(zone: str, records: Sequence[str]) -> str:
    """Master file text: small TTLs, a refresh so large that secondaries lag, NS = ns1 only."""
    lines = [
        "$TTL 60",
        f"@ IN SOA ns1.{zone}. hostmaster.{zone}. 1 86400 3600 1209600 60",
        f"@ IN NS ns1.{zone}.",
        f"ns1 IN A {PRIMARY_ADDRESS}",
        *records,
    ]
    return "\n".join(lines) + "\n"


def _serial_newer_or_equal(serial: int, reference: int) -> bool:
    """RFC 1982 comparison: is `serial` at or after `reference`?"""
    return serial == reference or 0 < (serial - reference) % 2**32 < 2**31


class AuthoritativeServer:
    """One real authoritative DNS server process on address:port, asked over TCP without recursion.

    Subclasses write their files in `_prepare()`, give the command line in `_command()` and say
    in `_ready()` when every zone is served. The process runs in the workdir, unprivileged as root.
    A secondary (`primary` given) transfers its zones from that primary only when `retransfer()`
    asks it to (no NOTIFY, a one-day SOA refresh): it lags on purpose.
    """

    program = "server"
    """The server's program name, for the log file and for messages."""

    def __init__(self, label: str, address: str, port: int, workdir: Path, *,
                 primary: AuthoritativeServer | None = None) -> None:
        """Describe the server; nothing is written or started before `start()`."""
        self.label = label
        self.address = address
        self.port = port
        self.workdir = workdir
        self.primary = primary
        self.log = workdir / f"{self.program}.log"
        self._process: subprocess.Popen[bytes] | None = None

    def __repr__(self) -> str:
        """Name the server the way error messages do."""
        return f"<{type(self).__name__} {self}>"

    def __str__(self) -> str:
        """`label address:port`, as used in error messages."""
        return f"{self.label} {self.address}:{self.port}"

    @property
    def running(self) -> bool:
        """True while the server process is alive."""
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int:
        """The running server's process id (setpriv execs the server, so it is the child's pid)."""
        if self._process is None or self._process.poll() is not None:
            raise SandboxError(f"{self} is not running")
        return self._process.pid

    def start(self) -> None:
        """Start the server and return once it answers SOA (and is signed) for all its zones."""
        if self.running:
            return
        self._prepare()
        with self.log.open("ab") as log:
            self._process = subprocess.Popen(
                [*_launcher(), *self._command()],
                cwd=self.workdir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            self._wait_until_ready()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop the server; stopping a stopped server does nothing."""
        stop_process(self._process)
        self._process = None

    def query(self, name: str, rdtype: str, *, dnssec: bool = False) -> list[str]:
        """Ask this server (TCP, no RD) and return the sorted rdata texts of `name`/`rdtype`.

        NXDOMAIN and NODATA give an empty list; any other error rcode raises SandboxError.
        TXT texts keep their quotes (`'"token"'`), as dnspython prints them.
        """
        response = self._ask(name, rdtype, dnssec=dnssec)
        rcode = response.rcode()
        if rcode == dns.rcode.NXDOMAIN:
            return []
        if rcode != dns.rcode.NOERROR:
            raise SandboxError(f"{self}: {name} {rdtype}: {dns.rcode.to_text(rcode)}")
        wanted = dns.rdatatype.from_text(rdtype)
        return sorted(rdata.to_text() for rrset in response.answer if rrset.rdtype == wanted for rdata in rrset)

    def rrsigs(self, name: str, covered: str) -> list[str]:
        """Return the RRSIG texts over `name`/`covered` (asks with the DO bit)."""
        covered_type = dns.rdatatype.from_text(covered)
        response = self._ask(name, covered, dnssec=True)
        return sorted(
            rdata.to_text()
            for rrset in response.answer
            if rrset.rdtype == dns.rdatatype.RRSIG and rrset.covers == covered_type
            for rdata in rrset
        )

    def soa_serial(self, zone: str) -> int:
        """Return the SOA serial this server serves for `zone`."""
        records = self.query(zone, "SOA")
        if not records:
            raise SandboxError(f"{self}: no SOA for {zone}")
        return int(records[0].split()[2])

    def wait_for(
        self,
        name: str,
        rdtype: str,
        predicate: Callable[[list[str]], bool],
        timeout: float = 10,
    ) -> list[str]:
        """Poll `query(name, rdtype)` until `predicate` holds; return the records then."""
        deadline = time.monotonic() + timeout
        seen: object = None
        while True:
            try:
                seen = records = self.query(name, rdtype)
                if predicate(records):
                    return records
            except (dns.exception.DNSException, OSError, SandboxError) as err:
                seen = err
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self}: {name} {rdtype} after {timeout}s: last saw {seen!r}")
            time.sleep(_POLL_INTERVAL)

    def _ask(self, name: str, rdtype: str, *, dnssec: bool) -> dns.message.Message:
        """Send one non-recursive TCP query to this server."""
        request = dns.message.make_query(name, rdtype, want_dnssec=dnssec)
        request.flags &= ~dns.flags.RD
        return dns.query.tcp(request, self.address, port=self.port, timeout=2.0)

    def _serves(self, zones: Iterable[tuple[str, bool]]) -> bool:
        """True when each (zone, signed) answers SOA and each signed one shows DNSKEY and RRSIG(SOA)."""
        try:
            for zone, signed in zones:
                if not self.query(zone, "SOA"):
                    return False
                if signed and not (self.query(zone, "DNSKEY") and self.rrsigs(zone, "SOA")):
                    return False
        except (dns.exception.DNSException, OSError, SandboxError):
            return False
        return True

    def retransfer(self, zone: str, timeout: float = 10) -> None:
        """Secondary only: fetch `zone` from the primary now and wait until it has its serial.

        It transfers what the primary serves at the time of the call: after an UPDATE, first
        wait until the primary shows the change (inline signing applies it a moment later).
        """
        if self.primary is None:
            raise SandboxError(f"{self} is not a secondary")
        target = self.primary.soa_serial(zone)
        self._request_transfer(zone)
        self.wait_for(
            zone,
            "SOA",
            lambda records: bool(records) and _serial_newer_or_equal(int(records[0].split()[2]), target),
            timeout=timeout,
        )

    def _request_transfer(self, zone: str) -> None:
        """Ask this secondary's server to transfer `zone` from its primary now."""
        raise SandboxError(f"{self} cannot be asked for a zone transfer")

    def _wait_until_ready(self) -> None:
        """Poll until `_ready()`, failing fast with the server's log if it exits or never gets there."""
        deadline = time.monotonic() + START_TIMEOUT
        while not self._ready():
            if not self.running:
                raise SandboxError(f"{self}: {self.program} exited:\n{log_tail(self.log)}")
            if time.monotonic() > deadline:
                raise SandboxError(f"{self}: not ready after {START_TIMEOUT}s:\n{log_tail(self.log)}")
            time.sleep(_POLL_INTERVAL)

    def _prepare(self) -> None:
        """Write the configuration, keys and zones into the workdir, owned by the server user."""
        raise NotImplementedError

    def _command(self) -> list[str]:
        """The server's command line (run in the workdir)."""
        raise NotImplementedError

    def _ready(self) -> bool:
        """True once the server serves all its zones."""
        raise NotImplementedError


class NamedServer(AuthoritativeServer):
    """One real `named` process (primary or secondary) on address:port."""

    program = "named"

    def __init__(
        self,
        label: str,
        address: str,
        port: int,
        workdir: Path,
        *,
        zones: Sequence[ZoneSpec],
        control_port: int,
        keys: Sequence[TsigKey] = (),
        primary: NamedServer | None = None,
    ) -> None:
        """Describe the server; nothing is written or started before `start()`."""
        super().__init__(label, address, port, workdir, primary=primary)
        self.zones = tuple(zones)
        self.control_port = control_port
        self.keys = tuple(keys)

    def _command(self) -> list[str]:
        """named in the foreground, its config reached through /proc/self/cwd.

        named makes a relative -c absolute and reopens it through every parent directory,
        which the unprivileged user may not traverse (pytest's tmp dirs are 0700);
        /proc/self/cwd/ reaches the workdir without walking its parents.
        """
        return [_binary("named"), "-g", "-c", "/proc/self/cwd/named.conf"]

    def rndc(self, *args: str) -> str:
        """Run an rndc command over this server's loopback control channel; return its output."""
        result = subprocess.run(
            [_binary("rndc"), "-c", str(self.workdir / "rndc.conf"), *args],
            capture_output=True,
            text=True,
            timeout=30,
        )
        if result.returncode != 0:
            raise SandboxError(f"{self}: rndc {' '.join(args)}: {result.stderr.strip()}")
        return result.stdout

    def _request_transfer(self, zone: str) -> None:
        """`rndc retransfer`."""
        self.rndc("retransfer", zone)

    def _ready(self) -> bool:
        """True when every zone answers SOA and every signed zone shows DNSKEY and RRSIG(SOA)."""
        return self._serves((zone.name, zone.signed) for zone in self.zones)

    def _prepare(self) -> None:
        """Write config, keys and (once) zone files into the workdir, owned by the server user."""
        ensure_loopback_address(self.address)
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "keys").mkdir(exist_ok=True)
        for key in self.keys:
            shutil.copyfile(key.path, self.workdir / key.path.name)
            (self.workdir / key.path.name).chmod(0o600)
        if not (self.workdir / "rndc.key").exists():
            rndc_key = generate_tsig_key("rndc-key", self.workdir)
            (self.workdir / "rndc-key.key").rename(self.workdir / "rndc.key")
            _write_private(self.workdir / "rndc.conf", self._rndc_conf(rndc_key.secret))
        if self.primary is None:
            for zone in self.zones:
                zone_path = self.workdir / f"{zone.name}.zone"
                if not zone_path.exists():
                    zone_path.write_text(_zone_file(zone.name, zone.records), encoding="utf-8")
        (self.workdir / "named.conf").write_text(self._named_conf(), encoding="utf-8")
        _hand_over(self.workdir)

    def _rndc_conf(self, secret: str) -> str:
        """rndc client config talking to this server only."""
        return (
            f'key "rndc-key" {{ algorithm hmac-sha256; secret "{secret}"; }};\n'
            f'options {{ default-key "rndc-key"; default-server {self.address};'
            f" default-port {self.control_port}; }};\n"
        )

    def _named_conf(self) -> str:
        """named.conf with paths relative to the workdir (named runs with it as cwd)."""
        includes = "".join(f'include "{key.path.name}";\n' for key in self.keys)
        zones = "".join(self._zone_clause(zone) for zone in self.zones)
        return (
            f"options {{\n{self._options()}}};\n"
            f'{includes}include "rndc.key";\n'
            f"controls {{ inet {self.address} port {self.control_port}"
            f' allow {{ {self.address}; }} keys {{ "rndc-key"; }}; }};\n'
            f"{zones}"
        )

    def _options(self) -> str:
        """The options block: loopback only, no recursion, no NOTIFY, files in the workdir."""
        options = [
            'directory "."',
            'pid-file "named.pid"',
            'session-keyfile "session.key"',
            'lock-file "named.lock"',
            'managed-keys-directory "."',
            f"listen-on port {self.port} {{ {self.address}; }}",
            "listen-on-v6 { none; }",
            "recursion no",
            "dnssec-validation no",
            "notify no",
        ]
        if self.primary is None:
            options.append(f"allow-transfer {{ {SECONDARY_ADDRESS}; }}")
        else:
            options += [
                "allow-transfer { none; }",
                f"transfer-source {self.address}",
                f"notify-source {self.address}",
                f"query-source address {self.address}",
            ]
        return "".join(f"    {option};\n" for option in options)

    def _zone_clause(self, zone: ZoneSpec) -> str:
        """One zone statement: secondary of the primary, or a dynamic (maybe signed) primary."""
        if self.primary is not None:
            body = (
                f'type secondary; file "{zone.name}.db";'
                f" primaries port {self.primary.port} {{ {self.primary.address}; }};"
            )
        else:
            body = f'type primary; file "{zone.name}.zone"; update-policy {{ {zone.update_policy} }};'
            if zone.signed:
                body += ' key-directory "keys"; dnssec-policy default; inline-signing yes;'
        return f'zone "{zone.name}" {{ {body} }};\n'


def _require_searchable(directory: Path) -> None:
    """Raise unless the unprivileged server user can walk down to `directory` (no-op when not root)."""
    if not _running_as_root():
        return
    for path in [directory.resolve(), *directory.resolve().parents]:
        info = path.stat()
        if not (info.st_mode & stat.S_IXOTH or (info.st_uid == NOBODY and info.st_mode & stat.S_IXUSR)):
            raise SandboxError(f"{path} is not searchable by uid {NOBODY}, which the server runs as: "
                               "give it a directory made by tempfile.mkdtemp()")


def _zone_text(zone: PolicyZone, address: str) -> str:
    """Master file of a Knot/PowerDNS zone, with the origin spelled out."""
    text = _zone_file(zone.name, zone.records).replace(f"ns1 IN A {PRIMARY_ADDRESS}", f"ns1 IN A {address}")
    return f"$ORIGIN {zone.name}.\n{text}"


class KnotServer(AuthoritativeServer):
    """A real Knot DNS primary: DNSSEC-signed zones, TSIG, one update ACL per zone, loopback only.

    Every zone is signed by Knot (`dnssec-signing: on`, keys made at first start) unless its
    PolicyZone says `signed=False`. `key` may update the record types its PolicyZone grants, at the
    names it grants, and nothing else (`acl: action update, update-type, update-owner`);
    `other_keys` are known to the server and granted nothing. Only SECONDARY_ADDRESS may transfer
    the zones. With `primary` (another KnotServer), it is a secondary of that primary instead: it
    serves the zones it transferred as they are (signed by the primary), takes no updates, and
    transfers again only when `retransfer()` asks (`knotc zone-retransfer`).
    """

    program = "knotd"

    def __init__(
        self,
        label: str,
        address: str,
        port: int,
        workdir: Path,
        *,
        key: TsigKey,
        zones: Sequence[PolicyZone] = KNOT_ZONES,
        other_keys: Sequence[TsigKey] = (),
        primary: KnotServer | None = None,
    ) -> None:
        """Describe the server; nothing is written or started before `start()`."""
        super().__init__(label, address, port, workdir, primary=primary)
        self.key = key
        self.zones = tuple(zones)
        self.other_keys = tuple(other_keys)

    @staticmethod
    def missing() -> list[str]:
        """What this machine lacks to run Knot."""
        return missing_binaries(KNOT_BINARIES)

    def _command(self) -> list[str]:
        """knotd in the foreground."""
        return [_binary("knotd"), "-c", str(self.workdir / "knot.conf")]

    def _ready(self) -> bool:
        """True when every loaded zone answers SOA (and, when signed, DNSKEY and RRSIG(SOA))."""
        return self._serves((zone.name, zone.signed) for zone in self.zones if zone.loaded)

    def _request_transfer(self, zone: str) -> None:
        """`knotc zone-retransfer` over the control socket in the rundir."""
        result = subprocess.run(
            [_binary("knotc"), "-c", str(self.workdir / "knot.conf"), "zone-retransfer", zone],
            capture_output=True, text=True, timeout=30,
        )
        if result.returncode != 0:
            raise SandboxError(f"{self}: knotc zone-retransfer {zone}: {(result.stdout + result.stderr).strip()}")

    def _prepare(self) -> None:
        """Write knot.conf and (once, on a primary) the zone files; Knot keeps its journal, timers and keys in db/.

        Knot resolves the real path of its key store, so (unlike named) it cannot reach its files
        through /proc/self/cwd: the workdir's parents must be searchable by the server user (use a
        directory made by `tempfile.mkdtemp()`, not one of pytest's 0700 directories).
        """
        ensure_loopback_address(self.address)
        _require_searchable(self.workdir.parent)
        for directory in ("", "run", "db", "db/keys", "zones"):
            (self.workdir / directory).mkdir(parents=True, exist_ok=True)
        for zone in self.zones if self.primary is None else ():
            path = self.workdir / "zones" / f"{zone.name}.zone"
            if zone.loaded and not path.exists():
                path.write_text(_zone_text(zone, self.address), encoding="utf-8")
        _write_private(self.workdir / "knot.conf", self._config())
        _hand_over(self.workdir)

    def _config(self) -> str:
        """knot.conf: loopback listener, few threads, keys, a least-privilege ACL per zone, signing."""
        keys = "".join(
            f"  - id: {key.name}\n    algorithm: {key.algorithm}\n    secret: {key.secret}\n"
            for key in (self.key, *self.other_keys)
        )
        if self.primary is not None:
            remotes = (f"remote:\n  - id: primary\n    address: {self.primary.address}@{self.primary.port}\n"
                       f"    via: {self.address}\n")
            acls = ""
            zones = "".join(f"  - domain: {zone.name}\n    master: primary\n" for zone in self.zones if zone.loaded)
        else:
            remotes = ""
            acls = f"  - id: transfer\n    address: {SECONDARY_ADDRESS}\n    action: transfer\n" + "".join(
                f"  - id: update-{zone.name}\n    key: {self.key.name}\n    action: update\n"
                f"    update-type: [{', '.join(zone.update_types)}]\n"
                + (f"    update-owner: name\n    update-owner-match: equal\n"
                   f"    update-owner-name: [{', '.join(zone.update_names)}]\n" if zone.update_names else "")
                for zone in self.zones
                if zone.update_types
            )
            zones = "".join(
                f"  - domain: {zone.name}\n    dnssec-signing: {'on' if zone.signed else 'off'}\n"
                f"    acl: [transfer{f', update-{zone.name}' if zone.update_types else ''}]\n"
                for zone in self.zones
            )
        return (
            f"server:\n    rundir: {self.workdir / 'run'}\n"
            f"    listen: {self.address}@{self.port}\n"
            "    udp-workers: 1\n    tcp-workers: 1\n    background-workers: 1\n"
            f"database:\n    storage: {self.workdir / 'db'}\n"
            f"key:\n{keys}"
            + remotes
            + (f"acl:\n{acls}" if acls else "")
            + f"template:\n  - id: default\n    storage: {self.workdir / 'zones'}\n    file: \"%s.zone\"\n"
            "    zonefile-sync: 0\n    zonefile-load: whole\n    journal-content: changes\n"
            f"zone:\n{zones}"
        )


class PowerDnsServer(AuthoritativeServer):
    """A real PowerDNS Authoritative primary (gsqlite3): DNSSEC-signed zones, TSIG, loopback only.

    Updates are allowed per zone by metadata (TSIG-ALLOW-DNSUPDATE `key`, ALLOW-DNSUPDATE-FROM
    127.0.0.0/8; the global allow-dnsupdate-from is empty), which grants a whole zone. With
    `lua_policy=True` a lua-dnsupdate-policy-script decides instead (PowerDNS then ignores the
    metadata): `key` may change the types its PolicyZone grants, at the names it grants; PowerDNS
    drops anything else silently and still answers NOERROR. Only SECONDARY_ADDRESS may transfer
    the zones (`allow-axfr-ips`). With `primary` (another PowerDnsServer), it is a secondary
    (`secondary=yes`, zones made by `pdnsutil create-secondary-zone`): it serves the zones as it
    transferred them, signatures included (PowerDNS marks them PRESIGNED), takes no updates, and
    transfers again only when `retransfer()` asks (`pdns_control retrieve`).
    """

    program = "pdns_server"

    def __init__(
        self,
        label: str,
        address: str,
        port: int,
        workdir: Path,
        *,
        key: TsigKey,
        zones: Sequence[PolicyZone] = POWERDNS_ZONES,
        lua_policy: bool = False,
        other_keys: Sequence[TsigKey] = (),
        primary: PowerDnsServer | None = None,
        allow_dnsupdate_from: str = "",
    ) -> None:
        """Describe the server; nothing is written or started before `start()`.

        `allow_dnsupdate_from`: the global setting, empty by default (PowerDNS's own default,
        127.0.0.0/8,::1, lets a zone without TSIG-ALLOW-DNSUPDATE take any update from there).
        """
        super().__init__(label, address, port, workdir, primary=primary)
        self.key = key
        self.zones = tuple(zones)
        self.lua_policy = lua_policy
        self.other_keys = tuple(other_keys)
        self.allow_dnsupdate_from = allow_dnsupdate_from

    @staticmethod
    def missing() -> list[str]:
        """What this machine lacks to run PowerDNS with gsqlite3."""
        missing = missing_binaries(POWERDNS_BINARIES)
        return missing + ([str(POWERDNS_SCHEMA)] if not POWERDNS_SCHEMA.exists() else [])

    def _command(self) -> list[str]:
        """pdns_server in the foreground with the workdir as its config directory."""
        return [_binary("pdns_server"), f"--config-dir={self.workdir}"]

    def _ready(self) -> bool:
        """True when every loaded zone answers SOA (and, when signed, DNSKEY and RRSIG(SOA))."""
        return self._serves((zone.name, zone.signed) for zone in self.zones if zone.loaded)

    def _request_transfer(self, zone: str) -> None:
        """`pdns_control retrieve` over the control socket in the workdir."""
        result = subprocess.run(
            [_binary("pdns_control"), f"--config-dir={self.workdir}", "retrieve", zone],
            capture_output=True, text=True, timeout=30,
        )
        if result.returncode != 0:
            raise SandboxError(f"{self}: pdns_control retrieve {zone}: {(result.stdout + result.stderr).strip()}")

    def _prepare(self) -> None:
        """Write pdns.conf and (once) the database: zones loaded, signed and rectified, key and metadata.

        SQLite resolves the real path of its database: the workdir's parents must be searchable by
        the server user, as for Knot.
        """
        ensure_loopback_address(self.address)
        _require_searchable(self.workdir.parent)
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "pdns.conf").write_text(self._config(), encoding="utf-8")
        if self.lua_policy:
            (self.workdir / "update-policy.lua").write_text(self._policy_script(), encoding="utf-8")
        database = self.workdir / "pdns.sqlite3"
        if not database.exists():
            with contextlib.closing(sqlite3.connect(database)) as connection:
                connection.executescript(POWERDNS_SCHEMA.read_text(encoding="utf-8"))
            if self.primary is not None:
                source = f"{self.primary.address}:{self.primary.port}"
                for zone in self.zones:
                    if zone.loaded:
                        self._pdnsutil("create-secondary-zone", zone.name, source)
            else:
                self._load_zones()
        _hand_over(self.workdir)

    def _load_zones(self) -> None:
        """A primary's database: the key, then each zone loaded, signed, rectified, with its update metadata."""
        key = self.key.name.rstrip(".")
        for known in (self.key, *self.other_keys):
            self._pdnsutil("import-tsig-key", known.name.rstrip("."), known.algorithm, known.secret)
        for zone in self.zones:
            if not zone.loaded:
                continue
            path = self.workdir / f"{zone.name}.zone"
            path.write_text(_zone_text(zone, self.address), encoding="utf-8")
            self._pdnsutil("load-zone", zone.name, path.name)
            if zone.signed:
                self._pdnsutil("secure-zone", zone.name)
            self._pdnsutil("rectify-zone", zone.name)
            if zone.update_types:
                self._pdnsutil("set-meta", zone.name, "TSIG-ALLOW-DNSUPDATE", key)
                self._pdnsutil("set-meta", zone.name, "ALLOW-DNSUPDATE-FROM", "127.0.0.0/8")

    def _pdnsutil(self, *args: str) -> None:
        """Run pdnsutil on this server's database (before the server starts)."""
        result = subprocess.run(
            [_binary("pdnsutil"), f"--config-dir={self.workdir}", *args],
            cwd=self.workdir,
            capture_output=True,
            text=True,
            timeout=60,
        )
        if result.returncode != 0:
            secrets = {k.secret for k in (self.key, *self.other_keys)}
            shown = " ".join(a if a not in secrets else "<secret>" for a in args)
            raise SandboxError(f"{self}: pdnsutil {shown}: {result.stderr.strip()[-2000:]}")

    def _config(self) -> str:
        """pdns.conf: foreground, loopback, gsqlite3 with DNSSEC, updates only as the zone metadata allow."""
        lines = [
            "daemon=no",
            "guardian=no",
            "launch=gsqlite3",
            f"gsqlite3-database={self.workdir / 'pdns.sqlite3'}",
            "gsqlite3-dnssec=yes",
            f"local-address={self.address}",
            f"local-port={self.port}",
            f"allow-dnsupdate-from={self.allow_dnsupdate_from}",
            "security-poll-suffix=",
            f"socket-dir={self.workdir}",
            "receiver-threads=1",
            "distributor-threads=1",
            "loglevel=6",
        ]
        if self.primary is not None:
            lines += ["dnsupdate=no", "secondary=yes", f"query-local-address={self.address}",
                      "xfr-cycle-interval=1", "disable-axfr=yes"]
        else:
            lines += ["dnsupdate=yes", f"allow-axfr-ips={SECONDARY_ADDRESS}/32"]
        if self.lua_policy and self.primary is None:
            lines.append(f"lua-dnsupdate-policy-script={self.workdir / 'update-policy.lua'}")
        return "\n".join(lines) + "\n"

    def _policy_script(self) -> str:
        """The Lua update policy: `key` may change the types (at the names) its zone grants, nothing else anywhere."""

        def lua_set(items: Iterable[str]) -> str:
            return "{ " + ", ".join(f"[{item}] = true" for item in items) + " }"

        grants = "".join(
            f'  ["{zone.name}."] = {{ types = {lua_set(f"pdns.{t}" for t in zone.update_types)}, '
            f'names = {lua_set(json.dumps(n.lower()) for n in zone.update_names) if zone.update_names else "nil"} }},\n'
            for zone in self.zones
        )
        return (
            f"-- key {self.key.name}, from {PRIMARY_ADDRESS}, may change these types (at these names) in these zones\n"
            f"local grants = {{\n{grants}}}\n"
            "function updatepolicy(request)\n"
            f'  if request:getTsigName():toString() ~= "{self.key.name}" then return false end\n'
            f'  if request:getRemote():toString() ~= "{PRIMARY_ADDRESS}" then return false end\n'
            "  local grant = grants[string.lower(request:getZoneName():toString())]\n"
            "  if grant == nil or grant.types[request:getQType()] ~= true then return false end\n"
            "  return grant.names == nil or grant.names[string.lower(request:getQName():toString())] == true\n"
            "end\n"
        )


def _self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    """Write a self-signed cert/key for 127.0.0.1 and localhost; return (cert, key) paths."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    san = x509.SubjectAlternativeName(
        [x509.IPAddress(ipaddress.ip_address(PRIMARY_ADDRESS)), x509.DNSName("localhost")]
    )
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=365))
        .add_extension(san, critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path = directory / "tls-cert.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    key_path = _write_private(directory / "tls-key.pem", key_pem.decode("ascii"))
    return cert_path, key_path


def https_get(url: str, timeout: float = 2.0) -> bytes:
    """GET a loopback HTTPS URL without verifying the certificate and without any proxy."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=context))
    with opener.open(url, timeout=timeout) as response:
        body: bytes = response.read()
    return body


@dataclass
class Pebble:
    """Let's Encrypt's Pebble ACME server on 127.0.0.1, validating DNS-01 against `dns_server`."""

    workdir: Path
    dns_server: str
    port: int
    management_port: int
    http_port: int
    tls_port: int
    directory_url: str = field(init=False)
    management_url: str = field(init=False)
    log: Path = field(init=False)
    _process: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        """Derive the URLs and the log path."""
        self.directory_url = f"https://{PRIMARY_ADDRESS}:{self.port}/dir"
        self.management_url = f"https://{PRIMARY_ADDRESS}:{self.management_port}"
        self.log = self.workdir / "pebble.log"

    def start(self) -> None:
        """Start Pebble and return once its directory URL answers."""
        if self._process is not None and self._process.poll() is None:
            return
        config = self._write_config()
        with self.log.open("ab") as log:
            self._process = subprocess.Popen(
                [*_launcher(), _binary("pebble"), "-config", config.name, "-dnsserver", self.dns_server],
                cwd=self.workdir,
                env={**os.environ, **PEBBLE_ENV},
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            self._wait_until_ready()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop Pebble; stopping a stopped Pebble does nothing."""
        stop_process(self._process)
        self._process = None

    def root_pem(self) -> str:
        """Return the PEM of the root CA that signs this Pebble's certificates."""
        return https_get(f"{self.management_url}/roots/0").decode("ascii")

    def _write_config(self) -> Path:
        """Write Pebble's TLS certificate and JSON config into the workdir, owned by its user.

        Paths are relative: Pebble runs with the workdir as cwd, so it needs no access to the
        (possibly 0700) directories above it.
        """
        self.workdir.mkdir(parents=True, exist_ok=True)
        cert, key = _self_signed_certificate(self.workdir)
        settings = {
            "listenAddress": f"{PRIMARY_ADDRESS}:{self.port}",
            "managementListenAddress": f"{PRIMARY_ADDRESS}:{self.management_port}",
            "certificate": cert.name,
            "privateKey": key.name,
            "httpPort": self.http_port,
            "tlsPort": self.tls_port,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": False,
        }
        path = self.workdir / "pebble-config.json"
        path.write_text(json.dumps({"pebble": settings}, indent=2), encoding="utf-8")
        _hand_over(self.workdir)
        return path

    def _wait_until_ready(self) -> None:
        """Poll the directory URL, failing fast with Pebble's log if it exits."""
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                https_get(self.directory_url)
                return
            except (OSError, urllib.error.URLError):
                pass
            if self._process is None or self._process.poll() is not None:
                raise SandboxError(f"pebble exited:\n{log_tail(self.log)}")
            if time.monotonic() > deadline:
                raise SandboxError(f"pebble not ready after {START_TIMEOUT}s:\n{log_tail(self.log)}")
            time.sleep(_POLL_INTERVAL)


def _toml_string(value: str | Path) -> str:
    """A TOML basic string (JSON string syntax is a subset TOML accepts)."""
    return json.dumps(str(value))


def _toml_number(value: float) -> str:
    """A TOML integer when `value` is integral, else a float."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _toml_strings(values: Sequence[str]) -> str:
    """A TOML array of strings."""
    return "[" + ", ".join(_toml_string(v) for v in values) + "]"


def _certbot_executable() -> str:
    """The certbot installed next to this Python, else the one on PATH."""
    beside = Path(sys.executable).parent / "certbot"
    if beside.exists():
        return str(beside)
    found = shutil.which("certbot")
    if found is None:
        raise SandboxError("certbot not found next to the Python interpreter nor on PATH")
    return found


class Sandbox:
    """A primary (named, Knot or PowerDNS), an optional lagging secondary of the same kind and Pebble,
    under one base dir; context manager.

    Whatever the server, the primary serves the same zones (ZONES / SANDBOX_ZONES: example.org,
    example.net, locked.example, unsigned.example), DNSSEC-signed but for unsigned.example, on
    loopback, and `key` may change TXT and TLSA records only (in locked.example one TXT name only):
    BIND by `update-policy`, Knot by an ACL per zone, PowerDNS by a Lua update policy.
    `intruder_key` is known to the server and granted nothing. The secondary (127.0.0.2, same
    port) serves example.org and example.net and transfers them only when asked (`retransfer`).
    """

    def __init__(self, base: Path, *, server: str = "bind", secondary: bool = False, pebble: bool = True) -> None:
        """Generate keys and pick free ports under `base`; start nothing yet."""
        if server not in SERVER_KINDS:
            raise SandboxError(f"unknown DNS server {server!r}: one of {', '.join(SERVER_KINDS)}")
        self.kind = server
        self.base = Path(base).resolve()
        self.base.mkdir(parents=True, exist_ok=True)
        addresses = [PRIMARY_ADDRESS, SECONDARY_ADDRESS] if secondary else [PRIMARY_ADDRESS]
        self.port = free_port(addresses)
        taken = {self.port}
        keydir = self.base / "keys"
        keydir.mkdir(mode=0o700, exist_ok=True)
        self.key = generate_tsig_key("certbot-dane.", keydir)
        self.intruder_key = generate_tsig_key("intruder.", keydir)
        self.algorithm_keys = {a: generate_tsig_key(f"alg-{a}.", keydir, a) for a in ALGORITHMS}
        """One key per TSIG algorithm, each granted TXT and TLSA in example.org (BIND only)."""
        self.admin_key = generate_tsig_key("zone-admin.", keydir)
        """The admin's key: A and MX records in example.org (BIND only), what certbot-dane's key may not change."""
        self._serverdir: Path | None = None
        self.primary: AuthoritativeServer
        self.secondary: AuthoritativeServer | None = None
        if server == "bind":
            keys = (self.key, self.intruder_key, *self.algorithm_keys.values(), self.admin_key)
            self.primary = NamedServer("primary", PRIMARY_ADDRESS, self.port, self.base / "primary", zones=ZONES,
                                       control_port=self._pick([PRIMARY_ADDRESS], taken), keys=keys)
            if secondary:
                self.secondary = NamedServer(
                    "secondary", SECONDARY_ADDRESS, self.port, self.base / "secondary",
                    zones=[zone for zone in ZONES if zone.name in SECONDARY_ZONES],
                    control_port=self._pick([SECONDARY_ADDRESS], taken), keys=keys, primary=self.primary)
        else:
            self.primary, self.secondary = self._policy_servers(server, secondary)
        self.pebble: Pebble | None = None
        if pebble:
            ports = [self._pick([PRIMARY_ADDRESS], taken) for _ in range(4)]
            self.pebble = Pebble(self.base / "pebble", f"{PRIMARY_ADDRESS}:{self.port}", *ports)

    def _policy_servers(self, server: str, secondary: bool) -> tuple[AuthoritativeServer, AuthoritativeServer | None]:
        """A Knot or PowerDNS primary (and secondary) serving SANDBOX_ZONES.

        Knot and SQLite resolve the real paths of their files, so their workdirs live in a directory
        of their own under the system's temp dir (searchable by the server user), linked from `base`
        and removed by `close()`.
        """
        self._serverdir = Path(tempfile.mkdtemp(prefix=f"certbot-dane-{server}-"))
        self._serverdir.chmod(0o755)
        workdirs = {}
        for role in ("primary", "secondary"):
            workdirs[role] = self._serverdir / role
            link = self.base / role
            if not link.exists():
                link.symlink_to(workdirs[role], target_is_directory=True)
        secondary_zones = [zone for zone in SANDBOX_ZONES if zone.name in SECONDARY_ZONES]
        if server == "knot":
            knot = KnotServer("primary", PRIMARY_ADDRESS, self.port, workdirs["primary"], key=self.key,
                              zones=SANDBOX_ZONES, other_keys=(self.intruder_key,))
            return knot, KnotServer("secondary", SECONDARY_ADDRESS, self.port, workdirs["secondary"], key=self.key,
                                    zones=secondary_zones, primary=knot) if secondary else None
        pdns = PowerDnsServer("primary", PRIMARY_ADDRESS, self.port, workdirs["primary"], key=self.key,
                              zones=SANDBOX_ZONES, other_keys=(self.intruder_key,), lua_policy=True)
        return pdns, PowerDnsServer("secondary", SECONDARY_ADDRESS, self.port, workdirs["secondary"], key=self.key,
                                    zones=secondary_zones, primary=pdns) if secondary else None

    @staticmethod
    def _pick(addresses: Sequence[str], taken: set[int]) -> int:
        """Pick a free TCP port not handed out yet and remember it."""
        port = free_port(addresses, udp=False, exclude=taken)
        taken.add(port)
        return port

    @property
    def servers(self) -> list[AuthoritativeServer]:
        """The DNS servers: the primary, then the secondary if any."""
        return [self.primary] + ([self.secondary] if self.secondary else [])

    @property
    def nameservers(self) -> list[str]:
        """`address:port` of every DNS server, for `write_config(nameservers=...)`."""
        return [f"{server.address}:{server.port}" for server in self.servers]

    def start(self) -> None:
        """Start the primary (signed), then the secondary (transferred), then Pebble."""
        try:
            for server in self.servers:
                server.start()
            if self.pebble is not None:
                self.pebble.start()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop every server; idempotent."""
        if self.pebble is not None:
            self.pebble.stop()
        for server in reversed(self.servers):
            server.stop()

    def close(self) -> None:
        """Stop every server and remove the Knot/PowerDNS working directories outside `base`."""
        self.stop()
        if self._serverdir is not None:
            shutil.rmtree(self._serverdir, ignore_errors=True)

    def __enter__(self) -> Sandbox:
        """Start everything."""
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Stop everything and clean up."""
        self.close()

    def certbot_command(self, *args: str) -> list[str]:
        """The real certbot's argv against this sandbox's Pebble, dirs under base/certbot.

        `--no-random-sleep-on-renew` is always passed: with no terminal on stdin, `certbot renew`
        would otherwise sleep up to 8 minutes before renewing.
        """
        if self.pebble is None:
            raise SandboxError("this sandbox has no Pebble")
        home = self.base / "certbot"
        return [
            _certbot_executable(),
            *args,
            "--server",
            self.pebble.directory_url,
            "--no-verify-ssl",
            "--config-dir",
            str(home / "config"),
            "--work-dir",
            str(home / "work"),
            "--logs-dir",
            str(home / "logs"),
            "--register-unsafely-without-email",
            "--no-random-sleep-on-renew",
            "--agree-tos",
            "--non-interactive",
        ]

    def certbot_env(self, env: dict[str, str] | None = None) -> dict[str, str]:
        """The environment for certbot: ours, no proxy for loopback, plus `env`."""
        no_proxy = "127.0.0.1,localhost"
        return {**os.environ, "NO_PROXY": no_proxy, "no_proxy": no_proxy, **(env or {})}

    def certbot(
        self, *args: str, env: dict[str, str] | None = None, check: bool = False, timeout: float = 300
    ) -> subprocess.CompletedProcess[str]:
        """Run the real certbot (see certbot_command) and capture its output."""
        return subprocess.run(
            self.certbot_command(*args),
            env=self.certbot_env(env),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            check=check,
            timeout=timeout,
        )

    def write_config(
        self,
        path: Path,
        *,
        lineages: dict[str, list[str]] | None = None,
        nameservers: list[str] | None = None,
        timeout: float = 10,
        extra: str = "",
        dns_extra: str = "",
        state_dir: Path | None = None,
        deploy_dir: Path | None = None,
        lineage_extra: str = "",
        letsencrypt_dir: Path | None = None,
        status_extra: str = 'resolver = "none"',
    ) -> Path:
        """Write a certbot-dane TOML config for this sandbox (mode 0600) and return its path.

        `extra` goes after the top-level keys, before `[dns]` (top-level keys or whole tables);
        `dns_extra` goes inside `[dns]`; `lineage_extra` inside every `[lineage."..."]` table;
        `status_extra` inside `[status]` (by default no resolver: the machine's own is not on loopback).
        `state_dir`/`deploy_dir` default to base/state and base/live; `letsencrypt_dir` is
        certbot's config dir of this sandbox.
        """
        lines = [
            f"state_dir = {_toml_string(state_dir or self.base / 'state')}",
            f"deploy_dir = {_toml_string(deploy_dir or self.base / 'live')}",
            f"letsencrypt_dir = {_toml_string(letsencrypt_dir or self.base / 'certbot' / 'config')}",
            *([extra.strip()] if extra.strip() else []),
            "",
            "[dns]",
            f"server = {_toml_string(PRIMARY_ADDRESS)}",
            f"port = {self.port}",
            f"key_file = {_toml_string(self.key.path)}",
            f"timeout = {_toml_number(timeout)}",
        ]
        if nameservers is not None:
            lines.append(f"nameservers = {_toml_strings(nameservers)}")
        if dns_extra.strip():
            lines.append(dns_extra.strip())
        if status_extra.strip():
            lines += ["", "[status]", status_extra.strip()]
        for domain, tlsa_names in (lineages or {}).items():
            lines += ["", f"[lineage.{_toml_string(domain)}]", f"tlsa = {_toml_strings(tlsa_names)}"]
            if lineage_extra.strip():
                lines.append(lineage_extra.strip())
        return _write_private(Path(path), "\n".join(lines) + "\n")
