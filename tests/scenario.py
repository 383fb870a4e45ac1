"""A lineage under test on the real sandbox: its config, certbot runs, and what DNS and disk hold."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from certbot_dane.config import load
from certbot_dane.dnsclient import DnsClient
from certbot_dane.records import Record, ZoneUpdate
from certbot_dane.tlsa import TlsaParams, load_chain, records_for
from sandbox.servers import Sandbox

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


class Scenario:
    """One certbot lineage managed by certbot-dane through the installer or the deploy hook."""

    def __init__(self, box: Sandbox, tmp: Path, name: str, tlsa: list[str], *, way: str = "installer",
                 params: tuple[str, ...] = ("3 0 1",), ttl: int = 2, reload: list[str] | None = None,
                 verify: list[str] | None = None, nameservers: list[str] | None = None,
                 dns_extra: str = "", deploy_nameservers: list[str] | None = None,
                 lineage_more: str = "") -> None:
        """`deploy_nameservers`: servers `certbot-dane deploy` waits for (a second config file), when
        certbot itself must not wait for them (a secondary that lags on purpose)."""
        self.box, self.tmp, self.name, self.tlsa, self.way = box, tmp, name, tlsa, way
        self.params = tuple(TlsaParams.from_text(p) for p in params)
        self.ran = tmp / "reloads.log"
        reload = reload if reload is not None else [f"sh -c 'echo reloaded >> {self.ran}'"]
        lineage_extra = "\n".join([
            f"params = {json.dumps(list(params))}",
            f"tlsa_ttl = {ttl}",
            f"reload = {json.dumps(reload)}",
            f"verify = {json.dumps(verify or [])}",
            lineage_more,
        ])
        common = dict(state_dir=tmp / "state", deploy_dir=tmp / "live", lineages={name: tlsa},
                      lineage_extra=lineage_extra, dns_extra=dns_extra)
        self.config = box.write_config(tmp / "certbot-dane.toml", nameservers=nameservers, **common)
        self.deploy_config = self.config if deploy_nameservers is None else box.write_config(
            tmp / "deploy.toml", nameservers=deploy_nameservers, **common)
        self.env = {"CERTBOT_DANE_CONFIG": str(self.config), "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}

    # -- certbot -------------------------------------------------------------------------
    def certbot(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self.box.certbot(*args, env=self.env)

    def issue(self, *domains: str) -> subprocess.CompletedProcess[str]:
        """First issuance: `run -a dane -i dane` (installer) or `certonly -a dane --deploy-hook`."""
        names = [a for d in (domains or (self.name,)) for a in ("-d", d)]
        common = ["-a", "dane", "--dane-config", str(self.config), "--cert-name", self.name, *names]
        if self.way == "installer":
            return self.certbot("run", "-i", "dane", *common)
        return self.certbot("certonly", *common, "--deploy-hook", str(REPO / "hooks" / "certbot-dane-deploy"))

    def renew(self, *extra: str) -> subprocess.CompletedProcess[str]:
        return self.certbot("renew", "--force-renewal", "--cert-name", self.name, *extra)

    def cli(self, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """Run `certbot-dane -c CONFIG ARGS...` as a separate process."""
        return subprocess.run([str(BIN / "certbot-dane"), "-c", str(self.deploy_config), *args], capture_output=True,
                              text=True, env={**os.environ, **self.env, **(env or {})}, timeout=120)

    # -- files ---------------------------------------------------------------------------
    def certbot_cert(self) -> bytes:
        return (self.box.base / "certbot" / "config" / "live" / self.name / "cert.pem").read_bytes()

    def deployed(self, file: str = "cert.pem") -> bytes | None:
        path = self.tmp / "live" / self.name / file
        return path.read_bytes() if path.exists() else None

    def staged(self) -> bytes | None:
        found = sorted((self.tmp / "state" / "staging" / self.name).glob("*/cert.pem"))
        assert len(found) <= 1, found
        return found[0].read_bytes() if found else None

    def state(self) -> dict[str, Any]:
        return json.loads((self.tmp / "state" / "lineages" / f"{self.name}.json").read_text())

    # -- DNS -----------------------------------------------------------------------------
    def records(self, cert_pem: bytes | None = None) -> set[str]:
        """TLSA values of a certificate (default: certbot's current one) for this lineage's params."""
        pem = cert_pem or (self.box.base / "certbot" / "config" / "live" / self.name / "fullchain.pem").read_bytes()
        if cert_pem is not None:
            pem = self._fullchain_for(cert_pem)
        return {r.to_text() for r in records_for(self.params, load_chain(pem))}

    def _fullchain_for(self, cert_pem: bytes) -> bytes:
        for directory in (self.tmp / "live" / self.name, *(self.tmp / "state" / "staging" / self.name).glob("*"),
                          self.box.base / "certbot" / "config" / "live" / self.name):
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
        settings = load(self.config)
        client = DnsClient(settings.dns)
        client.update(ZoneUpdate(client.find_zone(name), add=(Record(name, "TLSA", value, ttl),)))
        self.box.primary.wait_for(name, "TLSA", lambda v: any(value.split()[3] in x.lower().replace(" ", "")
                                                             for x in v))

    def wait_until_served(self, name: str, values: set[str], server: str = "primary") -> None:
        """Poll (with a deadline) until the server's RRset includes `values` (inline signing lags a little)."""
        deadline = time.monotonic() + 10
        while not values <= self.tlsa_on(name, server):
            assert time.monotonic() < deadline, f"{server} never served {values} at {name}"
            time.sleep(0.05)


def require_programs(missing: list[str], packages: str) -> None:
    """Skip (or, in CI, fail loudly) when a program or file a real server needs is missing."""
    if not missing:
        return
    message = f"real-server tests: missing {', '.join(missing)}; apt-get install {packages}"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def snapshot(path: Path) -> dict[str, str]:
    """Every file under `path` with its content hash (what "changes nothing on disk" compares); no lock file."""
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*")) if p.is_file() and p.name != "lock"} if path.exists() else {}
