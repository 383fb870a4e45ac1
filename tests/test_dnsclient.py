"""The DNS adapter against a real named: zone discovery, updates, and one clear error per failure class."""

from __future__ import annotations

import dataclasses
import time

import dns.message
import pytest

from certbot_dane.config import DnsSettings, Endpoint, load
from certbot_dane.dnsclient import DnsClient
from certbot_dane.errors import ServerUnreachable, TsigRejected, UpdateRejected, ZoneNotFound
from certbot_dane.records import Record, ZoneUpdate
from certbot_dane.tsigkey import TsigKey, decode_secret
from sandbox.servers import ALGORITHMS, Sandbox, free_port


def settings_for(box: Sandbox, **overrides) -> DnsSettings:
    key = TsigKey(box.key.name, box.key.algorithm, decode_secret(box.key.secret))
    base = DnsSettings(Endpoint("127.0.0.1", box.port), key, (), 3.0, 10.0)
    return dataclasses.replace(base, **overrides)


def test_zone_is_found_by_walking_up_to_the_authoritative_soa(sandbox):
    client = DnsClient(settings_for(sandbox))
    assert client.find_zone("_acme-challenge.deep.a.b.example.org") == "example.org."
    assert client.find_zone("_25._tcp.mx.example.net.") == "example.net."


def test_servers_default_to_the_zones_ns_rrset(sandbox):
    client = DnsClient(settings_for(sandbox))
    assert client.servers("example.org.") == (Endpoint("127.0.0.1", sandbox.port),)


def test_adding_a_value_keeps_the_other_values_and_removal_removes_only_ours(sandbox):
    client = DnsClient(settings_for(sandbox))
    name = "_acme-challenge.keep.example.org."
    foreign, mine = Record.txt(name, "foreign", 60), Record.txt(name, "mine", 60)
    client.update(ZoneUpdate("example.org.", add=(foreign,)))
    client.update(ZoneUpdate("example.org.", add=(mine,)))
    assert sandbox.primary.wait_for(name, "TXT", lambda v: len(v) == 2) == ['"foreign"', '"mine"']
    client.update(ZoneUpdate("example.org.", remove=(mine,)))
    assert sandbox.primary.wait_for(name, "TXT", lambda v: len(v) == 1) == ['"foreign"']


def test_zone_not_found_names_the_server_and_the_names_asked(sandbox):
    client = DnsClient(settings_for(sandbox))
    with pytest.raises(ZoneNotFound) as info:
        client.find_zone("_acme-challenge.mx.elsewhere.test")
    assert f"127.0.0.1:{sandbox.port} is authoritative for no zone containing _acme-challenge.mx.elsewhere.test." \
        in str(info.value)
    assert "elsewhere.test." in str(info.value)


def test_refused_by_update_policy_names_rcode_name_and_cause(sandbox):
    client = DnsClient(settings_for(sandbox))
    record = Record.txt("_acme-challenge.notgranted.locked.example", "x", 60)
    with pytest.raises(UpdateRejected) as info:
        client.update(ZoneUpdate("locked.example.", add=(record,)))
    message = str(info.value)
    assert "answered REFUSED" in message and "_acme-challenge.notgranted.locked.example. TXT" in message
    assert "update-policy" in message and sandbox.key.secret not in message


def test_update_for_a_zone_the_server_does_not_serve_is_notauth(sandbox):
    client = DnsClient(settings_for(sandbox))
    with pytest.raises(UpdateRejected, match="answered NOTAUTH .*not authoritative"):
        client.update(ZoneUpdate("elsewhere.test.", add=(Record.txt("_acme-challenge.elsewhere.test", "x", 60),)))


def test_unknown_key_is_badkey(sandbox):
    wrong = TsigKey("nobody.", "hmac-sha256", decode_secret(sandbox.key.secret))
    client = DnsClient(settings_for(sandbox, key=wrong))
    with pytest.raises(TsigRejected, match="BADKEY: the server does not know key nobody."):
        client.update(ZoneUpdate("example.org.", add=(Record.txt("_acme-challenge.k.example.org", "x", 60),)))


def test_wrong_secret_is_badsig_and_the_secret_is_not_shown(sandbox):
    wrong = TsigKey(sandbox.key.name, "hmac-sha256", b"wrong-secret-wrong-secret-wrong!")
    client = DnsClient(settings_for(sandbox, key=wrong))
    with pytest.raises(TsigRejected) as info:
        client.update(ZoneUpdate("example.org.", add=(Record.txt("_acme-challenge.k.example.org", "x", 60),)))
    assert "BADSIG" in str(info.value) and "wrong-secret" not in str(info.value)


def test_skewed_clock_is_badtime(sandbox, monkeypatch):
    client = DnsClient(settings_for(sandbox))
    real = time.time
    monkeypatch.setattr(dns.message.time, "time", lambda: real() - 3600)  # fault: our clock an hour slow
    with pytest.raises(TsigRejected, match="BADTIME"):
        client.update(ZoneUpdate("example.org.", add=(Record.txt("_acme-challenge.k.example.org", "x", 60),)))


def test_nothing_listening_is_unreachable_and_names_the_server(sandbox):
    port = free_port(["127.0.0.1"])
    client = DnsClient(settings_for(sandbox, server=Endpoint("127.0.0.1", port)))
    with pytest.raises(ServerUnreachable, match=f"127.0.0.1:{port}: .*refused"):
        client.find_zone("mx.example.org")


def test_server_may_be_given_as_a_host_name(sandbox):
    client = DnsClient(settings_for(sandbox, server=Endpoint("localhost", sandbox.port)))  # from /etc/hosts
    assert client.find_zone("mx.example.org") == "example.org."


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_every_tsig_algorithm_bind_offers_works_from_its_key_file(sandbox, tmp_path, algorithm):
    key = sandbox.algorithm_keys[algorithm]
    config = sandbox.write_config(tmp_path / "c.toml")
    config.write_text(config.read_text().replace(str(sandbox.key.path), str(key.path)))
    settings = load(config).dns
    assert (settings.key.name, settings.key.algorithm) == (f"alg-{algorithm}.", algorithm)
    name = f"_acme-challenge.{algorithm}.example.org"
    DnsClient(settings).update(ZoneUpdate("example.org.", add=(Record.txt(name, algorithm, 60),)))
    assert sandbox.primary.wait_for(name, "TXT", bool) == [f'"{algorithm}"']
