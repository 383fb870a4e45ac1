"""The whole rollover on each DNS server admins run as a signing primary: BIND, Knot DNS and PowerDNS.

Each test runs once per server (`server_sandbox`): the same zones and least-privilege grants on each
(TXT and TLSA only), DNSSEC-signed, with a secondary of the same kind that lags until told to
transfer. Issuance goes through the real certbot and Pebble (the `dane` authenticator and installer);
the renewal is handed over as certbot hands it to the deploy hook; `certbot-dane deploy` and `status`
run in this process with an injected clock, so no test waits out a TTL.
"""

from __future__ import annotations

import dataclasses

import pytest
from cryptography import x509

from certbot_dane import cli
from sandbox.servers import SECONDARY_ADDRESS, Sandbox
from tests.scenario import FOREIGN, Scenario, findings, fqdn, lineage_of, served

TTL = 60  # nothing waits for it: the injected clock moves on instead


def issued_names(s: Scenario) -> set[str]:
    san = x509.load_pem_x509_certificate(s.certbot_cert()).extensions.get_extension_for_class(
        x509.SubjectAlternativeName)
    return set(san.value.get_values_for_type(x509.DNSName))


def dnssec_per_server(lineage: dict[str, object]) -> dict[str, str]:
    """server -> DNSSEC verdict of the TLSA RRset at the lineage's first name."""
    names = lineage["names"]
    assert isinstance(names, list)
    return {srv["server"]: srv["dnssec"]["status"] for srv in names[0]["servers"]}


def test_issue_renew_gate_deploy_retire_and_status_in_each_phase(server_sandbox: Sandbox, tmp_path) -> None:
    box = server_sandbox
    assert box.secondary is not None
    name = f"m-{box.kind}.example.org"
    tlsa = [f"_25._tcp.{name}", f"_465._tcp.{name}"]
    s = Scenario(box, tmp_path, name, tlsa, ttl=TTL, deploy_nameservers=box.nameservers)
    primary, secondary = f"127.0.0.1:{box.port}", f"{SECONDARY_ADDRESS}:{box.port}"

    # issue: certbot run -a dane -i dane, the apex and its wildcard (two DNS-01 values at one name)
    done = s.issue(name, f"*.{name}")
    assert done.returncode == 0, done.stderr
    assert issued_names(s) == {name, f"*.{name}"}
    assert box.primary.query(f"_acme-challenge.{name}", "TXT") == [], "cleanup removed both validation values"
    first = s.certbot_cert()
    assert s.deployed() == first and s.staged() is None, "no TLSA RRset existed: deployed at once"
    old = s.records(first)
    for owner in tlsa:
        s.wait_until_served(owner, old)
    box.secondary.retransfer("example.org")
    code, doc = s.status()
    lineage = lineage_of(doc)
    assert (code, lineage["phase"], findings(lineage)) == (0, "steady", {})
    assert dnssec_per_server(lineage) == {primary: "valid", secondary: "valid"}

    # a record the admin added by hand, and a renewal handed to the deploy hook: staged, pre-published
    s.add_by_hand(tlsa[0], FOREIGN, ttl=TTL)
    renewal = s.deliver()
    new = s.records(renewal)
    for owner in tlsa:
        s.wait_until_served(owner, old | new)
    assert s.deployed() == first and s.staged() == renewal
    assert s.tlsa_on(tlsa[0]) == old | new | {FOREIGN}

    # the gate refuses while the secondary lags, however long that takes
    code, doc = s.status()
    lineage = lineage_of(doc)
    assert (code, lineage["phase"], findings(lineage)) == (1, "waiting-for-servers", {"server-lags": "WARNING"})
    assert secondary in lineage["reason"]
    ran = s.deploy()
    assert ran.returncode == 0, ran.stderr
    assert f"lagging: {secondary} for {fqdn(tlsa[0])}" in ran.stdout
    s.clock.advance(2 * TTL + 1)
    assert f"lagging: {secondary}" in s.deploy().stdout and s.deployed() == first

    # every server serves the new records: the clock starts, and the gate refuses for 2 x TTL
    box.secondary.retransfer("example.org")
    ran = s.deploy()
    assert f"{name}: not deploying yet: waiting 2 x TTL ({2 * TTL}s) for caches to expire until " in ran.stdout
    code, doc = s.status()
    lineage = lineage_of(doc)
    assert (code, lineage["phase"], findings(lineage)) == (0, "waiting-for-ttl", {})
    assert served(lineage, tlsa[0]) == dict.fromkeys(
        (primary, secondary), {**dict.fromkeys(old, "deployed"), **dict.fromkeys(new, "staged"), FOREIGN: "foreign"})
    s.clock.advance(TTL)
    assert "not deploying yet" in s.deploy().stdout and s.deployed() == first
    s.wait_out_gate()
    code, doc = s.status()
    assert (code, lineage_of(doc)["phase"]) == (0, "ready")

    # deploy: swap, reload, retire our old records; the admin's record stays
    ran = s.deploy()
    assert ran.returncode == 0, ran.stderr
    assert s.deployed() == renewal and s.staged() is None
    assert s.ran.read_text().count("reloaded") == 2
    assert f"{name}: retire {fqdn(tlsa[0])} TLSA {sorted(old)[0][:14]}.." in ran.stdout
    s.wait_until_exactly(tlsa[0], new | {FOREIGN})
    s.wait_until_exactly(tlsa[1], new)
    box.secondary.retransfer("example.org")
    code, doc = s.status()
    lineage = lineage_of(doc)
    assert (code, lineage["phase"], findings(lineage)) == (0, "steady", {})
    assert served(lineage, tlsa[1]) == dict.fromkeys((primary, secondary), dict.fromkeys(new, "deployed"))
    assert dnssec_per_server(lineage) == {primary: "valid", secondary: "valid"}
    assert s.deploy().stdout == "", "steady state: nothing to do"


