"""MTA-STS and TLSRPT on the real test bed: named, Debian's nginx serving the policy over HTTPS with a
Pebble-issued certificate, SMTP STARTTLS endpoints for the MX hosts, and postfix-mta-sts-resolver's
`mta-sts-query` (a real MTA-STS client) checking what certbot-dane published, through the sandbox DNS
(a resolv.conf naming the primary, bind-mounted in a private mount namespace) and trusting Pebble's root.

Each test has a mail domain of its own under sts.example.org; the admin's key adds its MX and A records
(certbot-dane's key may change TXT and TLSA only).
"""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dns.query
import dns.rcode
import dns.update
import pytest

from certbot_dane import deploy as rollout_module
from certbot_dane import mtasts, status, statusformat
from certbot_dane.certstore import CertStore
from certbot_dane.config import load
from certbot_dane.dnsclient import DnsClient
from sandbox.servers import PRIMARY_ADDRESS, Sandbox, find_binary
from sandbox.tlsendpoint import TlsEndpoint
from sandbox.webserver import NGINX_APT_PACKAGE, Nginx, pick_address
from tests.scenario import BIN, Clock, Ran, Scenario, require_programs, write_certificate

ZONE = "example.org"
PARENT = "sts.example.org"
DOMAINS = ("first", "change", "down", "drop", "extra")
RUA = "mailto:tlsrpt@example.org"
QUERY = BIN / "mta-sts-query"


def _require() -> None:
    """Skip (or, in CI, fail loudly) without nginx, util-linux, mta-sts-query or root."""
    require_programs(Nginx.missing() + [p for p in ("unshare", "mount") if find_binary(p) is None],
                     f"{NGINX_APT_PACKAGE} util-linux")
    for missing, message in ((not QUERY.exists(), f"{QUERY} missing: pip install -e '.[test]' "
                                                  "(postfix-mta-sts-resolver)"),
                             (os.geteuid() != 0, "nginx on port 443 and a private mount namespace need root")):
        if missing:
            if os.environ.get("CI", "").lower() == "true":
                pytest.fail(message, pytrace=False)
            pytest.skip(message)


def fqdn(label: str) -> str:
    return f"{label}.{PARENT}"


@dataclass
class Bed:
    """What every test shares: the sandbox, one Pebble certificate for every policy and MX host, the CA bundle,
    nginx serving each domain's site from its own root, an SMTP endpoint, a scratch directory."""

    box: Sandbox
    ca: Path
    cert: Path
    key: Path
    nginx: Nginx
    roots: dict[str, Path]
    smtp: TlsEndpoint
    tmp: Path

    def admin(self, *changes: tuple[str, str, str, str]) -> None:
        """The admin's own UPDATE (adds: name, type, value; "delete" as the 4th field removes the RRset)."""
        update = dns.update.UpdateMessage(ZONE, keyring=self.box.admin_key.as_dnspython())
        for name, rdtype, value, action in changes:
            if action == "delete":
                update.delete(name + ".", rdtype)
            else:
                update.add(name + ".", 60, rdtype, value)
        answer = dns.query.tcp(update, PRIMARY_ADDRESS, port=self.box.port, timeout=10)
        assert answer.rcode() == dns.rcode.NOERROR, dns.rcode.to_text(answer.rcode())
        for name, rdtype, value, action in changes:
            if action != "delete":
                self.box.primary.wait_for(name, rdtype, lambda values, v=value: any(v in x for x in values))

    def domain(self, label: str, *, mx: tuple[str, ...] = ("mx1",), web: str | None = None) -> str:
        """A domain's MX RRset (pointing at the SMTP endpoint) and mta-sts A record (nginx, or `web`)."""
        domain = fqdn(label)
        self.admin((f"mta-sts.{domain}", "A", web or self.nginx.address, "add"),
                   *((f"{m}.{domain}", "A", self.smtp.host, "add") for m in mx),
                   *((domain, "MX", f"{10 * (i + 1)} {m}.{domain}.", "add") for i, m in enumerate(mx)))
        return domain

    def table(self, label: str, body: str) -> str:
        """A [mta_sts."DOMAIN"] table (`body` its settings), the policy file in nginx's root for the domain."""
        domain = fqdn(label)
        return "\n".join([f'\n[mta_sts."{domain}"]', f'policy_file = "{self.roots[domain]}/.well-known/mta-sts.txt"',
                          f'ca_file = "{self.ca}"', body.strip(), ""])

    def config(self, label: str, body: str) -> Path:
        """A certbot-dane config of its own holding one [mta_sts."DOMAIN"] table and no lineage."""
        target = self.tmp / label / "certbot-dane.toml"
        target.parent.mkdir(parents=True, exist_ok=True)
        return self.box.write_config(target, state_dir=target.parent / "state", deploy_dir=target.parent / "live",
                                     extra=self.table(label, body))

    def query(self, domain: str, known: str | None = None) -> tuple[str, Any]:
        """`mta-sts-query DOMAIN [KNOWN_ID]` as a sender runs it: DNS from the sandbox, Pebble's root trusted.
        (result name, (id, policy) or None)."""
        resolv = self.tmp / "resolv.conf"
        resolv.write_text(f"nameserver {PRIMARY_ADDRESS}:{self.box.port}\n", encoding="utf-8")
        env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
        done = subprocess.run(
            [str(find_binary("unshare")), "--mount", "/bin/sh", "-c", 'mount --bind "$0" /etc/resolv.conf && exec "$@"',
             str(resolv), str(QUERY), domain, *([known] if known else [])],
            capture_output=True, text=True, timeout=60, env={**env, "SSL_CERT_FILE": str(self.ca)}, check=False)
        line = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""
        print(f"$ mta-sts-query {domain}{' ' + known if known else ''}\n{line}")  # shown with pytest -s / -rP
        found = re.fullmatch(r"\(<STSFetchResult\.(\w+): \d+>, (.*)\)", line)
        assert found, f"mta-sts-query said {done.stdout!r} {done.stderr!r}"
        return found[1], ast.literal_eval(found[2])


