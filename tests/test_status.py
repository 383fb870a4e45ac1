"""`certbot-dane status`: pure assessment tables, DNSSEC verdicts, and real situations on real named."""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import pty
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import dns.dnssec
import dns.name
import dns.rdatatype
import dns.rrset
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from certbot_dane import assessment, dnssec, state, status, statusformat
from certbot_dane.assessment import CertView, Local, Observed, Served, Severity, ZoneAnswer
from certbot_dane.config import Endpoint, LineageSettings, load
from certbot_dane.dnsclient import DnsClient
from certbot_dane.dnssec import Verdict
from certbot_dane.records import Record, ZoneUpdate
from certbot_dane.rollover import LineageState, Published, Staged, Version
from certbot_dane.tlsa import TlsaParams, TlsaRecord, association_data, load_chain
from tests import scenario
from tests.scenario import REPO, Scenario, findings, lineage_of, served, status_json

# == the pure core: assess() from values ================================================

NOW = 1_900_000_000.0
P, S = Endpoint("127.0.0.1", 53), Endpoint("127.0.0.2", 53)
ZONE, NAME = "example.org.", "_25._tcp.mx.example.org."
OLD, NEW, FOREIGN, GONE = ("3 0 1 " + "aa" * 32), ("3 0 1 " + "bb" * 32), ("2 1 1 " + "cd" * 32), ("3 0 1 " + "ee" * 32)
CA = "2 1 1 " + "ca" * 32
VALID = Verdict(dnssec.VALID)
LINEAGE = LineageSettings("mx.example.org", (NAME,), (TlsaParams(3, 0, 1),))


def cert(value: str, days: float = 60.0, also: frozenset[str] = frozenset()) -> CertView:
    not_after = datetime.datetime.fromtimestamp(NOW + days * 86400, datetime.UTC)
    return CertView(value[6:], "mx.example.org", "1f", not_after, (value,), frozenset({value}) | also)


def observed(served: dict[Endpoint, set[str]], serials: dict[Endpoint, int] | None = None, ttl: int = 60,
             zone_dnssec: Verdict = VALID, name_dnssec: Verdict = VALID, rrsig_expires: float | None = None,
             sender: tuple[str | None, set[str], bool] | None = None) -> Observed:
    serials = serials or {server: 7 for server in served}
    senders = {} if sender is None else {NAME: assessment.SenderAnswer(
        "127.0.0.9:53", NAME, sender[0], frozenset(sender[1]), sender[2], None if sender[0] else "timed out")}
    return Observed(
        {NAME: ZONE},
        {NAME: {s: Served("NOERROR", frozenset(v), ttl if v else None, name_dnssec, rrsig_expires)
                for s, v in served.items()}},
        {ZONE: {s: ZoneAnswer("NOERROR", serials[s], zone_dnssec) for s in served}}, senders)


STEADY = LineageState("mx.example.org", deployed=Version(OLD[6:], (OLD,)), published=(Published(NAME, OLD, 1.0),))


def staged_state(served_at: float | None = None, staged_at: float = NOW - 60, no_wait: str | None = None,
                 old_ttl: int = 60) -> LineageState:
    return dataclasses.replace(
        STEADY, staged=Staged(NEW[6:], (NEW,), staged_at, served_at, old_ttl, no_wait, (NAME,)),
        published=(*STEADY.published, Published(NAME, NEW, staged_at)))


def run(st: LineageState = STEADY, deployed: Any = ..., staged: Any = ..., obs: Observed | None = None,
        now: float = NOW) -> assessment.LineageReport:
    """assess() one lineage; the certificate views default to those the state names (None: files gone)."""
    deployed = (cert(OLD) if st.deployed else None) if deployed is ... else deployed
    staged = (cert(NEW, 90) if st.staged else None) if staged is ... else staged
    return assessment.assess(LINEAGE, Local(st, deployed, staged), obs or observed({P: {OLD}}), now)


def codes(report: assessment.LineageReport) -> dict[str, str]:
    return {f.code: f.severity.name for f in report.findings}


PHASES = [
    # (case, state, served by P and S, expected phase, expected safe_at)
    ("nothing deployed or staged", LineageState("mx.example.org"), set(), "new", None),
    ("deployed, nothing staged", STEADY, {OLD}, "steady", None),
    ("staged, a server lacks its record", staged_state(), None, "waiting-for-servers", None),
    ("staged, served 10 s ago: 2 x TTL to go", staged_state(served_at=NOW - 10), {OLD, NEW}, "waiting-for-ttl",
     NOW - 10 + 120),
    ("staged, served before the clock started", staged_state(), {OLD, NEW}, "waiting-for-ttl", NOW + 120),
    ("staged, 2 x TTL passed", staged_state(served_at=NOW - 200), {OLD, NEW}, "ready", NOW - 80),
    ("swapped, not yet reloaded", dataclasses.replace(STEADY, unverified=True), {OLD}, "unverified", None),
    ("last run failed", dataclasses.replace(STEADY, unverified=True, error="reload failed: boom"), {OLD}, "error",
     None),
]


