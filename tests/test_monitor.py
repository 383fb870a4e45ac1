"""`status` as a DANE monitor: every address of every endpoint, the sender's view through a validating
resolver, and what goes wrong slowly. Pure verdicts on real certificates first, then real servers."""

from __future__ import annotations

import base64
import dataclasses
import datetime
import grp
import hashlib
import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dns.exception
import dns.rcode
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from prometheus_client.parser import text_string_to_metric_families

from certbot_dane import assessment
from certbot_dane.assessment import CertView, Local, Observed, Presented, Served, Severity, ZoneAnswer
from certbot_dane.config import Endpoint, LineageSettings
from certbot_dane.dnssec import VALID, Verdict
from certbot_dane.rollover import LineageState, Published, Version
from certbot_dane.tlsa import TlsaParams, TlsaRecord, association_data
from sandbox.sender import (
    FAILED,
    SENDER_APT_PACKAGES,
    SENDER_BINARIES,
    VERIFIED,
    Receiver,
    Resolver,
    classify,
    pick_address,
)
from sandbox.servers import DUAL_ADDRESSES, Sandbox, ensure_loopback_address, free_port, missing_binaries
from sandbox.tlsendpoint import TlsEndpoint
from tests.scenario import GROUP, Scenario, as_monitor, findings, monitored, require_programs, write_certificate

NOW = datetime.datetime.now(datetime.UTC)
P = Endpoint("127.0.0.1", 53)
ZONE, NAME = "example.org.", "_25._tcp.dual.example.org."
TARGET = "smtp://dual.example.org:25"


def make_cert(cn: str, issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None = None,
              ca: bool = False) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A certificate for `cn`, self-signed or signed by `issuer`."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    builder = (x509.CertificateBuilder().subject_name(subject)
               .issuer_name(issuer[0].subject if issuer else subject).public_key(key.public_key())
               .serial_number(x509.random_serial_number()).not_valid_before(NOW - datetime.timedelta(hours=1))
               .not_valid_after(NOW + datetime.timedelta(days=60))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    return builder.sign(issuer[1] if issuer else key, hashes.SHA256()), key


def der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def record(usage: int, selector: int, cert: x509.Certificate) -> str:
    return TlsaRecord(usage, selector, 1, association_data(cert, selector, 1)).to_text()


CA = make_cert("Sandbox CA", ca=True)
OTHER_CA = make_cert("Rotated CA", ca=True)
LEAF = make_cert("dual.example.org", CA)
STALE = make_cert("dual.example.org", CA)
EE, TA, OTHER_TA = record(3, 1, LEAF[0]), record(2, 1, CA[0]), record(2, 1, OTHER_CA[0])
FP = hashlib.sha256(der(LEAF[0])).hexdigest()


def deployed_view(records: tuple[str, ...]) -> CertView:
    accepts = frozenset({record(3, s, LEAF[0]) for s in (0, 1)} | {record(2, s, CA[0]) for s in (0, 1)})
    return CertView(FP, "dual.example.org", "1f", NOW + datetime.timedelta(days=60), records, accepts)


def assess(served: set[str], presented: tuple[Presented, ...] = (), params: str = "3 1 1") -> assessment.LineageReport:
    lineage = LineageSettings("dual", (NAME,), (TlsaParams.from_text(params),))
    mine = tuple(v for v in served if v in (EE, TA))
    st = LineageState("dual", deployed=Version(FP, mine), published=tuple(Published(NAME, v, 1.0) for v in mine))
    observed = Observed({NAME: ZONE}, {NAME: {P: Served("NOERROR", frozenset(served), 60, Verdict(VALID))}},
                        {ZONE: {P: ZoneAnswer("NOERROR", 7, Verdict(VALID))}}, endpoints={"dual": presented})
    return assessment.assess(lineage, Local(st, deployed_view(mine), None), observed, NOW.timestamp())


def at(address: str, *chain: x509.Certificate, error: str | None = None) -> Presented:
    return Presented(TARGET, NAME, address, tuple(der(c) for c in chain), error)


def codes(report: assessment.LineageReport) -> dict[str, str]:
    return {f.code: f.severity.name for f in report.findings}


# == pure verdicts on real certificates ====================================================

def test_each_address_is_matched_against_the_published_records_and_names_the_record() -> None:
    report = assess({EE}, (at("127.0.0.21", LEAF[0], CA[0]), at("127.0.0.22", STALE[0], CA[0])))
    good, stale = report.endpoints
    assert (good.status, good.matched, good.fingerprint) == (Severity.OK, EE, FP)
    assert stale.status == Severity.CRITICAL and stale.matched is None
    assert "127.0.0.22" in stale.text and "matches none of the 1 TLSA record(s)" in stale.text
    assert codes(report) == {"endpoint-unmatched": "CRITICAL"}