@pytest.fixture(scope="module")
def bed(sandbox: Sandbox) -> Iterator[Bed]:
    _require()
    assert sandbox.pebble is not None
    tmp = Path(tempfile.mkdtemp(prefix="certbot-dane-mtasts-"))
    tmp.chmod(0o755)  # nginx's workers (nobody) read the sites' roots
    roots = {}
    for label in DOMAINS:
        roots[fqdn(label)] = tmp / "www" / label
        roots[fqdn(label)].mkdir(parents=True)
    for directory in [tmp / "www", *roots.values()]:
        directory.chmod(0o755)
    issue = sandbox.write_config(tmp / "issue.toml", state_dir=tmp / "issue-state")
    names = [n for label in DOMAINS for n in (f"mta-sts.{fqdn(label)}", f"mx1.{fqdn(label)}", f"mx2.{fqdn(label)}")]
    done = sandbox.certbot("certonly", "-a", "dane", "--dane-config", str(issue), "--cert-name", "mta-sts-bed",
                           *(a for n in names for a in ("-d", n)))
    assert done.returncode == 0, done.stdout + done.stderr
    live = sandbox.base / "certbot" / "config" / "live" / "mta-sts-bed"
    ca = tmp / "pebble-root.pem"
    ca.write_text(sandbox.pebble.root_pem(), encoding="ascii")
    nginx = Nginx(pick_address(), live / "fullchain.pem", live / "privkey.pem", roots).start()
    smtp = TlsEndpoint("smtp", live / "fullchain.pem", live / "privkey.pem", host=pick_address(25), port=25).start()
    try:
        yield Bed(sandbox, ca, live / "fullchain.pem", live / "privkey.pem", nginx, roots, smtp, tmp)
    finally:
        smtp.stop()
        nginx.stop()
        shutil.rmtree(nginx.workdir, ignore_errors=True)
        shutil.rmtree(tmp, ignore_errors=True)


def deploy(config: Path, clock: Clock | None = None, *, dry_run: bool = False) -> Ran:
    """One `certbot-dane deploy` run in this process (the injected clock's time), printed as the command prints it."""
    clock = clock or Clock()
    settings = load(config)
    run = rollout_module.Rollout(settings, DnsClient(settings.dns), CertStore(settings.state_dir, settings.deploy_dir),
                                 now=clock.now, uptime=clock.uptime, dry_run=dry_run)
    failures = rollout_module.deploy_all(run, None)
    errors = "".join(f"certbot-dane: error: {name}: {error}\n" for name, error in failures.items())
    return Ran(1 if failures else 0, "".join(f"{line}\n" for line in run.log), errors)