@pytest.mark.parametrize(("case", "st", "served", "phase", "safe_at"), PHASES, ids=[p[0] for p in PHASES])
def test_phase_follows_the_state_and_the_gate(case, st, served, phase, safe_at):
    obs = observed({P: {OLD, NEW}, S: {OLD}}) if served is None else observed({P: served, S: served})
    report = run(st, obs=obs)
    assert report.phase == phase
    assert report.safe_at == safe_at


FINDINGS = [
    # (case, keyword arguments of run(), expected {code: severity}, expected status)
    ("steady: nothing to report", {}, {}, Severity.OK),
    ("a server serves records, none for the deployed certificate",
     {"obs": observed({P: {OLD, FOREIGN}, S: {FOREIGN}})},
     {"deployed-unmatched": "CRITICAL", "servers-differ": "WARNING"}, Severity.CRITICAL),
    ("an admin's 2 1 1 of the issuing CA still accepts the deployed certificate",
     {"deployed": cert(OLD, also=frozenset({CA})), "obs": observed({P: {CA}})}, {}, Severity.OK),
    ("no TLSA RRset on a server", {"obs": observed({P: {OLD}, S: set()})},
     {"no-tlsa-rrset": "WARNING", "servers-differ": "WARNING"}, Severity.WARNING),
    ("the deployed certificate expired", {"deployed": cert(OLD, days=-1)}, {"deployed-expired": "CRITICAL"},
     Severity.CRITICAL),
    ("the deployed certificate expires in 5 days", {"deployed": cert(OLD, days=5)}, {"expires-soon": "WARNING"},
     Severity.WARNING),
    ("the deployed files are gone", {"deployed": None, "st": STEADY, "obs": observed({P: {OLD}})},
     {"deployed-missing": "CRITICAL"}, Severity.CRITICAL),
    ("the staged certificate expires before its gate opens",
     {"st": staged_state(served_at=NOW), "staged": cert(NEW, days=60 / 86400), "obs": observed({P: {OLD, NEW}})},
     {"staged-expires-first": "CRITICAL"}, Severity.CRITICAL),
    ("the staged certificate expired after its gate opened",
     {"st": staged_state(served_at=NOW - 1000), "staged": cert(NEW, days=-1 / 86400), "obs": observed({P: {OLD, NEW}})},
     {"staged-expires-first": "CRITICAL", "deploy-overdue": "WARNING"}, Severity.CRITICAL),
    ("the staged certificate outlives its gate",
     {"st": staged_state(served_at=NOW), "staged": cert(NEW, days=1), "obs": observed({P: {OLD, NEW}})}, {},
     Severity.OK),
    ("a secondary's SOA serial is behind", {"obs": observed({P: {OLD}, S: {OLD}}, serials={P: 9, S: 7})},
     {"server-lags": "WARNING"}, Severity.WARNING),
    ("serial arithmetic wraps (RFC 1982)", {"obs": observed({P: {OLD}, S: {OLD}}, serials={P: 2, S: 2**32 - 2})},
     {"server-lags": "WARNING"}, Severity.WARNING),
    ("a secondary lacks the staged record", {"st": staged_state(),
                                             "obs": observed({P: {OLD, NEW}, S: {OLD}}, serials={P: 8, S: 7})},
     {"server-lags": "WARNING"}, Severity.WARNING),
    ("servers differ under one SOA serial (a broken transfer)", {"obs": observed({P: {OLD}, S: {OLD, FOREIGN}})},
     {"servers-differ": "WARNING"}, Severity.WARNING),
    ("a TLSA RRSIG expires within the horizon", {"obs": observed({P: {OLD}}, rrsig_expires=NOW + 86400)},
     {"rrsig-expiring": "WARNING"}, Severity.WARNING),
    ("a TLSA RRSIG expires after the horizon", {"obs": observed({P: {OLD}}, rrsig_expires=NOW + 5 * 86400)}, {},
     Severity.OK),
    ("more than 12 records in the RRset", {"obs": observed({P: {OLD, *(f"3 1 1 {i:064x}" for i in range(12))}})},
     {"rrset-large": "WARNING"}, Severity.WARNING),
    ("the resolver says SERVFAIL (bogus)", {"obs": observed({P: {OLD}}, sender=("SERVFAIL", set(), False))},
     {"resolver-bogus": "CRITICAL"}, Severity.CRITICAL),
    ("the resolver does not validate", {"obs": observed({P: {OLD}}, sender=("NOERROR", {OLD}, False))},
     {"resolver-insecure": "WARNING"}, Severity.WARNING),
    ("the resolver's cached RRset lacks the deployed record",
     {"obs": observed({P: {OLD}}, sender=("NOERROR", {GONE}, True))}, {"resolver-unmatched": "CRITICAL"},
     Severity.CRITICAL),
    ("the resolver validates and matches", {"obs": observed({P: {OLD}}, sender=("NOERROR", {OLD}, True))}, {},
     Severity.OK),
    ("the resolver does not answer", {"obs": observed({P: {OLD}}, sender=(None, set(), False))},
     {"resolver-unreachable": "WARNING"}, Severity.WARNING),
    ("a record of ours that matches nothing lingers", {"obs": observed({P: {OLD, GONE}}),
                                                        "st": dataclasses.replace(STEADY, published=(
                                                            *STEADY.published, Published(NAME, GONE, 1.0)))},
     {"stale-record": "WARNING"}, Severity.WARNING),
    ("a record nobody published is foreign, not stale", {"obs": observed({P: {OLD, GONE}})}, {}, Severity.OK),
    ("unsigned zone", {"obs": observed({P: {OLD}}, zone_dnssec=Verdict(dnssec.UNSIGNED, "no DNSKEY"),
                                       name_dnssec=Verdict(dnssec.UNSIGNED, "no DNSKEY"))},
     {"dnssec-missing": "WARNING"}, Severity.WARNING),
    ("TLSA RRSIG does not validate", {"obs": observed({P: {OLD}}, name_dnssec=Verdict(dnssec.BOGUS, "bad sig"))},
     {"dnssec-bogus": "CRITICAL"}, Severity.CRITICAL),
    ("ready for more than 5 minutes", {"st": staged_state(served_at=NOW - 1000), "obs": observed({P: {OLD, NEW}})},
     {"deploy-overdue": "WARNING"}, Severity.WARNING),
    ("served everywhere for 10 minutes, clock never started",
     {"st": staged_state(staged_at=NOW - 600), "obs": observed({P: {OLD, NEW}})}, {"deploy-overdue": "WARNING"},
     Severity.WARNING),
    ("ready a minute ago: not overdue", {"st": staged_state(served_at=NOW - 180), "obs": observed({P: {OLD, NEW}})},
     {}, Severity.OK),
    ("the staged files are gone", {"st": staged_state(served_at=NOW), "obs": observed({P: {OLD, NEW}}),
                                   "staged": None}, {"staged-missing": "WARNING"}, Severity.WARNING),
    ("the last run failed", {"st": dataclasses.replace(STEADY, error="boom")}, {"last-run-failed": "WARNING"},
     Severity.WARNING),
    ("configured but never issued", {"st": LineageState("mx.example.org"), "obs": observed({P: set()})},
     {"nothing-deployed": "WARNING"}, Severity.WARNING),
]


