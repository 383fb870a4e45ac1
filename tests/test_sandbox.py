"""The test bed itself: real named, Knot and PowerDNS (signed zones, TSIG policy, lagging secondary) and Pebble."""

from __future__ import annotations

import json
import re
import shutil
import stat
import sys
import tempfile
import tomllib
from pathlib import Path

import dns.exception
import dns.query
import dns.rcode
import dns.tsig
import dns.update
import pytest
from cryptography import x509

import certbot_dane.config
from sandbox.servers import (
    PRIMARY_ADDRESS,
    SERVER_KINDS,
    PowerDnsServer,
    Sandbox,
    TsigKey,
    free_port,
    generate_tsig_key,
    https_get,
)
from tests.scenario import MakeSandbox, require_real_servers

pytestmark = pytest.mark.realservers


def send_update(sandbox: Sandbox, zone: str, name: str, rdtype: str, value: str, key: TsigKey) -> str:
    """Add one record through a TSIG-signed UPDATE to the primary; return the rcode text.

    Knot answers an update its ACL denies with NOTAUTH and a BADKEY TSIG error, which dnspython
    raises as PeerBadKey: that gives "NOTAUTH/BADKEY".
    """
    update = dns.update.UpdateMessage(zone, keyring=key.as_dnspython())
    update.add(f"{name}.", 60, rdtype, value)
    try:
        response = dns.query.tcp(update, sandbox.primary.address, port=sandbox.port, timeout=5)
    except dns.tsig.PeerBadKey:
        return "NOTAUTH/BADKEY"
    return dns.rcode.to_text(response.rcode())


@pytest.mark.parametrize("zone", ["example.org", "example.net", "locked.example"])
def test_signed_zone_publishes_dnskey_and_signs_its_soa(server_sandbox: Sandbox, zone: str) -> None:
    assert server_sandbox.primary.query(zone, "DNSKEY")
    assert server_sandbox.primary.rrsigs(zone, "SOA")


def test_unsigned_zone_has_no_dnskey_nor_signatures(server_sandbox: Sandbox) -> None:
    assert server_sandbox.primary.query("unsigned.example", "SOA")
    assert server_sandbox.primary.query("unsigned.example", "DNSKEY") == []
    assert server_sandbox.primary.rrsigs("unsigned.example", "SOA") == []


def test_ns_discovery_finds_only_the_primary_on_loopback(server_sandbox: Sandbox) -> None:
    assert server_sandbox.primary.query("example.org", "NS") == ["ns1.example.org."]
    assert server_sandbox.primary.query("ns1.example.org", "A") == ["127.0.0.1"]
    assert server_sandbox.primary.query("mx.example.org", "A") == ["127.0.0.1"]


def test_secondary_serves_the_signed_zone(server_sandbox: Sandbox) -> None:
    assert server_sandbox.secondary is not None
    assert server_sandbox.secondary.address == "127.0.0.2"
    assert server_sandbox.secondary.port == server_sandbox.primary.port == server_sandbox.port
    assert server_sandbox.secondary.rrsigs("example.org", "SOA")
    assert server_sandbox.secondary.query("example.org", "DNSKEY") == server_sandbox.primary.query(
        "example.org", "DNSKEY"), "the secondary serves the primary's keys: it does not sign itself"


DENIED = {"bind": "REFUSED", "knot": "NOTAUTH/BADKEY", "powerdns": "NOERROR"}
"""How each server answers an UPDATE its policy denies (PowerDNS's Lua policy drops it under NOERROR)."""

GRANTS = [
    # (zone, owner, type, granted to certbot-dane.)
    ("example.org", "_acme-challenge.grant.example.org", "TXT", True),
    ("example.org", "_25._tcp.grant.example.org", "TLSA", True),
    ("example.net", "_25._tcp.grant.example.net", "TLSA", True),
    ("example.org", "grant.example.org", "A", False),
    ("example.org", "grant.example.org", "MX", False),
    ("locked.example", "_acme-challenge.ok.locked.example", "TXT", True),
    ("locked.example", "_acme-challenge.no.locked.example", "TXT", False),
    ("locked.example", "_25._tcp.ok.locked.example", "TLSA", False),
]
VALUES = {"TXT": "granted", "TLSA": "3 1 1 " + "9a" * 32, "A": "127.0.0.9", "MX": "10 mx.example.org."}


