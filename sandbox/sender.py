"""A real DANE-validating sender on loopback: Unbound resolving, Postfix receiving, posttls-finger probing.

Unbound validates the sandbox's signed zone from a trust anchor (its KSK) and caches as any resolver
does; Postfix receives on its own loopback address, serving the certificate certbot-dane deploys;
posttls-finger, Postfix's own DANE client, asks Unbound (through a resolv.conf bind-mounted in a
private mount namespace, so the machine's own resolver configuration is never touched) and says
whether the certificate it was shown matches the TLSA records it was given.
"""

from __future__ import annotations

import bisect
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import dns.exception
import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype

from sandbox.servers import (
    NOBODY,
    PRIMARY_ADDRESS,
    AuthoritativeServer,
    SandboxError,
    ensure_loopback_address,
    find_binary,
    free_port,
    log_tail,
    stop_process,
)

SENDER_BINARIES = ("unbound", "postfix", "postconf", "posttls-finger", "unshare", "mount", "setpriv")
"""Programs the sender needs: Debian's unbound and postfix (which ships posttls-finger), util-linux, mount."""

SENDER_APT_PACKAGES = "unbound postfix util-linux mount"
"""What `apt-get install` needs to provide SENDER_BINARIES."""

PROBE_INTERVAL = 0.5
"""Seconds between the starts of two probes."""

START_TIMEOUT = 20.0
"""Seconds Unbound or Postfix gets to come up."""

VERIFIED, NO_TLSA, FAILED = "verified", "no-tlsa", "failed"
"""Probe outcomes: the certificate matched a TLSA record; there were no TLSA records (DANE not in play,
a sender delivers by its non-DANE policy); anything else (a DANE sender defers the mail)."""

_POLL = 0.05


def classify(output: str) -> str:
    """The outcome of one posttls-finger run from its output (`-l dane-only`, default logging)."""
    if "Verified TLS connection established" in output:
        return VERIFIED
    if "no TLSA records found" in output:
        return NO_TLSA
    return FAILED


def pick_address(ports: Sequence[int] = (53,)) -> str:
    """A 127.0.93.x address on `lo` whose `ports` are free (TCP and UDP), added to `lo` if needed.

    Unbound must listen on port 53 (resolv.conf names no port); concurrent test runs each get their own
    address.
    """
    for last in range(53, 254):
        address = f"127.0.93.{last}"
        if all(_free(address, port, kind) for port in ports for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM)):
            ensure_loopback_address(address)
            return address
    raise SandboxError("no 127.0.93.x address with free ports " + ", ".join(map(str, ports)))


def smtp_port(address: str) -> int:
    """25 when it is free on `address`, else a free port (a Postfix listening on *:25 takes 25 everywhere)."""
    return 25 if _free(address, 25, socket.SOCK_STREAM) else free_port([address], udp=False)


def _free(address: str, port: int, kind: socket.SocketKind) -> bool:
    with socket.socket(socket.AF_INET, kind) as probe:  # no SO_REUSEADDR: UDP would then share a bound port
        try:
            probe.bind((address, port))
        except OSError:
            return False
    return True


def zone_file(zone: str, records: Sequence[str], negative_ttl: int) -> str:
    """A master file for a zone whose denials (NODATA, NXDOMAIN, NSEC) are cached for `negative_ttl` s.

    The sandbox's zones cache denials for 60 s; a sender's resolver that asked for the TLSA RRset before
    the first certificate then sees it a minute later. Write this into the primary's workdir before it
    starts (named writes a zone file only when there is none).
    """
    return "\n".join([
        "$TTL 60",
        f"@ IN SOA ns1.{zone}. hostmaster.{zone}. 1 86400 3600 1209600 {negative_ttl}",
        f"@ IN NS ns1.{zone}.",
        f"ns1 IN A {PRIMARY_ADDRESS}",
        *records,
    ]) + "\n"


def _binary(name: str) -> str:
    found = find_binary(name)
    if found is None:
        raise SandboxError(f"{name} not found: apt-get install {SENDER_APT_PACKAGES}")
    return str(found)