@pytest.mark.parametrize(("case", "kwargs", "expected", "severity"), FINDINGS, ids=[f[0] for f in FINDINGS])
def test_each_situation_gives_its_finding_and_severity(case, kwargs, expected, severity):
    report = run(**kwargs)
    assert codes(report) == expected
    assert report.status == severity
    assert [f.severity for f in report.findings] == sorted((f.severity for f in report.findings), reverse=True)


def test_served_records_are_classified_deployed_staged_previous_stale_or_foreign():
    st = dataclasses.replace(staged_state(), previous=Version(GONE[6:], (GONE,)), unverified=True,
                             published=(*staged_state().published, Published(NAME, GONE, 1.0),
                                        Published(NAME, "3 0 1 " + "11" * 32, 1.0)))
    stale = "3 0 1 " + "11" * 32
    report = run(st, obs=observed({P: {OLD, NEW, GONE, stale, FOREIGN}}))
    assert {r.value: r.match for r in report.names[0].servers[0].records} == {
        OLD: "deployed", NEW: "staged", GONE: "previous", stale: "stale", FOREIGN: "foreign"}
    assert {r.value for r in report.names[0].servers[0].records if r.accepts_deployed} == {OLD}


def test_json_document_keys_are_all_documented_and_stable():
    report = assessment.Report(NOW, (run(staged_state(served_at=NOW - 10), obs=observed({P: {OLD, NEW, FOREIGN}})),))
    doc = statusformat.to_json(report)
    assert json.loads(json.dumps(doc)) == doc
    assert doc["schema_version"] == 1 and doc["status"] == "OK" and doc["error"] is None
    keys: set[str] = set()

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            keys.update(value)
            for item in value.values():
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    walk(doc)
    documented = (REPO / "docs" / "status-json.md").read_text()
    assert {k for k in keys if f"`{k}`" not in documented} == set()
    assert {k for k in keys if f'"{k}"' not in status.__doc__} == set()
    lineage = doc["lineages"][0]
    assert lineage["phase"] == "waiting-for-ttl" and lineage["safe_at"] == "2030-03-17T17:48:30Z"