def test_a_ta_record_matches_only_when_the_server_sends_the_ca_certificate() -> None:
    report = assess({TA}, (at("127.0.0.21", LEAF[0], CA[0]), at("127.0.0.22", LEAF[0])), params="2 1 1")
    sent_ca, leaf_only = report.endpoints
    assert (sent_ca.status, sent_ca.matched) == (Severity.OK, TA)
    assert leaf_only.status == Severity.CRITICAL, "RFC 7672: a 2 x x record needs the CA in the presented chain"


def test_an_address_presenting_another_certificate_that_still_matches_is_critical_stale() -> None:
    both = {EE, record(3, 1, STALE[0])}
    report = assess(both, (at("127.0.0.22", STALE[0]),))
    assert codes(report)["endpoint-stale"] == "CRITICAL"
    assert report.endpoints[0].matched == record(3, 1, STALE[0]) and "not the deployed" in report.endpoints[0].text


def test_an_address_without_a_handshake_is_a_warning_naming_the_cause() -> None:
    report = assess({EE}, (at("127.0.0.22", error="smtp://dual.example.org:25 (at 127.0.0.22): refused"),))
    assert codes(report) == {"endpoint-unreachable": "WARNING"} and "refused" in report.endpoints[0].text


def test_a_ta_record_of_a_rotated_ca_is_a_warning_when_the_lineage_uses_ta_records() -> None:
    assert codes(assess({TA, OTHER_TA}, params="2 1 1")) == {"ca-mismatch": "WARNING"}
    assert "ca-mismatch" not in codes(assess({EE, OTHER_TA})), "a 3 x x lineage: an admin's own 2 x x is theirs"


def test_whole_certificate_records_get_the_reuse_key_advice_which_changes_no_status() -> None:
    report = assess({record(3, 0, LEAF[0])}, params="3 0 1")
    assert len(report.advice) == 1 and "--reuse-key" in report.advice[0]
    assert report.findings == () and report.status == Severity.OK
    assert assess({EE}).advice == ()


def test_endpoints_and_sender_are_in_the_json_and_the_text() -> None:
    from certbot_dane import statusformat
    report = dataclasses.replace(assess({EE}, (at("127.0.0.21", LEAF[0]),)),
                                 sender=(assessment.SenderAnswer("127.0.0.9:53", NAME, "NOERROR",
                                                                 frozenset({EE}), True),))
    doc = statusformat.to_json(assessment.Report(NOW.timestamp(), (report,)))
    lineage = doc["lineages"][0]
    assert lineage["endpoints"][0] | {"text": ""} == {"endpoint": TARGET, "address": "127.0.0.21", "status": "OK",
                                                       "fingerprint": FP, "matched": EE, "text": ""}
    assert lineage["sender"] == [{"resolver": "127.0.0.9:53", "name": NAME, "rcode": "NOERROR", "secure": True,
                                  "records": [EE], "error": None}]
    text = statusformat.to_text(assessment.Report(NOW.timestamp(), (report,)))
    assert "sender    _25._tcp.dual.example.org. via 127.0.0.9:53: 3 1 1" in text and "(validated)" in text
    assert "endpoint  OK smtp://dual.example.org:25 at 127.0.0.21 presents the deployed certificate" in text


# == real servers: named, Unbound, Postfix, a second TLS server, posttls-finger =============

def _sender_binaries() -> None:
    require_programs(missing_binaries(SENDER_BINARIES), SENDER_APT_PACKAGES)


@pytest.fixture
def resolver(sandbox: Sandbox, tmp_path: Path) -> Iterator[Resolver]:
    """Unbound validating the sandbox's example.org from its KSK, on its own loopback address."""
    _sender_binaries()
    unbound = Resolver(tmp_path / "unbound", pick_address(), "example.org", sandbox.primary)
    unbound.start()
    yield unbound
    unbound.stop()