def _unprivileged() -> list[str]:
    """Prefix that kills the child with its parent and, as root, runs it as nobody allowed to bind port 53."""
    prefix = [_binary("setpriv"), "--pdeathsig", "TERM"]
    if os.geteuid() == 0:
        prefix += [f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
                   "--inh-caps=+net_bind_service", "--ambient-caps=+net_bind_service"]
    return prefix


def _wait(ready: Callable[[], bool], process: subprocess.Popen[bytes] | None, what: str, log: Path) -> None:
    """Poll `ready()` until it holds; fail with the log if the process exits or the deadline passes."""
    deadline = time.monotonic() + START_TIMEOUT
    while not ready():
        if process is not None and process.poll() is not None:
            raise SandboxError(f"{what} exited:\n{log_tail(log)}")
        if time.monotonic() > deadline:
            raise SandboxError(f"{what} not ready after {START_TIMEOUT}s:\n{log_tail(log)}")
        time.sleep(_POLL)


class Resolver:
    """Unbound as a sender's validating, caching resolver on `address`:53 (default caching, no prefetch,
    no serve-expired: it holds each RRset for its TTL), with a stub zone to the primary and the zone's
    KSK as trust anchor. Every other name goes to a stub on a closed loopback port: nothing leaves the host.
    """

    def __init__(self, workdir: Path, address: str, zone: str, primary: AuthoritativeServer) -> None:
        """Describe the resolver; nothing is written or started before `start()`."""
        self.workdir, self.address, self.zone, self.primary = workdir, address, zone.rstrip("."), primary
        self.log = workdir / "unbound.log"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Write the config (trust anchor from the primary's DNSKEY 257 records) and start Unbound."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.workdir.chmod(0o755)  # Unbound reads its config as nobody (through its cwd, set before it drops root)
        anchors = [k for k in self.primary.query(self.zone, "DNSKEY") if k.split()[0] == "257"]
        if not anchors:
            raise SandboxError(f"{self.primary}: no DNSKEY 257 for {self.zone}")
        config = self.workdir / "unbound.conf"
        config.write_text(self._config(anchors), encoding="utf-8")
        with self.log.open("ab") as log:
            self._process = subprocess.Popen(
                [*_unprivileged(), _binary("unbound"), "-d", "-c", config.name],
                cwd=self.workdir, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        try:
            _wait(self._validates, self._process, f"unbound on {self.address}", self.log)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop Unbound; idempotent."""
        stop_process(self._process)
        self._process = None

    def ask(self, name: str, rdtype: str) -> dns.message.Message:
        """One recursive query to Unbound, as a stub resolver sends it (RD, DO)."""
        request = dns.message.make_query(name, rdtype, want_dnssec=True)
        return dns.query.udp(request, self.address, port=53, timeout=2.0)

    def cached_ttl(self, name: str, rdtype: str) -> int | None:
        """The TTL Unbound gives for `name`/`rdtype` now (its remaining cache time), None if no RRset."""
        wanted = dns.rdatatype.from_text(rdtype)
        for rrset in self.ask(name, rdtype).answer:
            if rrset.rdtype == wanted:
                return int(rrset.ttl)
        return None

    def _validates(self) -> bool:
        try:
            response = self.ask(self.zone, "SOA")
        except (dns.exception.DNSException, OSError):
            return False
        return response.rcode() == dns.rcode.NOERROR and bool(response.flags & dns.flags.AD)

    def _config(self, anchors: list[str]) -> str:
        """unbound.conf: loopback only, validating from the anchor, defaults for everything cached."""
        lines = [
            "server:",
            f"  interface: {self.address}",
            "  port: 53",
            "  do-ip6: no",
            "  do-not-query-localhost: no",
            f"  access-control: {self.address}/32 allow",
            "  access-control: 127.0.0.0/8 allow",
            '  username: ""',  # started unprivileged: it never changes user (which would cancel --pdeathsig)
            '  chroot: ""',
            '  directory: "."',
            '  pidfile: ""',
            "  use-syslog: no",
            '  logfile: ""',
            "  verbosity: 1",
            "  val-log-level: 2",
            "  num-threads: 1",
            "  trust-anchor-signaling: no",
            *(f'  trust-anchor: "{self.zone}. DNSKEY {key}"' for key in anchors),
            "stub-zone:",
            f'  name: "{self.zone}"',
            f"  stub-addr: {self.primary.address}@{self.primary.port}",
            "stub-zone:",  # anything else: a closed loopback port, never the Internet
            '  name: "."',
            "  stub-addr: 127.0.0.1@9",
            "remote-control:",
            "  control-enable: no",
        ]
        return "\n".join(lines) + "\n"


class Receiver:
    """Postfix's smtpd on `address`:`port`, serving `chain_file` (key + chain, as certbot-dane's
    combined.pem) with STARTTLS; its own config, queue and log in a directory Postfix's user can reach.

    The master runs in the foreground, in a session of its own (its SIGTERM then stops its children too).
    It changes credentials, which cancels a parent-death signal: `lifetime` (`master -e`) bounds how long
    one whose test died without stopping it lives on. `reload_command` is what a lineage's `reload` runs.
    """

    def __init__(self, address: str, chain_file: Path, *, port: int = 25, hostname: str = "mx.example.org",
                 lifetime: int = 900) -> None:
        """Describe the receiver and make its (empty) working directory; nothing is started yet."""
        self.address, self.port, self.chain_file, self.hostname = address, port, chain_file, hostname
        self.lifetime = lifetime
        self.workdir = Path(tempfile.mkdtemp(prefix="certbot-dane-postfix-"))
        self.workdir.chmod(0o755)  # the queue must be reachable by the postfix user
        self.config_dir = self.workdir / "conf"
        self.log = self.workdir / "maillog"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def reload_command(self) -> str:
        """The shell-free command that makes Postfix load its certificate again."""
        return f"{_binary('postfix')} -c {self.config_dir} reload"

    def start(self) -> None:
        """Write main.cf and master.cf, create the queue (`postfix check`), run master in the foreground."""
        ensure_loopback_address(self.address)
        self.config_dir.mkdir(exist_ok=True)
        (self.workdir / "queue").mkdir(exist_ok=True)
        data = self.workdir / "data"
        data.mkdir(exist_ok=True)
        if os.geteuid() == 0:
            os.chown(data, _postfix_uid(), -1)
        (self.config_dir / "main.cf").write_text(self._main_cf(), encoding="utf-8")
        (self.config_dir / "master.cf").write_text(self._master_cf(), encoding="utf-8")
        self.postfix("check")
        daemons = subprocess.run([_binary("postconf"), "-c", str(self.config_dir), "-h", "daemon_directory"],
                                 capture_output=True, text=True, check=True).stdout.strip()
        with (self.workdir / "master.out").open("ab") as out:
            self._process = subprocess.Popen(
                [f"{daemons}/master", "-d", "-e", str(self.lifetime), "-c", str(self.config_dir)],
                cwd=self.workdir, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True)
        try:
            _wait(self._greets, self._process, f"postfix on {self.address}:{self.port}", self.log)
        except BaseException:
            self.stop()
            raise

    def postfix(self, *args: str) -> str:
        """Run `postfix -c DIR ARGS`; SandboxError with its output (and the log) if it fails."""
        done = subprocess.run([_binary("postfix"), "-c", str(self.config_dir), *args],
                              capture_output=True, text=True, timeout=60, check=False)
        if done.returncode != 0:
            raise SandboxError(f"postfix {' '.join(args)} exited {done.returncode}: "
                               f"{(done.stdout + done.stderr).strip()}\n{log_tail(self.log)}")
        return done.stdout + done.stderr

    def serve(self, chain_file: Path) -> None:
        """Point smtpd_tls_chain_files at another file and reload (what an admin does by hand)."""
        self.chain_file = chain_file
        (self.config_dir / "main.cf").write_text(self._main_cf(), encoding="utf-8")
        self.postfix("reload")

    def stop(self) -> None:
        """Stop master and its children; idempotent."""
        stop_process(self._process)
        self._process = None

    def remove(self) -> None:
        """Delete the working directory (config, queue, log)."""
        shutil.rmtree(self.workdir, ignore_errors=True)

    def _greets(self) -> bool:
        try:
            with socket.create_connection((self.address, self.port), timeout=2.0) as sock:
                return sock.recv(4).startswith(b"220")
        except OSError:
            return False

    def _main_cf(self) -> str:
        settings = {
            "compatibility_level": "3.6",
            "queue_directory": self.workdir / "queue",
            "data_directory": self.workdir / "data",
            "myhostname": self.hostname,
            "mydestination": "",
            "inet_interfaces": self.address,
            "inet_protocols": "ipv4",
            "mynetworks": "127.0.0.0/8",
            "alias_maps": "",
            "alias_database": "",
            "local_recipient_maps": "",
            "maillog_file": self.log,
            "maillog_file_prefixes": self.workdir,
            "smtpd_tls_chain_files": self.chain_file,
            "smtpd_tls_security_level": "may",
            "smtpd_tls_loglevel": "1",
        }
        return "".join(f"{key} = {value}\n" for key, value in settings.items())

    def _master_cf(self) -> str:
        services = [
            f"{self.address}:{self.port} inet n - n - - smtpd",
            "anvil unix - - n - 1 anvil",
            "tlsmgr unix - - n 1000? 1 tlsmgr",
            "rewrite unix - - n - - trivial-rewrite",
            "cleanup unix n - n - 0 cleanup",
            "qmgr unix n - n 300 1 qmgr",
            "bounce unix - - n - 0 bounce",
            "defer unix - - n - 0 bounce",
            "trace unix - - n - 0 bounce",
            "error unix - - n - - error",
            "retry unix - - n - - error",
            "discard unix - - n - - discard",
            "proxymap unix - - n - - proxymap",
            "scache unix - - n - 1 scache",
            "postlog unix-dgram n - n - 1 postlogd",
        ]
        return "\n".join(services) + "\n"


def _postfix_uid() -> int:
    try:
        return pwd.getpwnam("postfix").pw_uid
    except KeyError:
        return NOBODY


@dataclass(frozen=True)
class Probe:
    """One posttls-finger run: when it started (time.monotonic()), its outcome and what it said."""

    started: float
    outcome: str
    output: str


class Prober:
    """posttls-finger against `destination` every PROBE_INTERVAL seconds in a background thread.

    Each run is a fresh process in a private mount namespace where /etc/resolv.conf names the resolver
    (`options edns0 trust-ad`: glibc passes the AD bit on only then), so only it sees that file.
    `-l dane-only` is a sender that insists on DANE where TLSA records exist; it also makes
    posttls-finger say so when there are none.
    """

    def __init__(self, workdir: Path, resolver: str, destination: str, interval: float = PROBE_INTERVAL) -> None:
        """Write the resolv.conf and the sender's (empty) main.cf; start nothing yet."""
        workdir.mkdir(parents=True, exist_ok=True)
        self.resolv_conf = workdir / "resolv.conf"
        self.resolv_conf.write_text(f"nameserver {resolver}\noptions edns0 trust-ad\n", encoding="utf-8")
        self.config_dir = workdir / "sender"
        self.config_dir.mkdir(exist_ok=True)
        (self.config_dir / "main.cf").write_text("compatibility_level = 3.6\n", encoding="utf-8")
        self.destination, self.interval = destination, interval
        self._probes: list[Probe] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def command(self) -> list[str]:
        """The argv of one probe: unshare, bind-mount resolv.conf, exec posttls-finger."""
        unshare = [_binary("unshare"), "--mount"] + ([] if os.geteuid() == 0 else ["--map-root-user"])
        script = 'mount --bind "$0" /etc/resolv.conf && exec "$@"'
        return [*unshare, "/bin/sh", "-c", script, str(self.resolv_conf),
                _binary("posttls-finger"), "-t", "5", "-T", "10", "-c", "-l", "dane-only", "-a", "ipv4",
                self.destination]

    def probe(self) -> Probe:
        """Run posttls-finger once and classify what it said."""
        started = time.monotonic()
        try:
            done = subprocess.run(self.command(), capture_output=True, text=True, timeout=30, check=False,
                                  env={**os.environ, "MAIL_CONFIG": str(self.config_dir)})
            output = done.stdout + done.stderr
        except subprocess.TimeoutExpired as err:
            output = f"posttls-finger: no answer within {err.timeout} s"
        return Probe(started, classify(output), output)

    def start(self) -> None:
        """Start probing in the background."""
        self._thread = threading.Thread(target=self._run, name="posttls-finger", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop probing and wait for the probe in flight."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join()

    def __enter__(self) -> Prober:
        """Start probing."""
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        """Stop probing."""
        self.stop()

    @property
    def probes(self) -> list[Probe]:
        """Every probe so far, oldest first."""
        with self._lock:
            return list(self._probes)

    def wait_until(self, condition: Callable[[list[Probe]], bool], what: str, timeout: float = 30) -> None:
        """Poll the probes until `condition(probes)` holds; AssertionError naming `what` after `timeout` s."""
        deadline = time.monotonic() + timeout
        while not condition(self.probes):
            if self._thread is None or not self._thread.is_alive():
                raise AssertionError(f"the prober stopped before {what}")
            if time.monotonic() > deadline:
                raise AssertionError(f"no {what} within {timeout} s; last probe: {self._last()}")
            time.sleep(_POLL)

    def _last(self) -> str:
        probes = self.probes
        return probes[-1].output.strip() if probes else "(none)"

    def _run(self) -> None:
        next_at = time.monotonic()
        while not self._stopping.is_set():
            found = self.probe()
            with self._lock:
                self._probes.append(found)
            next_at = max(next_at + self.interval, time.monotonic())
            self._stopping.wait(next_at - time.monotonic())


class Timeline:
    """Phases as marks on the monotonic clock; a probe belongs to the phase in force when it started.

    Marks may be set after the fact (`at=` a past moment: the start of the run that turned out to
    deploy) or ahead (`at=` a future moment: one TTL after a retire).
    """

    def __init__(self) -> None:
        """An empty timeline: probes before the first mark belong to no phase ('')."""
        self._marks: list[tuple[float, int, str]] = []
        self.order: list[str] = []

    def mark(self, phase: str, at: float | None = None) -> float:
        """`phase` starts at `at` (default: now); return that moment."""
        moment = time.monotonic() if at is None else at
        bisect.insort(self._marks, (moment, len(self._marks), phase))
        if phase not in self.order:
            self.order.append(phase)
        return moment

    def phase(self, moment: float) -> str:
        """The phase in force at `moment`."""
        index = bisect.bisect_right(self._marks, (moment, len(self._marks) + 1, "")) - 1
        return self._marks[index][2] if index >= 0 else ""

    def tally(self, probes: Sequence[Probe]) -> dict[str, Counter[str]]:
        """Per phase (in the order phases were first marked), how many probes had each outcome."""
        counts: dict[str, Counter[str]] = {phase: Counter() for phase in self.order}
        for found in probes:
            counts.setdefault(self.phase(found.started), Counter())[found.outcome] += 1
        return counts

    def in_phase(self, probes: Sequence[Probe], phase: str) -> list[Probe]:
        """The probes that started during `phase`."""
        return [p for p in probes if self.phase(p.started) == phase]


_LETTERS = {VERIFIED: "v", NO_TLSA: "-", FAILED: "X"}


def report(timeline: Timeline, probes: Sequence[Probe]) -> str:
    """One line per phase: verified / no TLSA / failed, then the outcomes in order (v, -, X)."""
    counts = timeline.tally(probes)
    width = max((len(phase) for phase in counts), default=0)
    return "\n".join(
        f"{phase:<{width}}  {c[VERIFIED]:3d} verified  {c[NO_TLSA]:3d} no TLSA  {c[FAILED]:3d} failed  "
        + "".join(_LETTERS[p.outcome] for p in timeline.in_phase(probes, phase))
        for phase, c in counts.items())
