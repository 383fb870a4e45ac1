"""A lineage under test on the real sandbox: its config, certbot runs and deploy-hook deliveries, the rollover
run in-process with an injected clock, and what DNS and disk hold. The one module of shared test helpers.

Two ways to get a certificate to certbot-dane:
- the real `certbot` (`issue`, `renew`) through Pebble: about 2.5 s each, mostly certbot's own ACME
  polling; for tests of certbot's side (the plugin, the installer versus the deploy hook, renewal conf);
- `deliver`: a sandbox-made certificate handed over as certbot's deploy hook hands it over (in this
  process): milliseconds. Everything else uses it.

`deploy`, `status` and `deploy_killed_at` run certbot-dane's rollover in this process against the real
servers, with `clock` injected: `wait_out_gate` moves the clock on instead of sleeping 2 x TTL. `cli`
runs the real `certbot-dane` command with the real clock, for tests of the command itself.
"""

from __future__ import annotations

import dataclasses
import datetime
import grp
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import load_pem_x509_certificate
from cryptography.x509.oid import NameOID

from certbot_dane import boot, certstore, hooks, state, status, statusformat
from certbot_dane import deploy as rollout_module
from certbot_dane.certstore import CertStore
from certbot_dane.config import DnsSettings, Endpoint, load
from certbot_dane.dnsclient import DnsClient
from certbot_dane.records import Record, ZoneUpdate
from certbot_dane.tlsa import TlsaParams, load_chain, records_for
from certbot_dane.tsigkey import TsigKey, decode_secret
from sandbox import fleet
from sandbox.servers import (
    APT_PACKAGES,
    KNOT_APT_PACKAGES,
    POWERDNS_APT_PACKAGES,
    KnotServer,
    PowerDnsServer,
    Sandbox,
    missing_binaries,
)

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
HOOK = REPO / "hooks" / "certbot-dane-deploy"
FOREIGN = "2 1 1 " + "cd" * 32
"""An admin's own record (the issuing CA's key), never published by certbot-dane."""

MakeSandbox = Callable[..., Sandbox]
"""The `make_sandbox` fixture: `make_sandbox(*, server="bind", secondary=False, pebble=True) -> Sandbox`, started."""


class Clock:
    """The clock injected into in-process runs: the wall clock and the time since boot, both moved on by `advance`."""

    def __init__(self) -> None:
        self.skew = 0.0

    def now(self) -> float:
        return time.time() + self.skew

    def uptime(self) -> tuple[str, float]:
        boot_id, since = boot.uptime()
        return boot_id, since + self.skew

    def advance(self, seconds: float) -> None:
        assert seconds >= 0, "the injected clock only moves forward"
        self.skew += seconds


@dataclass(frozen=True)
class Ran:
    """What an in-process `certbot-dane deploy` printed, as the command prints it, and its exit status."""

    returncode: int
    stdout: str
    stderr: str