def test_human_output_is_coloured_only_when_asked():
    report = assessment.Report(NOW, (run(obs=observed({P: {OLD, FOREIGN}, S: {FOREIGN}})),))
    plain = statusformat.to_text(report)
    assert "\033[" not in plain
    assert plain.splitlines()[0].startswith("DANE CRITICAL: 1 lineage(s), 1 critical, 1 warning; mx.example.org: ")
    assert "\033[1;31mCRITICAL" in statusformat.to_text(report, colour=True)


def test_summary_line_names_the_worst_finding_first():
    report = assessment.Report(NOW, (run(obs=observed({P: {OLD}, S: {OLD}}, serials={P: 9, S: 7})),
                                 dataclasses.replace(run(deployed=cert(OLD, days=-1)), lineage="b")))
    assert re.match(r"DANE CRITICAL: 2 lineage\(s\), 1 critical, 1 warning; b: the deployed certificate",
                    statusformat.summary(report))


# == DNSSEC verdicts: real signatures made with dns.dnssec ===============================

def _signed(zone: str = ZONE) -> tuple[dns.rrset.RRset, dns.rrset.RRset, dns.rrset.RRset, dns.rrset.RRset, Any]:
    key = ec.generate_private_key(ec.SECP256R1())
    dnskey = dns.dnssec.make_dnskey(key.public_key(), "ECDSAP256SHA256", flags=257)
    keys = dns.rrset.from_rdata(zone, 60, dnskey)
    tlsa = dns.rrset.from_text(NAME, 60, "IN", "TLSA", OLD)

    def sign(rrset: dns.rrset.RRset, expiration: float = NOW + 3600) -> dns.rrset.RRset:
        sig = dns.dnssec.sign(rrset, key, dns.name.from_text(zone), dnskey, inception=NOW - 3600,
                              expiration=expiration)
        return dns.rrset.from_rdata(rrset.name, 60, sig)

    return keys, sign(keys), tlsa, sign(tlsa), sign


def test_dnssec_verdicts_from_real_signatures():
    keys, key_sigs, tlsa, tlsa_sigs, sign = _signed()
    other_keys, *_ = _signed()
    tampered = dns.rrset.from_text(NAME, 60, "IN", "TLSA", NEW)
    table = [
        (dnssec.check_zone(ZONE, keys, key_sigs, NOW), dnssec.VALID),
        (dnssec.check_zone(ZONE, None, None, NOW), dnssec.UNSIGNED),
        (dnssec.check_zone(ZONE, keys, None, NOW), dnssec.BOGUS),
        (dnssec.check_rrset(ZONE, tlsa, tlsa_sigs, keys, NOW), dnssec.VALID),
        (dnssec.check_rrset(ZONE, tampered, tlsa_sigs, keys, NOW), dnssec.BOGUS),
        (dnssec.check_rrset(ZONE, tlsa, None, keys, NOW), dnssec.BOGUS),
        (dnssec.check_rrset(ZONE, tlsa, sign(tlsa, expiration=NOW - 1), keys, NOW), dnssec.BOGUS),
        (dnssec.check_rrset(ZONE, tlsa, tlsa_sigs, other_keys, NOW), dnssec.BOGUS),
        (dnssec.check_rrset(ZONE, tlsa, None, None, NOW), dnssec.UNSIGNED),
        (dnssec.check_rrset(ZONE, None, None, keys, NOW), dnssec.NONE),
    ]
    assert [verdict.status for verdict, _ in table] == [expected for _, expected in table]
    assert "does not validate against the DNSKEY of example.org." in dnssec.check_rrset(
        ZONE, tampered, tlsa_sigs, keys, NOW).reason
    assert dnssec.worst([Verdict(dnssec.VALID), Verdict(dnssec.UNSIGNED), Verdict(dnssec.NONE)]) == dnssec.UNSIGNED


# == real situations on real named ==========================================================
# Certificates are handed over as certbot hands them to the deploy hook; `certbot-dane status` is the real
# command where it is what is tested, and runs in-process at the injected clock's time after the clock moved.

DAY = datetime.timedelta(days=1)


def hook_stage(s: Scenario, lifetime: datetime.timedelta, age: datetime.timedelta = datetime.timedelta(hours=1)
               ) -> set[str]:
    """Hand a fresh self-signed certificate to the deploy hook, as certbot does after a renewal.

    Returns its TLSA records, once the primary serves them (inline signing applies updates a moment later).
    """
    records = s.records(s.deliver(via="hook", lifetime=lifetime, age=age))
    for name in s.tlsa:
        s.wait_until_served(name, records)
    return records