@pytest.mark.parametrize(("zone", "name", "rdtype", "granted"), GRANTS, ids=[f"{g[2]}-{g[1]}" for g in GRANTS])
def test_the_key_may_change_txt_and_tlsa_and_nothing_else_on_every_server(
        server_sandbox: Sandbox, zone: str, name: str, rdtype: str, granted: bool) -> None:
    box = server_sandbox
    answer = send_update(box, zone, name, rdtype, VALUES[rdtype], box.key)
    assert answer == ("NOERROR" if granted else DENIED[box.kind])
    if granted:
        box.primary.wait_for(name, rdtype, bool)
    else:
        box.primary.wait_for("ns1." + zone, "A", bool)  # the server answers queries after the update
        assert box.primary.query(name, rdtype) == []


def test_a_key_the_server_knows_but_grants_nothing_changes_nothing(server_sandbox: Sandbox) -> None:
    box = server_sandbox
    name = f"_acme-challenge.{box.kind}-intruder.example.org"
    answer = send_update(box, "example.org", name, "TXT", "nope", box.intruder_key)
    assert answer == DENIED[box.kind]
    assert box.primary.query(name, "TXT") == []


def test_the_secondary_lags_until_retransfer_on_every_server(server_sandbox: Sandbox) -> None:
    box = server_sandbox
    assert box.secondary is not None
    name = f"_acme-challenge.{box.kind}-lag2.example.net"
    assert send_update(box, "example.net", name, "TXT", "lagging", box.key) == "NOERROR"
    box.primary.wait_for(name, "TXT", lambda found: found == ['"lagging"'])
    assert box.secondary.query(name, "TXT") == []

    box.secondary.retransfer("example.net")

    assert box.secondary.query(name, "TXT") == ['"lagging"']
    assert box.secondary.rrsigs(name, "TXT")


@pytest.mark.parametrize(("allow_dnsupdate_from", "answer"), [("127.0.0.0/8,::1", "NOERROR"), ("", "REFUSED")],
                         ids=["powerdns-default", "emptied"])
def test_powerdns_default_allow_dnsupdate_from_lets_a_zone_without_tsig_metadata_take_any_update(
        tmp_path: Path, allow_dnsupdate_from: str, answer: str) -> None:
    # The trap README's PowerDNS setup warns about: pdns-locked.test has no TSIG-ALLOW-DNSUPDATE metadata.
    require_real_servers("powerdns")
    workdir = Path(tempfile.mkdtemp(prefix="certbot-dane-pdns-trap-"))  # SQLite needs searchable parents
    server = PowerDnsServer("trap", PRIMARY_ADDRESS, free_port([PRIMARY_ADDRESS]), workdir,
                            key=generate_tsig_key("certbot-dane.", tmp_path), allow_dnsupdate_from=allow_dnsupdate_from)
    try:
        server.start()
        update = dns.update.UpdateMessage("pdns-locked.test")  # no TSIG at all
        update.add("anything.pdns-locked.test.", 60, "A", "192.0.2.66")
        response = dns.query.tcp(update, server.address, port=server.port, timeout=5)
        assert dns.rcode.to_text(response.rcode()) == answer
        expected = ["192.0.2.66"] if answer == "NOERROR" else []
        server.wait_for("anything.pdns-locked.test", "A", lambda found: found == expected)
        assert server.query("anything.pdns-locked.test", "A") == expected
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def test_tsig_update_of_txt_is_accepted_and_served_by_primary(sandbox: Sandbox) -> None:
    name = "_acme-challenge.x.example.org"
    assert send_update(sandbox, "example.org", name, "TXT", "token-x", sandbox.key) == "NOERROR"
    records = sandbox.primary.wait_for(name, "TXT", lambda found: '"token-x"' in found)
    assert records == ['"token-x"']
    sandbox.primary.wait_for(name, "TXT", lambda _: bool(sandbox.primary.rrsigs(name, "TXT")))


def test_wait_for_timeout_names_server_and_last_answer(sandbox: Sandbox) -> None:
    with pytest.raises(TimeoutError, match=r"primary 127\.0\.0\.1:\d+: never\.example\.org TXT .*\[\]"):
        sandbox.primary.wait_for("never.example.org", "TXT", bool, timeout=0.2)


def test_pebble_directory_answers(sandbox: Sandbox) -> None:
    assert sandbox.pebble is not None
    directory = json.loads(https_get(sandbox.pebble.directory_url))
    assert {"newNonce", "newAccount", "newOrder"} <= directory.keys()
    assert "BEGIN CERTIFICATE" in sandbox.pebble.root_pem()