class Scenario:
    """One certbot lineage managed by certbot-dane through the installer or the deploy hook."""

    def __init__(self, box: Sandbox, tmp: Path, name: str, tlsa: list[str], *, way: str = "installer",
                 params: tuple[str, ...] = ("3 0 1",), ttl: int = 2, reload: list[str] | None = None,
                 verify: list[str] | None = None, nameservers: list[str] | None = None,
                 dns_extra: str = "", deploy_nameservers: list[str] | None = None,
                 lineage_more: str = "", clock: Clock | None = None, timeout: float = 10) -> None:
        """`deploy_nameservers`: servers `certbot-dane deploy` waits for (a second config file), when
        certbot itself must not wait for them (a secondary that lags on purpose). `clock`: share one
        injected clock between scenarios (two hosts); by default each has its own."""
        self.box, self.tmp, self.name, self.tlsa, self.way, self.ttl = box, tmp, name, tlsa, way, ttl
        self.params = tuple(TlsaParams.from_text(p) for p in params)
        self.clock = clock or Clock()
        self.ran = tmp / "reloads.log"
        self.live_dir = box.base / "certbot" / "config" / "live" / name  # certbot's live/: the newest certificate
        self._delivered: list[Path] = []
        reload = reload if reload is not None else [f"sh -c 'echo reloaded >> {self.ran}'"]
        lineage_extra = "\n".join([
            f"params = {json.dumps(list(params))}",
            f"tlsa_ttl = {ttl}",
            f"reload = {json.dumps(reload)}",
            f"verify = {json.dumps(verify or [])}",
            lineage_more,
        ])
        common = dict(state_dir=tmp / "state", deploy_dir=tmp / "live", lineages={name: tlsa},
                      lineage_extra=lineage_extra, dns_extra=dns_extra, timeout=timeout)
        self.config = box.write_config(tmp / "certbot-dane.toml", nameservers=nameservers, **common)
        self.deploy_config = self.config if deploy_nameservers is None else box.write_config(
            tmp / "deploy.toml", nameservers=deploy_nameservers, **common)
        self.env = {"CERTBOT_DANE_CONFIG": str(self.config), "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}

    def reconfigured(self, tlsa: list[str] | None = None, params: tuple[str, ...] | None = None) -> Scenario:
        """The same lineage, directories and clock with its config rewritten (other TLSA names or params)."""
        again = Scenario(self.box, self.tmp, self.name, tlsa if tlsa is not None else self.tlsa, ttl=self.ttl,
                         params=params if params is not None else tuple(str(p) for p in self.params),
                         clock=self.clock)
        again._delivered = self._delivered
        return again

    # -- certbot -------------------------------------------------------------------------
    def certbot(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self.box.certbot(*args, env=self.env)

    def issue(self, *domains: str) -> subprocess.CompletedProcess[str]:
        """First issuance: `run -a dane -i dane` (installer) or `certonly -a dane --deploy-hook`."""
        names = [a for d in (domains or (self.name,)) for a in ("-d", d)]
        common = ["-a", "dane", "--dane-config", str(self.config), "--cert-name", self.name, *names]
        if self.way == "installer":
            return self.certbot("run", "-i", "dane", *common)
        return self.certbot("certonly", *common, "--deploy-hook", str(HOOK))

    def renew(self, *extra: str) -> subprocess.CompletedProcess[str]:
        return self.certbot("renew", "--force-renewal", "--cert-name", self.name, *extra)

    def cli(self, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """Run `certbot-dane -c CONFIG ARGS...` as a separate process (with the real clock)."""
        assert self.clock.skew == 0 or args[:1] not in (("deploy",), ("status",)), \
            "a real-clock run after the injected clock moved on: use deploy() / status()"
        return subprocess.run([str(BIN / "certbot-dane"), "-c", str(self.deploy_config), *args], capture_output=True,
                              text=True, env={**os.environ, **self.env, **(env or {})}, timeout=120)

    # -- the deploy hook, with sandbox-made certificates -----------------------------------
    def new_certificate(self, *, lifetime: datetime.timedelta = datetime.timedelta(days=90),
                        age: datetime.timedelta | None = None, reuse_key: bool = False,
                        ca: CA | None = None) -> Path:
        """Put a fresh certificate for this lineage in certbot's live/<lineage>/, as certbot does when it
        renews, and return that directory (what certbot gives its deploy hook as RENEWED_LINEAGE).

        Self-signed, or issued by `ca`; with `reuse_key`, for the key of the newest one handed over
        (`certbot renew --reuse-key`). Valid since `age` ago; by default an hour ago less 10 s per
        certificate made before, so that each is newer than the last (as `deploy` tells them apart).
        A copy stays in a directory of its own (for `records`).
        """
        key = serialization.load_pem_private_key((self.live_dir / "privkey.pem").read_bytes(), None) \
            if reuse_key else None
        if age is None:
            age = datetime.timedelta(hours=1, seconds=-10 * len(self._delivered))
        kept = self.tmp / "renewed" / str(time.monotonic_ns()) / self.name
        write_certificate(kept, self.name, age=age, lifetime=lifetime, key=key, ca=ca)
        self._delivered.append(kept)
        self.live_dir.mkdir(parents=True, exist_ok=True)
        for file in kept.iterdir():
            (self.live_dir / file.name).unlink(missing_ok=True)  # certbot's symlinks into archive/, if it issued
            shutil.copy2(file, self.live_dir / file.name)
        return self.live_dir

    def hand_over(self, directory: Path, via: str = "stage") -> None:
        """Hand a certificate directory to certbot-dane as certbot hands a renewal to its deploy hook.

        `via="stage"`: what the hook does once it knows this is no dry run (stage and pre-publish under
        the lock), with the injected clock; `via="hook"`: certbot_dane.hooks.deploy itself, in this process,
        with the real clock (only before the injected clock moved on). Raises what the hook would report.
        """
        if via == "hook":
            assert self.clock.skew == 0, "the hook runs with the real clock"
            hooks.deploy({"RENEWED_LINEAGE": str(directory), "CERTBOT_DANE_CONFIG": str(self.config)})
            return
        certs = certstore.read_dir(directory)
        assert certs is not None
        run = self.rollout(self.config)
        with state.locked(run.config.state_dir):
            rollout_module.stage(run, run.config.lineages[self.name], certs)

    def deliver(self, *, via: str = "stage", **certificate: Any) -> bytes:
        """`new_certificate(**certificate)`, handed over (`hand_over(via)`); returns it (cert.pem)."""
        directory = self.new_certificate(**certificate)
        self.hand_over(directory, via)
        return (directory / "cert.pem").read_bytes()

    def run_hook(self, directory: Path) -> subprocess.CompletedProcess[str]:
        """The real hooks/certbot-dane-deploy executable for a certificate directory, as certbot runs it."""
        return subprocess.run([str(HOOK)], env={**os.environ, **self.env, "RENEWED_LINEAGE": str(directory)},
                              capture_output=True, text=True, timeout=60)

    def bootstrapped(self, **certificate: Any) -> set[str]:
        """Deliver the first certificate (no RRset yet: deployed at once); its records, once the primary serves them."""
        first = self.deliver(**certificate)
        assert self.deployed() == first, "no TLSA RRset existed: the first certificate goes live at once"
        live = self.records(first)
        for name in self.tlsa:
            self.wait_until_served(name, live)
        return live

    def renewed(self, foreign: str | None = FOREIGN) -> tuple[set[str], set[str]]:
        """Bootstrap, add a foreign record at the first name, deliver a renewal: (old records, new records),
        once the primary serves both."""
        old = self.bootstrapped()
        if foreign is not None:
            self.add_by_hand(self.tlsa[0], foreign, ttl=self.ttl)
        new = self.records(self.deliver())
        for name in self.tlsa:
            self.wait_until_served(name, old | new)
        return old, new

    # -- the rollover, in this process, with the injected clock -----------------------------
    def rollout(self, config: Path | None = None, *, dry_run: bool = False) -> rollout_module.Rollout:
        """certbot-dane's applier for this lineage's deploy config, on the real servers, with `clock`."""
        settings = load(config or self.deploy_config)
        return rollout_module.Rollout(settings, DnsClient(settings.dns),
                                      CertStore(settings.state_dir, settings.deploy_dir),
                                      now=self.clock.now, uptime=self.clock.uptime, dry_run=dry_run)

    def deploy(self, *, force: bool = False, dry_run: bool = False, config: Path | None = None) -> Ran:
        """One `certbot-dane deploy` run (the timer's), printed as the command prints it."""
        run = self.rollout(config, dry_run=dry_run)
        failures = rollout_module.deploy_all(run, None, force=force)
        errors = "".join(f"certbot-dane: error: {name}: {error}\n" for name, error in failures.items())
        return Ran(1 if failures else 0, "".join(f"{line}\n" for line in run.log), errors)

    def killed_at(self, fault: str, action: Callable[[], object] | None = None) -> int:
        """Run `action` (default: a deploy run) with the fault point `fault` armed, in a forked child that it
        kills there as kill -9 would (exit status 137); the child's exit status."""
        pid = os.fork()
        if pid == 0:  # the child: never returns into pytest
            code = 2
            try:
                os.environ[rollout_module.FAULT_ENV] = fault
                if action is None:
                    code = self.deploy().returncode
                else:
                    action()
                    code = 0
            finally:
                os._exit(code)
        return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])

    def wait_out_gate(self) -> None:
        """Move the injected clock on until the staged certificate's gate opens (2 x TTL after all servers served)."""
        staged = self.state()["staged"]
        assert staged is not None and staged["served_at"] is not None, "the gate clock has not started"
        self.clock.advance(max(0.0, staged["served_uptime"] + 2 * self.ttl + 0.05 - self.clock.uptime()[1]))

    def status(self) -> tuple[int, dict[str, Any]]:
        """`certbot-dane status --json` in this process at the injected clock's time: (Nagios exit code, document)."""
        report = self._report()
        return int(report.status), statusformat.to_json(report)

    def status_text(self) -> str:
        """`certbot-dane status` (text, no colour) in this process at the injected clock's time."""
        return statusformat.to_text(self._report(), False)

    def _report(self) -> Any:
        settings = load(self.deploy_config)
        return status.report(settings, status.select(settings, None), now=self.clock.now())

    # -- files ---------------------------------------------------------------------------
    def certbot_cert(self) -> bytes:
        """The newest certificate certbot (or a delivery) handed over."""
        return (self.live_dir / "cert.pem").read_bytes()

    def deployed(self, file: str = "cert.pem") -> bytes | None:
        path = self.tmp / "live" / self.name / file
        return path.read_bytes() if path.exists() else None

    def staged(self) -> bytes | None:
        found = sorted((self.tmp / "state" / "staging" / self.name).glob("*/cert.pem"))
        assert len(found) <= 1, found
        return found[0].read_bytes() if found else None

    def state(self) -> dict[str, Any]:
        return json.loads((self.tmp / "state" / "lineages" / f"{self.name}.json").read_text())

    def instance(self) -> str:
        return (self.tmp / "state" / "instance").read_text().strip()

    # -- DNS -----------------------------------------------------------------------------
    def records(self, cert_pem: bytes | None = None) -> set[str]:
        """TLSA values of a certificate (default: the newest handed over) for this lineage's params."""
        pem = self._fullchain_for(cert_pem or self.certbot_cert())
        return {r.to_text() for r in records_for(self.params, load_chain(pem))}

    def _fullchain_for(self, cert_pem: bytes) -> bytes:
        for directory in (self.tmp / "live" / self.name, *(self.tmp / "state" / "staging" / self.name).glob("*"),
                          self.live_dir, *self._delivered):
            if (directory / "cert.pem").exists() and (directory / "cert.pem").read_bytes() == cert_pem:
                return (directory / "fullchain.pem").read_bytes()
        raise AssertionError("certificate not found in any known directory")

    def tlsa_on(self, name: str, server: str = "primary") -> set[str]:
        """The TLSA values a server serves at `name`, normalised to one lower-case hex string."""
        target = self.box.primary if server == "primary" else self.box.secondary
        assert target is not None
        return {" ".join(v.split()[:3]) + " " + "".join(v.split()[3:]).lower() for v in target.query(name, "TLSA")}

    def add_by_hand(self, name: str, value: str, ttl: int = 2) -> None:
        """An admin's own record, added with the same key (certbot-dane did not publish it)."""
        client = DnsClient(load(self.config).dns)
        client.update(ZoneUpdate(client.find_zone(name), add=(Record(name, "TLSA", value, ttl),)))
        self.wait_until_served(name, {value})

    def wait_until_served(self, name: str, values: set[str], server: str = "primary") -> None:
        """Poll (with a deadline) until the server's RRset includes `values` (inline signing lags a little)."""
        deadline = time.monotonic() + 10
        while not values <= self.tlsa_on(name, server):
            assert time.monotonic() < deadline, f"{server} never served {values} at {name}"
            time.sleep(0.05)

    def wait_until_exactly(self, name: str, values: set[str], server: str = "primary") -> None:
        """Poll (with a deadline) until the server's RRset is exactly `values` (a removal lands a moment later)."""
        deadline = time.monotonic() + 10
        while (seen := self.tlsa_on(name, server)) != values:
            assert time.monotonic() < deadline, f"{server} serves {seen} at {name}, never exactly {values}"
            time.sleep(0.05)


# -- status documents ------------------------------------------------------------------------

def fqdn(name: str) -> str:
    return name.lower().rstrip(".") + "."


def lineage_of(doc: dict[str, Any], name: str | None = None) -> dict[str, Any]:
    """The one lineage (named, or the only one) of a status document."""
    found = [lin for lin in doc["lineages"] if name is None or lin["lineage"] == name]
    assert len(found) == 1, doc
    return found[0]


def findings(lineage: dict[str, Any]) -> dict[str, str]:
    """code -> severity of the findings of a status document's lineage that change its status (not advice)."""
    return {f["code"]: f["severity"] for f in lineage["findings"] if f["severity"] != "OK"}


def served(lineage: dict[str, Any], name: str) -> dict[str, dict[str, str]]:
    """server -> {record value: match} at one TLSA name of a status document's lineage."""
    entry = next(n for n in lineage["names"] if n["name"] == fqdn(name))
    return {s["server"]: {r["value"]: r["match"] for r in s["records"]} for s in entry["servers"]}


def status_json(s: Scenario, *args: str, env: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
    """The real `certbot-dane status --json` (real clock): (exit code, document)."""
    done = s.cli("status", "--json", *args, env=env)
    assert done.stdout, done.stderr
    return done.returncode, json.loads(done.stdout)


# -- certificates and files --------------------------------------------------------------------

class CA:
    """A certificate authority of the sandbox's own: the leaves it issues share their issuer (2 x x records)."""

    def __init__(self, name: str = "certbot-dane test CA") -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = datetime.datetime.now(datetime.UTC)
        self.cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
                     .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
                     .not_valid_before(now - datetime.timedelta(days=1))
                     .not_valid_after(now + datetime.timedelta(days=3650))
                     .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                     .sign(self.key, hashes.SHA256()))


def write_certificate(directory: Path, host: str, *, age: datetime.timedelta = datetime.timedelta(hours=1),
                      lifetime: datetime.timedelta = datetime.timedelta(days=90),
                      key: Any = None, ca: CA | None = None) -> None:
    """cert.pem, chain.pem, fullchain.pem, privkey.pem for `host`, as certbot writes them: self-signed
    (sandbox.fleet.write_certificate) unless `ca` issues it; a new key unless `key` is given."""
    if ca is None and key is None:
        fleet.write_certificate(directory, host, age=age, lifetime=lifetime)
        return
    directory.mkdir(parents=True, exist_ok=True)
    key = key or ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    start = datetime.datetime.now(datetime.UTC) - age
    cert = (x509.CertificateBuilder().subject_name(subject)
            .issuer_name(ca.cert.subject if ca else subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(start).not_valid_after(start + lifetime)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
            .sign(ca.key if ca else key, hashes.SHA256()))
    pem = cert.public_bytes(serialization.Encoding.PEM)
    chain = ca.cert.public_bytes(serialization.Encoding.PEM) if ca else b""
    (directory / "cert.pem").write_bytes(pem)
    (directory / "chain.pem").write_bytes(chain)
    (directory / "fullchain.pem").write_bytes(pem + chain)
    (directory / "privkey.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                              serialization.PrivateFormat.PKCS8,
                                                              serialization.NoEncryption()))
    (directory / "privkey.pem").chmod(0o600)


def records_of(directory: Path, params: tuple[str, ...]) -> set[str]:
    """TLSA values of the certificate in `directory` (its fullchain.pem) for these params."""
    chain = load_chain((directory / "fullchain.pem").read_bytes())
    return {r.to_text() for r in records_for(tuple(TlsaParams.from_text(p) for p in params), chain)}


def key_matches_cert(directory: Path) -> bool:
    """The deployed key belongs to the deployed certificate, and combined.pem is key + full chain."""
    cert = load_pem_x509_certificate((directory / "cert.pem").read_bytes())
    key = serialization.load_pem_private_key((directory / "privkey.pem").read_bytes(), None)
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    pub = serialization.Encoding.DER
    combined = (directory / "combined.pem").read_bytes()
    return (cert.public_key().public_bytes(pub, spki) == key.public_key().public_bytes(pub, spki)
            and combined == (directory / "privkey.pem").read_bytes() + (directory / "fullchain.pem").read_bytes())


def require_programs(missing: list[str], packages: str) -> None:
    """Skip (or, in CI, fail loudly) when a program or file a real server needs is missing."""
    if not missing:
        return
    message = f"real-server tests: missing {', '.join(missing)}; apt-get install {packages}"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def require_real_servers(server: str = "bind") -> None:
    """Skip (or, in CI, fail loudly) when a program a sandbox with this DNS server needs is missing."""
    missing, packages = missing_binaries(), APT_PACKAGES
    if server == "knot":
        missing, packages = missing + KnotServer.missing(), f"{packages} {KNOT_APT_PACKAGES}"
    elif server == "powerdns":
        missing, packages = missing + PowerDnsServer.missing(), f"{packages} {POWERDNS_APT_PACKAGES}"
    require_programs(missing, packages)


def snapshot(path: Path) -> dict[str, str]:
    """Every file under `path` with its content hash (what "changes nothing on disk" compares); no lock file."""
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*")) if p.is_file() and p.name != "lock"} if path.exists() else {}


# -- the monitoring user ------------------------------------------------------------------------

NOBODY = 65534
GROUP = "nogroup"  # nobody's own group serves as the monitoring group: no system change needed


def monitored(s: Scenario, group: str | None) -> None:
    """The admin's setup: `monitor_group` at the top of the config (if any), config root:GROUP 0640."""
    if group is not None:
        s.config.write_text(f'monitor_group = "{group}"\n' + s.config.read_text())
    os.chown(s.config, 0, grp.getgrnam(GROUP).gr_gid)
    s.config.chmod(0o640)


def as_monitor(s: Scenario, *args: str, config: Path | None = None) -> subprocess.CompletedProcess[str]:
    """`certbot-dane -c CONFIG ARGS` (default: the scenario's) as nobody with only the monitoring group."""
    gid = grp.getgrnam(GROUP).gr_gid
    return subprocess.run(["setpriv", f"--reuid={NOBODY}", f"--regid={gid}", "--clear-groups",
                           str(BIN / "certbot-dane"), "-c", str(config or s.config), *args],
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, **s.env, "HOME": "/nonexistent"})