def tsig_update(s: Scenario, add: tuple[Record, ...] = (), remove: tuple[Record, ...] = ()) -> None:
    client = DnsClient(load(s.config).dns)
    client.update(ZoneUpdate(client.find_zone((add or remove)[0].name), add=add, remove=remove))


def tree(path: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file() and p.name != "lock"}


def test_steady_after_bootstrap_is_ok_reads_live_dns_changes_nothing_and_needs_no_lock(sandbox, tmp_path):
    name = "st-steady.example.org"
    s = Scenario(sandbox, tmp_path, name, [f"_25._tcp.{name}", f"_465._tcp.{name}"])
    live = s.bootstrapped(lifetime=1825 * DAY)
    before, serial = tree(tmp_path), sandbox.primary.soa_serial("example.org")
    with state.locked(tmp_path / "state", wait=False):  # a deploy run holds the lock: status still answers
        code, doc = status_json(s)
    assert code == 0 and doc["status"] == "OK" and doc["schema_version"] == 1
    lineage = lineage_of(doc, name)
    assert lineage["phase"] == "steady" and findings(lineage) == {} and lineage["staged"] is None
    assert lineage["deployed"]["fingerprint"] == s.state()["deployed"]["fingerprint"]
    assert lineage["deployed"]["subject"] == name and 1800 < lineage["deployed"]["days_left"] < 1830
    assert set(lineage["deployed"]["records"]) == live
    primary = f"127.0.0.1:{sandbox.port}"
    for tlsa in s.tlsa:
        assert served(lineage, tlsa) == {primary: dict.fromkeys(live, "deployed")}
    server = lineage["names"][0]["servers"][0]
    assert server["dnssec"]["status"] == "valid" and server["soa_serial"] == sandbox.primary.soa_serial("example.org")
    assert lineage["dnssec"] == "valid" and lineage["zones"][0]["signed"] is True
    assert tree(tmp_path) == before and sandbox.primary.soa_serial("example.org") == serial

    done = s.cli("status")
    assert done.returncode == 0
    assert done.stdout.startswith("DANE OK: 1 lineage(s), 0 critical, 0 warnings")
    assert f"{name}  OK  steady" in done.stdout and "\033[" not in done.stdout
    assert f"{primary}  soa {serial}  ttl 2  3 0 1 {sorted(live)[0][6:14]}.. deployed" in done.stdout


def _on_terminal(s: Scenario, env: dict[str, str]) -> str:
    leader, follower = pty.openpty()
    process = subprocess.Popen([str(Path(sys.executable).parent / "certbot-dane"), "-c", str(s.config), "status"],
                               stdout=follower, stderr=subprocess.DEVNULL, env={**os.environ, **s.env, **env})
    os.close(follower)
    output = b""
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        output += chunk
    os.close(leader)
    assert process.wait(timeout=60) == 0
    return output.decode()


def test_colour_on_a_terminal_unless_no_color(sandbox, tmp_path):
    name = "st-colour.example.org"
    s = Scenario(sandbox, tmp_path, name, [f"_25._tcp.{name}"])
    hook_stage(s, lifetime=90 * DAY)
    assert "\033[32mOK\033[0m" in _on_terminal(s, {"NO_COLOR": ""})  # set but empty: colour (no-color.org)
    assert "\033[" not in _on_terminal(s, {"NO_COLOR": "1"})


def test_staged_certificate_waits_for_ttls_with_its_safe_moment_then_is_ready(sandbox, tmp_path):
    name = "st-wait.example.org"
    s = Scenario(sandbox, tmp_path, name, [f"_25._tcp.{name}"], ttl=300)
    old, new = s.renewed(foreign=None)
    assert s.cli("deploy").returncode == 0  # starts the gate's clock
    served_at = s.state()["staged"]["served_at"]
    code, doc = status_json(s)
    assert code == 0 and doc["status"] == "OK"
    lineage = lineage_of(doc)
    assert lineage["phase"] == "waiting-for-ttl"
    safe_at = datetime.datetime.fromtimestamp(served_at + 600, datetime.UTC)
    assert lineage["safe_at"] == safe_at.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert lineage["staged"]["fingerprint"] == s.state()["staged"]["fingerprint"]
    assert served(lineage, s.tlsa[0]) == {f"127.0.0.1:{sandbox.port}": {**dict.fromkeys(old, "deployed"),
                                                                      **dict.fromkeys(new, "staged")}}
    done = s.cli("status")
    assert f"{name}  OK  staged, waiting for TTLs (safe at {lineage['safe_at']})" in done.stdout

    # The timer stopped an hour ago (its clock moved back: the same as waiting an hour): overdue.
    st = s.state()
    st["staged"]["served_at"] -= 3600
    st["staged"]["served_uptime"] -= 3600   # the gate counts in time since boot
    state.write_json(tmp_path / "state" / "lineages" / f"{name}.json", st)
    code, doc = status_json(s)
    lineage = lineage_of(doc)
    assert code == 1 and lineage["phase"] == "ready" and findings(lineage) == {"deploy-overdue": "WARNING"}
    assert "is certbot-dane.timer running?" in lineage["findings"][0]["text"]