def report(config: Path, clock: Clock | None = None) -> tuple[int, dict[str, Any]]:
    """`certbot-dane status --json` in this process: (exit code, the domain's entry of `mta_sts`)."""
    settings = load(config)
    rep = status.report(settings, status.select(settings, None), now=(clock or Clock()).now())
    doc = statusformat.to_json(rep)
    assert len(doc["mta_sts"]) == 1, doc
    return int(rep.status), doc["mta_sts"][0]


def cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The real `certbot-dane -c CONFIG ARGS...` command (real clock)."""
    return subprocess.run([str(BIN / "certbot-dane"), "-c", str(config), *args], capture_output=True, text=True,
                          timeout=120, check=False)


def txt(box: Sandbox, name: str) -> list[str]:
    return sorted(mtasts.txt_text(v) for v in box.primary.query(name, "TXT"))


def policy_text(mode: str, mx: list[str], max_age: int) -> str:
    return mtasts.Policy(mode, tuple(mx), max_age).text()


# -- the tests ----------------------------------------------------------------------------------------------
def test_first_publication_serves_the_policy_then_publishes_its_id_and_the_reporting_address(bed: Bed) -> None:
    domain = bed.domain("first")
    config = bed.config("first", f'mode = "enforce"\nmax_age = 86400\ntlsrpt = ["{RUA}"]')
    assert bed.query(domain) == ("NONE", None)  # nothing published yet: senders see no policy
    serial = bed.box.primary.soa_serial(ZONE)
    ran = deploy(config, dry_run=True)  # says what it would do, changes nothing
    assert ran.returncode == 0 and "(dry run) write policy id" in ran.stdout
    assert f"(dry run) publish _mta-sts.{domain}. TXT v=STSv1; id=" in ran.stdout  # once it is served
    assert not (bed.roots[domain] / ".well-known").exists() and bed.box.primary.soa_serial(ZONE) == serial
    ran = deploy(config)
    assert ran.returncode == 0, ran.stderr
    policy = mtasts.Policy("enforce", (f"mx1.{domain}",), 86400)
    file = bed.roots[domain] / ".well-known" / "mta-sts.txt"
    assert file.read_bytes() == policy.text().encode() and file.stat().st_mode & 0o777 == 0o644
    assert txt(bed.box, f"_mta-sts.{domain}") == [f"v=STSv1; id={policy.id}"]
    assert txt(bed.box, f"_smtp._tls.{domain}") == [f"v=TLSRPTv1; rua={RUA}"]
    result, (id_, seen) = bed.query(domain)
    assert (result, id_) == ("VALID", policy.id)
    assert seen == {"version": "STSv1", "mode": "enforce", "mx": [f"mx1.{domain}"], "max_age": 86400}
    serial = bed.box.primary.soa_serial(ZONE)
    again = deploy(config)  # the same policy: the same id, nothing sent
    assert again.returncode == 0 and "publish" not in again.stdout and "write" not in again.stdout
    assert bed.box.primary.soa_serial(ZONE) == serial
    code, entry = report(config)
    assert code == 0 and entry["status"] == "OK", entry["findings"]
    assert entry["served"][0]["matches_intended"] and entry["txt"]["matches_served"]
    assert entry["served"][0]["https_days_left"] > 1 and entry["tlsrpt"]["records"] == [f"v=TLSRPTv1; rua={RUA}"]
    assert entry["mx"] == [{"host": f"mx1.{domain}", "matched": True, "endpoints": [
        {**entry["mx"][0]["endpoints"][0], "address": bed.smtp.host, "valid": True, "error": None}]}]
    assert f"mx1.{domain}" in entry["mx"][0]["endpoints"][0]["names"]


def test_a_policy_change_gets_its_new_id_only_once_the_web_server_serves_it(bed: Bed) -> None:
    domain = bed.domain("change")
    staging = bed.tmp / "change" / "publish" / "mta-sts.txt"  # synced to the web server by hand (rsync, ...)
    served = bed.roots[domain] / ".well-known" / "mta-sts.txt"

    def configure(max_age: int) -> Path:
        path = bed.config("change", f'mode = "testing"\nmax_age = {max_age}')
        path.write_text(path.read_text().replace(str(served), str(staging)))
        return path

    def sync() -> None:
        served.parent.mkdir(exist_ok=True)
        shutil.copyfile(staging, served)
        served.chmod(0o644)

    first = configure(3600)
    ran = deploy(first)  # written, but nginx serves nothing there yet: no id
    assert ran.returncode == 1 and "HTTP 404" in ran.stderr and txt(bed.box, f"_mta-sts.{domain}") == []
    sync()
    assert deploy(first).returncode == 0
    old = mtasts.Policy("testing", (f"mx1.{domain}",), 3600)
    assert txt(bed.box, f"_mta-sts.{domain}") == [f"v=STSv1; id={old.id}"]
    assert bed.query(domain)[1][0] == old.id

    changed = configure(7200)
    new = mtasts.Policy("testing", (f"mx1.{domain}",), 7200)
    ran = deploy(changed)  # the new file is written, the web server still serves the old one: the id stays
    assert ran.returncode == 1
    assert ran.stderr.count("\n") == 1 and f"serves policy id {old.id}, not {new.id}" in ran.stderr
    assert f"stays at id {old.id}" in ran.stderr and staging.read_bytes() == new.text().encode()
    assert txt(bed.box, f"_mta-sts.{domain}") == [f"v=STSv1; id={old.id}"]
    assert bed.query(domain, old.id) == ("NOT_CHANGED", None)  # a sender keeps its cached policy: still right
    code, entry = report(changed)
    assert code == 1 and {f["code"] for f in entry["findings"]} == {"policy-pending"}

    sync()
    assert deploy(changed).returncode == 0
    assert txt(bed.box, f"_mta-sts.{domain}") == [f"v=STSv1; id={new.id}"]
    result, (id_, seen) = bed.query(domain, old.id)  # the new id: the sender fetches the new policy
    assert (result, id_, seen["max_age"]) == ("VALID", new.id, 7200)
    assert report(changed)[0] == 0


def test_a_web_server_that_is_down_leaves_the_txt_record_alone_with_one_clear_line(bed: Bed) -> None:
    domain = fqdn("down")
    own = Nginx(pick_address(), bed.cert, bed.key, {domain: bed.roots[domain]}).start()  # this domain's alone
    try:
        bed.domain("down", web=own.address)
        config = bed.config("down", 'mode = "enforce"\nmax_age = 600')
        assert deploy(config).returncode == 0
        before = mtasts.Policy("enforce", (f"mx1.{domain}",), 600)
        assert bed.query(domain)[1][0] == before.id
        own.stop()
        serial = bed.box.primary.soa_serial(ZONE)
        changed = bed.config("down", 'mode = "enforce"\nmax_age = 1200')
        ran = cli(changed, "deploy")
        assert ran.returncode == 1
        lines = ran.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"certbot-dane: error: mta-sts {domain}: https://mta-sts.")
        assert f"at {own.address}: cannot fetch the policy" in lines[0] and f"stays at id {before.id}" in lines[0]
        assert bed.box.primary.soa_serial(ZONE) == serial  # not one record changed
        assert txt(bed.box, f"_mta-sts.{domain}") == [f"v=STSv1; id={before.id}"]
        assert bed.query(domain) == ("FETCH_ERROR", None)  # a sender without a cached policy: none
        assert bed.query(domain, before.id) == ("NOT_CHANGED", None)  # one with it keeps it
        code, entry = report(changed)
        assert code == 2 and "policy-unreachable" in {f["code"] for f in entry["findings"]}
        own.start()
        assert deploy(changed).returncode == 0
        after = mtasts.Policy("enforce", (f"mx1.{domain}",), 1200)
        assert bed.query(domain, before.id)[1][0] == after.id
    finally:
        own.stop()
        shutil.rmtree(own.workdir, ignore_errors=True)


def test_a_renewal_that_drops_an_mx_name_is_refused_while_a_sender_may_enforce_the_policy(
        bed: Bed, tmp_path: Path) -> None:
    domain = bed.domain("drop")
    host = f"mx1.{domain}"
    s = Scenario(bed.box, tmp_path, host, [f"_25._tcp.{host}"])
    s.config.write_text(s.config.read_text() + bed.table("drop", 'mode = "enforce"\nmax_age = 300'))
    old = s.bootstrapped()
    assert deploy(s.config, s.clock).returncode == 0
    result, (id_, seen) = bed.query(domain)
    assert (result, seen["mode"], seen["mx"]) == ("VALID", "enforce", [host])  # senders demand a cert for mx1

    renewal = tmp_path / "renewal"
    write_certificate(renewal, f"mail.{domain}")  # the renewed certificate lost mx1's name
    s.hand_over(renewal)
    new = s.records((renewal / "cert.pem").read_bytes())
    deploy(s.config, s.clock)  # starts the gate's clock
    s.wait_out_gate()
    ran = deploy(s.config, s.clock)
    assert ran.returncode == 1
    assert ran.stderr.count("\n") == 1 and f"does not cover {host}, an MX host of {domain}" in ran.stderr
    assert s.staged() == (renewal / "cert.pem").read_bytes() and s.deployed() != s.staged()
    assert s.tlsa_on(f"_25._tcp.{host}") == old | new  # the staged copy and its TLSA records stay

    s.config.write_text(s.config.read_text().replace('mode = "enforce"', 'mode = "testing"'))
    ran = deploy(s.config, s.clock)  # the swap is checked first: the enforce policy is still served
    assert ran.returncode == 1 and "whose MTA-STS policy enforces now" in ran.stderr
    assert bed.query(domain)[1][1]["mode"] == "testing"  # then the testing policy was published
    ran = deploy(s.config, s.clock)  # testing now, but senders may hold the enforce policy for its max_age
    assert ran.returncode == 1 and "senders may cache until its max_age runs out" in ran.stderr
    s.clock.advance(301)
    ran = deploy(s.config, s.clock)
    assert ran.returncode == 0, ran.stderr
    assert s.deployed() == (renewal / "cert.pem").read_bytes()


def test_an_mx_added_to_dns_but_not_to_the_policy_is_critical(bed: Bed) -> None:
    domain = bed.domain("extra")
    config = bed.config("extra", f'mode = "enforce"\nmx = ["mx1.{domain}"]\nmax_age = 86400')
    assert deploy(config).returncode == 0
    assert report(config)[0] == 0
    bed.admin((f"mx2.{domain}", "A", bed.smtp.host, "add"), (domain, "MX", f"20 mx2.{domain}.", "add"))
    code, entry = report(config)
    assert code == 2
    assert {f["code"]: f["severity"] for f in entry["findings"]} == {"mx-unmatched": "CRITICAL"}
    assert [(m["host"], m["matched"]) for m in entry["mx"]] == [(f"mx1.{domain}", True), (f"mx2.{domain}", False)]
    assert all(e["valid"] for m in entry["mx"] for e in m["endpoints"])  # its certificate is fine: the policy is not
    result, (_, seen) = bed.query(domain)
    assert result == "VALID" and seen["mx"] == [f"mx1.{domain}"]  # a sender's policy leaves mx2 out: it refuses mx2
    serial = bed.box.primary.soa_serial(ZONE)
    changed = bed.config("extra", f'mode = "enforce"\nmx = ["mx1.{domain}"]\nmax_age = 43200')
    ran = deploy(changed)  # another policy that still leaves mx2 out is not published
    assert ran.returncode == 1 and ran.stderr.count("\n") == 1
    assert f"MX host mx2.{domain} is not matched by mx (mx1.{domain})" in ran.stderr
    assert bed.box.primary.soa_serial(ZONE) == serial and bed.query(domain)[1][1]["max_age"] == 86400
    fixed = bed.config("extra", f'mode = "enforce"\nmx = ["mx1.{domain}", "mx2.{domain}"]\nmax_age = 43200')
    assert deploy(fixed).returncode == 0
    assert bed.query(domain)[1][1]["mx"] == [f"mx1.{domain}", f"mx2.{domain}"] and report(fixed)[0] == 0