class WrongAnchorResolver(Resolver):
    """Unbound trusting a key the zone was never signed with: every signature it checks is bogus."""

    def start(self) -> None:
        wrong = ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)[1:]
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "unbound.conf"
        config.write_text(self._config([f"257 3 13 {base64.b64encode(wrong).decode()}"]), encoding="utf-8")
        self._process = subprocess.Popen([shutil.which("unbound") or "unbound", "-d", "-c", str(config)],
                                         cwd=self.workdir, stdin=subprocess.DEVNULL,
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while not self._answers():
            assert time.monotonic() < deadline and self._process.poll() is None, "unbound did not come up"
            time.sleep(0.05)  # polling for readiness, not synchronising on elapsed time

    def _answers(self) -> bool:
        try:
            return self.ask(self.zone, "SOA").rcode() == dns.rcode.SERVFAIL
        except (dns.exception.DNSException, OSError):
            return False


def status_config(s: Scenario, *, resolver: str, verify: list[str]) -> Path:
    """The monitoring user's config over the scenario's state (no key it can read, the state through
    `monitor_group`): the sender's resolver and the endpoints to check."""
    config = s.box.write_config(
        s.tmp / "status.toml", state_dir=s.tmp / "state", deploy_dir=s.tmp / "live", lineages={s.name: s.tlsa},
        extra=f'monitor_group = "{GROUP}"',
        lineage_extra="\n".join([f"params = {json.dumps([str(p) for p in s.params])}", f"tlsa_ttl = {s.ttl}",
                                 f"verify = {json.dumps(verify)}"]),
        status_extra=f'resolver = "{resolver}"\nendpoint_timeout = 5')
    os.chown(config, 0, grp.getgrnam(GROUP).gr_gid)
    config.chmod(0o640)
    return config


def run_status(s: Scenario, config: Path) -> tuple[int, dict[str, Any]]:
    """`status --json` as the monitoring user (nobody, only the monitoring group)."""
    done = as_monitor(s, "status", "--json", config=config)
    assert done.stdout, done.stderr
    return done.returncode, json.loads(done.stdout)["lineages"][0]


def delivered(s: Scenario) -> set[str]:
    """The first certificate through the real deploy hook (as root, state shared with the monitoring group);
    its records, once the primary serves them."""
    monitored(s, GROUP)
    s.deliver(via="hook")
    live = s.records(s.certbot_cert())
    s.wait_until_served(s.tlsa[0], live)
    return live


def finger(resolver: Resolver, tmp: Path, address: str, port: int) -> str:
    """posttls-finger's DANE verdict on dual.example.org:`port` at one address: the host name is pinned to
    that address by an /etc/hosts of its own (`-h native`), TLSA comes from Unbound (`-f`: whatever the
    address records' security), both bind-mounted in a private mount namespace."""
    hosts, resolv, config = tmp / f"hosts-{address}", tmp / "resolv.conf", tmp / "sender"
    hosts.write_text(f"{address} dual.example.org\n")
    resolv.write_text(f"nameserver {resolver.address}\n")
    config.mkdir(exist_ok=True)
    (config / "main.cf").write_text("compatibility_level = 3.6\n")  # a sender with Postfix's defaults
    script = (f"mount --bind {resolv} /etc/resolv.conf && mount --bind {hosts} /etc/hosts && "
              f"exec posttls-finger -c -f -h native -l dane -t 10 -T 20 '[dual.example.org]:{port}'")
    done = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
                          capture_output=True, text=True, timeout=60, env={**os.environ, "MAIL_CONFIG": str(config)})
    return classify(done.stdout + done.stderr)


def test_status_checks_every_address_as_a_sender_and_agrees_with_posttls_finger(sandbox, tmp_path, public_tmp,
                                                                                 resolver):
    """Two addresses for one host: real Postfix with the deployed certificate, another TLS server with a
    stale one. status, run as the monitoring user with no key, names the stale address CRITICAL, the
    Postfix one OK with the record that matched;
    posttls-finger, Postfix's own DANE client asking the same validating Unbound, agrees address by address."""
    good, bad = DUAL_ADDRESSES
    for address in DUAL_ADDRESSES:
        ensure_loopback_address(address)
    port = 25 if all(_free_tcp(a, 25) for a in DUAL_ADDRESSES) else free_port(list(DUAL_ADDRESSES), udp=False)
    s = Scenario(sandbox, public_tmp, "dual.example.org", [f"_{port}._tcp.dual.example.org"], way="hook",
                 params=("3 1 1",))
    live = delivered(s)
    stale = tmp_path / "stale"
    write_certificate(stale, "dual.example.org")
    postfix = Receiver(good, s.tmp / "live" / s.name / "combined.pem", port=port, hostname="dual.example.org")
    other = TlsEndpoint("smtp", stale / "fullchain.pem", stale / "privkey.pem", host=bad, port=port)
    config = status_config(s, resolver=resolver.address, verify=[f"smtp://dual.example.org:{port}"])
    postfix.start()
    try:
        with other.start():
            code, lineage = run_status(s, config)
            verdicts = {e["address"]: (e["status"], e["matched"]) for e in lineage["endpoints"]}
            assert verdicts == {good: ("OK", next(iter(live))), bad: ("CRITICAL", None)}, lineage["endpoints"]
            assert code == 2 and findings(lineage) == {"endpoint-unmatched": "CRITICAL"}
            assert lineage["sender"][0]["secure"] is True and set(lineage["sender"][0]["records"]) == live
            expires = lineage["names"][0]["servers"][0]["rrsig_expires"]
            assert expires and datetime.datetime.fromisoformat(expires.replace("Z", "+00:00")) > NOW, \
                "named's inline signing puts a future RRSIG expiry on the TLSA RRset"
            assert (finger(resolver, tmp_path, good, port), finger(resolver, tmp_path, bad, port)) == (
                VERIFIED, FAILED), "posttls-finger must agree with status on each address"
            exposed = as_monitor(s, "status", "--prometheus", config=config)
            samples = {(m.name, m.labels.get("address")): m.value
                       for family in text_string_to_metric_families(exposed.stdout) for m in family.samples
                       if m.name.startswith("certbot_dane_endpoint_")}
            assert samples == {("certbot_dane_endpoint_status", good): 0, ("certbot_dane_endpoint_status", bad): 2,
                               ("certbot_dane_endpoint_matched", good): 1, ("certbot_dane_endpoint_matched", bad): 0}
            text = as_monitor(s, "status", config=config).stdout
            assert text.startswith("DANE CRITICAL") and f"CRITICAL smtp://dual.example.org:{port} at {bad}" in text
            other.certfile, other.keyfile = s.tmp / "live" / s.name / "fullchain.pem", \
                s.tmp / "live" / s.name / "privkey.pem"
            other.reload()
            code, lineage = run_status(s, config)
            assert {e["address"]: e["status"] for e in lineage["endpoints"]} == {good: "OK", bad: "OK"}
            assert code == 0 and findings(lineage) == {}
            assert finger(resolver, tmp_path, bad, port) == VERIFIED
    finally:
        postfix.stop()
        postfix.remove()