def test_ready_to_deploy_once_two_ttls_passed(sandbox, tmp_path):
    name = "st-ready.example.org"
    s = Scenario(sandbox, tmp_path, name, [f"_25._tcp.{name}"], ttl=1)
    s.renewed(foreign=None)
    assert s.deploy().returncode == 0
    code, doc = s.status()
    assert (code, lineage_of(doc)["phase"]) == (0, "waiting-for-ttl")
    s.wait_out_gate()
    code, doc = s.status()
    assert code == 0 and lineage_of(doc)["phase"] == "ready" and findings(lineage_of(doc)) == {}


def test_lagging_secondary_is_a_warning_naming_it_until_it_catches_up(make_sandbox, tmp_path):
    box = make_sandbox(secondary=True, pebble=False)
    name = "st-lag.example.org"
    s = Scenario(box, tmp_path, name, [f"_25._tcp.{name}"], deploy_nameservers=box.nameservers)
    old = s.bootstrapped()
    box.secondary.retransfer("example.org")
    new = s.records(s.deliver())
    s.wait_until_served(s.tlsa[0], old | new)

    code, doc = status_json(s)
    lineage = lineage_of(doc)
    secondary, primary = f"127.0.0.2:{box.port}", f"127.0.0.1:{box.port}"
    assert code == 1 and doc["status"] == "WARNING"
    assert lineage["phase"] == "waiting-for-servers" and secondary in lineage["reason"]
    assert findings(lineage) == {"server-lags": "WARNING"}
    texts = [f["text"] for f in lineage["findings"]]
    assert any(t.startswith(f"{secondary} serves zone example.org. at SOA serial") for t in texts)
    assert any(t.startswith(f"{secondary} does not serve the staged records at _25._tcp.{name}.") for t in texts)
    assert served(lineage, s.tlsa[0]) == {primary: {**dict.fromkeys(old, "deployed"), **dict.fromkeys(new, "staged")},
                                          secondary: dict.fromkeys(old, "deployed")}
    serials = {z["server"]: z["soa_serial"] for z in lineage["zones"][0]["servers"]}
    assert serials[secondary] < serials[primary] == box.primary.soa_serial("example.org")

    box.secondary.retransfer("example.org")
    code, doc = status_json(s)
    assert code == 0 and lineage_of(doc)["phase"] == "waiting-for-ttl" and findings(lineage_of(doc)) == {}


def test_deployed_record_removed_by_hand_is_critical(sandbox, tmp_path):
    name = "st-removed.example.org"
    s = Scenario(sandbox, tmp_path, name, [f"_25._tcp.{name}", f"_587._tcp.{name}"])
    live = s.bootstrapped(ca=scenario.CA())
    s.add_by_hand(s.tlsa[0], FOREIGN)
    tsig_update(s, remove=tuple(Record(s.tlsa[0].lower() + ".", "TLSA", v) for v in live))
    s.wait_until_exactly(s.tlsa[0], {FOREIGN})

    code, doc = status_json(s)
    lineage = lineage_of(doc)
    assert code == 2 and doc["status"] == "CRITICAL" and lineage["status"] == "CRITICAL"
    assert findings(lineage) == {"deployed-unmatched": "CRITICAL"}
    assert f"at _25._tcp.{name}., none matching the deployed certificate" in lineage["findings"][0]["text"]
    primary = f"127.0.0.1:{sandbox.port}"
    assert served(lineage, s.tlsa[0]) == {primary: {FOREIGN: "foreign"}}
    assert served(lineage, s.tlsa[1]) == {primary: dict.fromkeys(live, "deployed")}
    done = s.cli("status")
    assert done.returncode == 2 and done.stdout.startswith("DANE CRITICAL: 1 lineage(s), 1 critical, 0 warnings")

    # The admin pins the issuing CA (2 1 1): senders accept the deployed certificate again.
    issuer = load_chain((tmp_path / "live" / name / "fullchain.pem").read_bytes())[1]
    pin = TlsaRecord(2, 1, 1, association_data(issuer, 1, 1)).to_text()
    s.add_by_hand(s.tlsa[0], pin)
    code, doc = status_json(s)
    assert code == 0 and served(lineage_of(doc), s.tlsa[0])[primary] == {FOREIGN: "foreign", pin: "foreign"}
    records = lineage_of(doc)["names"][0]["servers"][0]["records"]
    assert {r["value"]: r["accepts_deployed"] for r in records} == {FOREIGN: False, pin: True}