# -- Nagios performance data ----------------------------------------------------------------------

PERF_RE = re.compile(r"('(?:[^']|'')+'|[^'= ]+)=([-0-9.]+|U)([a-zA-Z%]*)((?:;[-0-9.:~@]*){0,4})(?: |$)")


def parse_perfdata(text: str) -> dict[str, tuple[str, str, list[str]]]:
    """Nagios plugin guidelines: 'label'=value[UOM];[warn];[crit];[min];[max], space separated; '' is a quote."""
    found: dict[str, tuple[str, str, list[str]]] = {}
    position = 0
    while position < len(text):
        match = PERF_RE.match(text, position)
        assert match, f"not performance data at {text[position:]!r}"
        label = match.group(1)
        if label.startswith("'"):
            label = label[1:-1].replace("''", "'")
        found[label] = (match.group(2), match.group(3), match.group(4).lstrip(";").split(";"))
        position = match.end()
    return found


# -- an independent TLSRPT parser ---------------------------------------------------------------

def independent_parser() -> Any:
    """parsedmarc (the test extra): skipped without it, but never under CI=true."""
    if os.environ.get("CI", "").lower() == "true":
        import parsedmarc
        return parsedmarc
    return pytest.importorskip("parsedmarc", reason="pip install -e '.[test]' (parsedmarc)")


# -- a DNS client for one server of the sandbox -----------------------------------------------------

def client_for(server: KnotServer | PowerDnsServer, **overrides: object) -> DnsClient:
    """A client whose primary is `server`, with the sandbox key it grants (settings overridable)."""
    key = TsigKey(server.key.name, server.key.algorithm, decode_secret(server.key.secret))
    settings = DnsSettings(Endpoint(server.address, server.port), key, (), 3.0, 10.0)
    return DnsClient(dataclasses.replace(settings, **overrides))  # type: ignore[arg-type]