REFUSALS = {
    # fault -> server -> what the one line says (besides the zone and the server's address)
    "key unknown": {
        "bind": "BADKEY: the server does not know key nobody.",
        "knot": "BADKEY: the server does not know key nobody.",
        "powerdns": "answered REFUSED without a TSIG record to UPDATE of zone example.org.",
    },
    "secret wrong": {
        "bind": "BADSIG: the server knows key certbot-dane. but the secret differs",
        "knot": "BADSIG: the server knows key certbot-dane. but the secret differs",
        "powerdns": "answered REFUSED without a TSIG record to UPDATE of zone example.org.",
    },
    "type denied": {
        "bind": "answered REFUSED to UPDATE of zone locked.example.",
        "knot": "the server knows key certbot-dane. but its ACL/update policy denies this update",
        "powerdns": "answered NOERROR to UPDATE of zone locked.example.",
    },
    "name denied": {
        "bind": "answered REFUSED to UPDATE of zone locked.example.",
        "knot": "the server knows key certbot-dane. but its ACL/update policy denies this update",
        "powerdns": "answered NOERROR to UPDATE of zone locked.example.",
    },
}
WRONG_SECRET = "d3Jvbmctc2VjcmV0LXdyb25nLXNlY3JldC13cm9uZyE="


@pytest.mark.parametrize("fault", sorted(REFUSALS))
def test_a_refusal_is_one_line_naming_zone_server_and_cause(server_sandbox: Sandbox, tmp_path, capsys, monkeypatch,
                                                             fault: str) -> None:
    box = server_sandbox
    host = f"refused-{box.kind}.{'locked.example' if fault == 'type denied' else 'example.org'}"
    zone = "locked.example." if fault.endswith("denied") else "example.org."
    s = Scenario(box, tmp_path, host, [f"_25._tcp.{host}"], way="hook", timeout=1)
    key = dataclasses.replace(box.key, name="nobody.") if fault == "key unknown" else box.key
    secret = WRONG_SECRET if fault == "secret wrong" else box.key.secret
    wrong = tmp_path / "wrong.key"
    wrong.write_text(f'key "{key.name}" {{ algorithm {key.algorithm}; secret "{secret}"; }};\n')
    wrong.chmod(0o600)
    s.config.write_text(s.config.read_text().replace(str(box.key.path), str(wrong)))

    if fault == "name denied":  # the DNS-01 challenge of a name the key may not touch, by the manual auth hook
        challenge = {"CERTBOT_DOMAIN": "no.locked.example", "CERTBOT_VALIDATION": "denied",
                     "CERTBOT_REMAINING_CHALLENGES": "0", "CERTBOT_ALL_DOMAINS": "no.locked.example"}
        for variable, value in challenge.items():
            monkeypatch.setenv(variable, value)
        code = cli.main(["-c", str(s.config), "auth-hook"])
        owner = "_acme-challenge.no.locked.example."
    else:  # the first certificate of a lineage, adopted from certbot's live/ by the timer's deploy run
        s.new_certificate()  # the deploy hook never saw it
        code = cli.main(["-c", str(s.config), "deploy"])
        owner = fqdn(s.tlsa[0])
    out, err = capsys.readouterr()
    assert code == 1
    assert err.count("\n") == 1, err
    assert f"127.0.0.1:{box.port}" in err and zone in err
    assert REFUSALS[fault][box.kind] in err
    assert box.key.secret not in out + err and WRONG_SECRET not in out + err
    if fault != "name denied":
        assert s.deployed() is None and s.staged() == s.certbot_cert(), "nothing goes live; the certificate waits"
    assert box.primary.query(owner, "TLSA" if fault != "name denied" else "TXT") == []