def test_stale_record_left_by_a_refused_retire_is_a_warning_until_a_run_retires_it(sandbox, tmp_path):
    name = "st-stale.example.org"
    s = Scenario(sandbox, tmp_path, name, [f"_25._tcp.{name}"], ttl=1)
    old, new = s.renewed(foreign=None)
    assert s.deploy().returncode == 0
    s.wait_out_gate()
    # The admin tightened update-policy: this run deploys but its retire UPDATE is REFUSED.
    refused = tmp_path / "refused.toml"
    refused.write_text(s.config.read_text().replace(str(sandbox.key.path), str(sandbox.intruder_key.path)))
    refused.chmod(0o600)
    done = s.deploy(config=refused)
    assert done.returncode == 1 and "REFUSED" in done.stderr
    assert s.deployed() == s.certbot_cert()

    code, doc = s.status()
    lineage = lineage_of(doc)
    assert code == 1 and findings(lineage) == {"stale-record": "WARNING", "last-run-failed": "WARNING"}
    assert lineage["phase"] == "error" and "REFUSED" in lineage["reason"]
    assert served(lineage, s.tlsa[0]) == {f"127.0.0.1:{sandbox.port}": {**dict.fromkeys(old, "stale"),
                                                                      **dict.fromkeys(new, "deployed")}}

    assert s.deploy().returncode == 0  # with the granted key, the next run retires it
    s.wait_until_exactly(s.tlsa[0], new)
    code, doc = s.status()
    lineage = lineage_of(doc)
    assert findings(lineage) == {} and code == 0, "a fully successful run clears the last error"
    assert lineage["phase"] == "steady"
    assert served(lineage, s.tlsa[0]) == {f"127.0.0.1:{sandbox.port}": dict.fromkeys(new, "deployed")}


def test_unsigned_zone_is_a_dnssec_warning(sandbox, tmp_path):
    name = "st-nosig.unsigned.example"
    s = Scenario(sandbox, tmp_path, name, [f"_25._tcp.{name}"])
    s.bootstrapped()
    code, doc = status_json(s)
    lineage = lineage_of(doc)
    assert code == 1 and findings(lineage) == {"dnssec-missing": "WARNING"}
    assert lineage["dnssec"] == "unsigned" and lineage["zones"][0] == {
        "zone": "unsigned.example.", "signed": False, "servers": [
            {"server": f"127.0.0.1:{sandbox.port}", "rcode": "NOERROR",
             "soa_serial": sandbox.primary.soa_serial("unsigned.example"),
             "dnssec": {"status": "unsigned", "reason": "zone unsigned.example. has no DNSKEY RRset"}}]}
    assert "DANE without DNSSEC protects nothing" in lineage["findings"][0]["text"]


def test_expired_deployed_certificate_is_critical(sandbox, tmp_path):
    name = "st-expired.example.org"
    s = Scenario(sandbox, tmp_path, name, [f"_25._tcp.{name}"], way="hook")
    s.bootstrapped(lifetime=datetime.timedelta(hours=1, seconds=30), age=datetime.timedelta(hours=1))
    code, doc = s.status()
    assert (code, findings(lineage_of(doc))) == (1, {"expires-soon": "WARNING"})
    s.clock.advance(31)  # the certificate's last 30 s pass
    code, doc = s.status()
    lineage = lineage_of(doc)
    assert code == 2 and findings(lineage) == {"deployed-expired": "CRITICAL"}
    assert lineage["deployed"]["expired"] and lineage["deployed"]["days_left"] <= 0 and lineage["phase"] == "steady"


def test_deployed_certificate_close_to_expiry_is_a_warning(sandbox, tmp_path):
    name = "st-soon.example.org"
    s = Scenario(sandbox, tmp_path, name, [f"_25._tcp.{name}"], way="hook")
    hook_stage(s, lifetime=10 * DAY)
    code, doc = status_json(s)
    lineage = lineage_of(doc)
    assert code == 1 and findings(lineage) == {"expires-soon": "WARNING"}
    assert 9.9 < lineage["deployed"]["days_left"] < 10


def test_staged_certificate_that_expires_before_its_gate_opens_is_critical(sandbox, tmp_path):
    name = "st-short.example.org"
    s = Scenario(sandbox, tmp_path, name, [f"_25._tcp.{name}"], way="hook", ttl=86400)
    hook_stage(s, lifetime=90 * DAY)  # bootstrap, records with a one-day TTL
    hook_stage(s, lifetime=datetime.timedelta(days=1), age=datetime.timedelta(minutes=1))  # a one-day certificate
    assert s.staged() is not None
    code, doc = status_json(s)
    lineage = lineage_of(doc)
    assert code == 2 and findings(lineage) == {"staged-expires-first": "CRITICAL"}
    assert lineage["phase"] == "waiting-for-ttl" and lineage["staged"]["days_left"] <= 1
    assert lineage["safe_at"] > lineage["staged"]["not_after"]