def test_a_bogus_signature_seen_by_the_validating_resolver_is_critical(sandbox, tmp_path, public_tmp):
    """Unbound trusting another key answers SERVFAIL: senders behind it defer mail, so status, run as the
    monitoring user, says CRITICAL although every authoritative server serves the right records."""
    _sender_binaries()
    s = Scenario(sandbox, public_tmp, "bogus.example.org", ["_25._tcp.bogus.example.org"], way="hook",
                 params=("3 1 1",))
    delivered(s)
    bogus = WrongAnchorResolver(tmp_path / "unbound", pick_address(), "example.org", sandbox.primary)
    bogus.start()
    try:
        code, lineage = run_status(s, status_config(s, resolver=bogus.address, verify=[]))
    finally:
        bogus.stop()
    assert code == 2 and findings(lineage) == {"resolver-bogus": "CRITICAL"}
    assert lineage["sender"][0]["rcode"] == "SERVFAIL" and lineage["sender"][0]["secure"] is False


def _free_tcp(address: str, port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind((address, port))
        except OSError:
            return False
    return True


def test_a_server_answering_servfail_for_dnskey_is_unknown_not_unsigned() -> None:
    """gather() through zone.ask: SERVFAIL for the zone's DNSKEY says nothing about signing (a fault injected
    with a client that answers from a table: no real server SERVFAILs one type on demand)."""
    from certbot_dane import status
    from certbot_dane.config import DnsSettings
    from certbot_dane.dnsclient import DnsClient
    from certbot_dane.dnssec import NONE, SignedAnswer
    from certbot_dane.records import Answer

    class Table(DnsClient):
        def find_zone(self, name: str) -> str:
            return ZONE

        def servers(self, zone: str) -> tuple[Endpoint, ...]:
            return (P,)

        def query(self, server: Endpoint, name: str, rdtype: str) -> Answer:
            return Answer("NOERROR", frozenset({"ns1.example.org. h.example.org. 7 1 1 1 1"}), 60)

        def query_dnssec(self, server: Endpoint, name: str, rdtype: str) -> SignedAnswer:
            return SignedAnswer("SERVFAIL" if rdtype == "DNSKEY" else "NOERROR", True, None, None)

    client = Table(DnsSettings(P, None, (P,), 1.0, 1.0))
    lineage = LineageSettings("dual", (NAME,), (TlsaParams.from_text("3 1 1"),))
    observed = status.gather(client, [lineage], NOW.timestamp())
    zone_answer = observed.zones[ZONE][P]
    assert (zone_answer.rcode, zone_answer.serial, zone_answer.dnssec.status) == ("SERVFAIL", 7, NONE)
    assert "cannot tell whether the zone is signed" in zone_answer.dnssec.reason
    assert observed.tlsa[NAME][P].dnssec.status == NONE
    report = assessment.assess(lineage, Local(LineageState("dual"), None, None), observed, NOW.timestamp())
    assert "dnssec-missing" not in codes(report) and codes(report)["server-error"] == "WARNING"