def test_key_file_is_as_tsig_keygen_writes_it_and_private(sandbox: Sandbox) -> None:
    for key in (sandbox.key, sandbox.intruder_key):
        text = key.path.read_text(encoding="utf-8")
        assert text == f'key "{key.name}" {{\n\talgorithm hmac-sha256;\n\tsecret "{key.secret}";\n}};\n'
        assert stat.S_IMODE(key.path.stat().st_mode) == 0o600
    assert (sandbox.key.name, sandbox.intruder_key.name) == ("certbot-dane.", "intruder.")


def test_write_config_points_at_the_sandbox(sandbox: Sandbox, tmp_path: Path) -> None:
    path = sandbox.write_config(
        tmp_path / "certbot-dane.toml",
        lineages={"mx.example.org": ["_25._tcp.mx.example.org"]},
        nameservers=sandbox.nameservers,
        timeout=7,
    )
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert tomllib.loads(path.read_text(encoding="utf-8")) == {
        "state_dir": str(sandbox.base / "state"),
        "deploy_dir": str(sandbox.base / "live"),
        "letsencrypt_dir": str(sandbox.base / "certbot" / "config"),
        "dns": {
            "server": "127.0.0.1",
            "port": sandbox.port,
            "key_file": str(sandbox.key.path),
            "timeout": 7,
            "nameservers": [f"127.0.0.1:{sandbox.port}", f"127.0.0.2:{sandbox.port}"],
        },
        "status": {"resolver": "none"},
        "lineage": {"mx.example.org": {"tlsa": ["_25._tcp.mx.example.org"]}},
    }
    assert certbot_dane.config.load(path).dns.key.name == sandbox.key.name


@pytest.mark.parametrize("server", SERVER_KINDS)
def test_stopped_primary_refuses_connections_and_keeps_updates_across_restart(
    make_sandbox: MakeSandbox, server: str
) -> None:
    box = make_sandbox(server=server, pebble=False)
    name = "_acme-challenge.restart.example.org"
    assert send_update(box, "example.org", name, "TXT", "kept", box.key) == "NOERROR"
    box.primary.wait_for(name, "TXT", lambda found: found == ['"kept"'])

    box.primary.stop()
    box.primary.stop()
    with pytest.raises((OSError, dns.exception.DNSException)):
        box.primary.query("example.org", "SOA")

    box.primary.start()
    assert box.primary.query(name, "TXT") == ['"kept"']


AUTH_HOOK = """\
import os, time
import dns.message, dns.query, dns.rcode, dns.tsig, dns.update
name = "_acme-challenge." + os.environ["CERTBOT_DOMAIN"] + "."
key = dns.tsig.Key(os.environ["HOOK_KEY_NAME"], os.environ["HOOK_KEY_SECRET"], "hmac-sha256")
update = dns.update.UpdateMessage("example.org", keyring=key)
update.add(name, 60, "TXT", os.environ["CERTBOT_VALIDATION"])
port = int(os.environ["HOOK_PORT"])
response = dns.query.tcp(update, "127.0.0.1", port=port, timeout=5)
assert response.rcode() == dns.rcode.NOERROR, dns.rcode.to_text(response.rcode())
deadline = time.monotonic() + 10
while time.monotonic() < deadline:  # inline signing publishes the change a moment later
    answer = dns.query.tcp(dns.message.make_query(name, "TXT"), "127.0.0.1", port=port, timeout=5)
    if answer.answer:
        break
    time.sleep(0.05)
"""


def test_certbot_gets_a_certificate_from_pebble_via_dns01(sandbox: Sandbox, tmp_path: Path) -> None:
    hook = tmp_path / "auth_hook.py"
    hook.write_text(AUTH_HOOK, encoding="utf-8")
    result = sandbox.certbot(
        "certonly",
        "--manual",
        "--preferred-challenges",
        "dns",
        "--manual-auth-hook",
        f"{sys.executable} {hook}",
        "-d",
        "hook.example.org",
        "--cert-name",
        "hook-test",
        env={"HOOK_KEY_NAME": sandbox.key.name, "HOOK_KEY_SECRET": sandbox.key.secret, "HOOK_PORT": str(sandbox.port)},
    )
    assert result.returncode == 0, result.stderr
    pem = (sandbox.base / "certbot/config/live/hook-test/cert.pem").read_bytes()
    names = (
        x509.load_pem_x509_certificate(pem)
        .extensions.get_extension_for_class(x509.SubjectAlternativeName)
        .value.get_values_for_type(x509.DNSName)
    )
    assert names == ["hook.example.org"]
    assert re.search(r"Successfully received certificate", result.stdout + result.stderr)