def test_deployed_but_unverified_after_a_kill_then_error_when_the_reload_fails(sandbox, tmp_path):
    name = "st-unverified.example.org"
    flag = tmp_path / "broken"
    reload = f"sh -c 'if [ -e {flag} ]; then echo postfix: fatal: boom >&2; exit 3; fi'"
    s = Scenario(sandbox, tmp_path, name, [f"_25._tcp.{name}"], ttl=1, reload=[reload])
    s.renewed(foreign=None)
    assert s.deploy().returncode == 0
    s.wait_out_gate()
    assert s.killed_at("after-reload") == 137
    code, doc = s.status()
    assert code == 0 and lineage_of(doc)["phase"] == "unverified"
    assert lineage_of(doc)["deployed"]["fingerprint"] == s.state()["deployed"]["fingerprint"]

    flag.touch()
    assert s.deploy().returncode == 1
    code, doc = s.status()
    lineage = lineage_of(doc)
    assert code == 1 and lineage["phase"] == "error" and "boom" in lineage["reason"]
    assert findings(lineage) == {"last-run-failed": "WARNING"}


def test_unreachable_server_is_unknown_naming_it(make_sandbox, tmp_path):
    box = make_sandbox(secondary=True, pebble=False)
    name = "st-down.example.org"
    s = Scenario(box, tmp_path, name, [f"_25._tcp.{name}"], way="hook", deploy_nameservers=box.nameservers)
    hook_stage(s, lifetime=90 * DAY)
    box.secondary.stop()
    done = s.cli("status")
    assert done.returncode == 3
    assert f"127.0.0.2:{box.port}" in done.stderr and done.stdout.startswith("DANE UNKNOWN: ")
    code, doc = status_json(s)
    assert code == 3 and doc["status"] == "UNKNOWN" and doc["lineages"] == []
    assert f"127.0.0.2:{box.port}" in doc["error"] and "127.0.0.1" not in doc["error"]
    box.primary.stop()
    done = s.cli("status")
    assert done.returncode == 3 and f"127.0.0.1:{box.port}" in done.stderr


def test_lineage_option_narrows_and_bad_input_is_unknown(sandbox, tmp_path):
    name, other = "st-one.example.org", "st-never.example.org"
    s = Scenario(sandbox, tmp_path, name, [f"_25._tcp.{name}"], way="hook")
    hook_stage(s, lifetime=90 * DAY)
    text = s.config.read_text() + f'\n[lineage."{other}"]\ntlsa = ["_25._tcp.{other}"]\n'
    s.config.write_text(text)
    code, doc = status_json(s)
    assert code == 1 and [lin["lineage"] for lin in doc["lineages"]] == [other, name]
    assert lineage_of(doc, other)["phase"] == "new" and findings(lineage_of(doc, other)) == {
        "nothing-deployed": "WARNING"}
    code, doc = status_json(s, "--lineage", name)
    assert code == 0 and [lin["lineage"] for lin in doc["lineages"]] == [name]
    code, doc = status_json(s, "--lineage", "nope.example.org")
    assert code == 3 and "'nope.example.org' is not configured" in doc["error"]
    done = subprocess.run([str(Path(sys.executable).parent / "certbot-dane"), "-c", str(tmp_path / "missing.toml"),
                           "status"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 3 and "missing.toml: cannot read configuration" in done.stderr


def test_pending_shows_what_the_next_deploy_run_would_do_then_nothing(sandbox, tmp_path):
    name = "st-pending.example.org"
    s = Scenario(sandbox, tmp_path, name, [f"_25._tcp.{name}"], ttl=300)
    old, new = s.renewed(foreign=None)
    (value,) = new
    client = DnsClient(load(s.config).dns)                   # someone removes our staged record by hand
    client.update(ZoneUpdate(client.find_zone(s.tlsa[0]), remove=(Record(s.tlsa[0], "TLSA", value),)))
    s.wait_until_exactly(s.tlsa[0], old)
    code, doc = status_json(s)
    assert lineage_of(doc)["pending"] == [f"publish {s.tlsa[0]}. TLSA {value[:14]}.."]
    assert f"next run  publish {s.tlsa[0]}. TLSA {value[:14]}.." in s.cli("status").stdout
    assert s.deploy().returncode == 0
    code, doc = status_json(s)
    assert lineage_of(doc)["pending"] == [] and s.tlsa_on(s.tlsa[0]) == old | new
