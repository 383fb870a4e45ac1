"""The DNS adapter against a real named: zone discovery, updates, and one clear error per failure class."""

from __future__ import annotations

import contextlib
import dataclasses
import socket
import subprocess
import threading
import time
from collections.abc import Iterator

import dns.message
import pytest

from certbot_dane import plan
from certbot_dane.config import DnsSettings, Endpoint, load
from certbot_dane.dnsclient import DnsClient, split_update, value_text
from certbot_dane.dnssec import VALID, Verdict, check_rrset
from certbot_dane.errors import ServerUnreachable, TsigRejected, UpdateIgnored, UpdateRejected, ZoneNotFound
from certbot_dane.records import Answer, Record, Require, ZoneUpdate
from certbot_dane.tsigkey import TsigKey, decode_secret
from sandbox.servers import ALGORITHMS, Sandbox, find_binary, free_port, missing_binaries
from tests.scenario import require_programs

GOOD = "3 1 1 " + "ab" * 32
NEW = "3 1 1 " + "9b" * 32


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


# -- answers as they come: aliases, malformed records, other rcodes --------------------------

def test_a_cname_answer_carries_the_alias_and_the_target_rrset(sandbox):
    client = DnsClient(settings_for(sandbox))
    server = client.settings.server
    assert client.query(server, "_25._tcp.alias.example.org", "TLSA") == \
        Answer("NOERROR", frozenset({"3 1 1 " + "cd" * 32}), 60, "_dane.example.org.")
    assert client.query(server, "_25._TCP.Far.Example.ORG.", "TLSA") == \
        Answer("NOERROR", frozenset(), None, "_dane.elsewhere.test.")


def test_a_malformed_record_added_with_nsupdate_is_listed_as_text_and_its_rrset_still_validates(sandbox):
    require_programs(missing_binaries(("nsupdate",)), "bind9-dnsutils")
    name = "_25._tcp.malformed.example.org."
    script = (f"server 127.0.0.1 {sandbox.port}\nzone example.org.\n"
              f"update add {name} 60 TLSA 3 1 1 aabbccdd\nupdate add {name} 60 TLSA {GOOD}\nsend\n")
    subprocess.run([str(find_binary("nsupdate")), "-k", str(sandbox.key.path)], input=script, text=True,
                   check=True, capture_output=True, timeout=30)
    client = DnsClient(settings_for(sandbox))
    server = client.settings.server
    deadline = time.monotonic() + 10
    while len((answer := client.query(server, name, "TLSA")).values) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)  # inline signing shows the change a moment after NOERROR
    assert answer == Answer("NOERROR", frozenset({"3 1 1 aabbccdd", GOOD}), 60)
    signed = client.query_dnssec(server, name, "TLSA")
    dnskey = client.query_dnssec(server, "example.org.", "DNSKEY").rrset
    assert signed.rrset is not None and {value_text(r) for r in signed.rrset} == answer.values
    assert check_rrset("example.org.", signed.rrset, signed.sigs, dnskey, time.time()) == Verdict(VALID)


def test_any_rcode_but_noerror_and_nxdomain_is_an_answer_with_that_rcode_not_no_records(sandbox):
    client = DnsClient(settings_for(sandbox))
    answer = client.query(client.settings.server, "_25._tcp.mx.elsewhere.test", "TLSA")  # no such zone here
    assert answer == Answer("REFUSED", frozenset()) and not answer.definite


# -- a server that hangs up -----------------------------------------------------------------

@contextlib.contextmanager
def hanging_up(send: bytes) -> Iterator[int]:
    """A loopback TCP listener that reads a query, sends `send`, and closes: the port."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.1)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            with connection:
                connection.settimeout(2)
                connection.recv(65535)
                connection.sendall(send)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join(5)
        listener.close()


@pytest.mark.parametrize("send", [b"", b"\x01\x00" + b"\x00" * 10], ids=["before answering", "mid-answer"])
def test_a_server_closing_the_connection_is_unreachable_naming_server_and_question(send):
    key = TsigKey("certbot-dane.", "hmac-sha256", b"0" * 32)
    with hanging_up(send) as port:
        client = DnsClient(DnsSettings(Endpoint("127.0.0.1", port), key, (), 3.0, 10.0))
        with pytest.raises(ServerUnreachable, match=rf"127.0.0.1:{port} closed the connection without answering "
                                                    r"\(query mx.example.org TLSA\)"):
            client.query(client.settings.server, "mx.example.org", "TLSA")
        with pytest.raises(ServerUnreachable, match=rf"127.0.0.1:{port} closed .*\(UPDATE of zone example.org."):
            client.update(ZoneUpdate("example.org.", add=(Record.txt("_acme-challenge.example.org", "x", 60),)))


# -- updates: too big for one message, applied or not ---------------------------------------

def tlsa(name: str, number: int) -> Record:
    return Record(name, "TLSA", f"3 1 1 {number:064x}", 60)


def test_a_change_that_fits_is_one_message_and_a_big_one_goes_owner_by_owner_additions_first():
    old = tuple(tlsa(f"_25._tcp.h{i}.example.org.", i) for i in range(40))
    new = tuple(tlsa(f"_25._tcp.h{i}.example.org.", 1000 + i) for i in range(40))
    kept = tlsa("_25._tcp.kept.example.org.", 7)
    claim = Record(plan.claim_name(old[20].name, old[20].value), "TXT", '"a1 mx"')
    need = Require(claim.name, "TXT", frozenset({claim.value}))
    small = ZoneUpdate("example.org.", new[:2], old[:2], (need,))
    assert split_update(small) == [small]
    parts = split_update(ZoneUpdate("example.org.", (*new, kept), (*old, kept, claim), (need,)), budget=1000)
    assert len(parts) >= 6
    kinds = ["add" if part.add else "remove" for part in parts]
    assert kinds == sorted(kinds), "owners that gain records go first, owners that only lose some last"
    for part in parts:  # an owner both gaining and losing records does so in one message: atomic
        owners = {plan.owner_of_claim(r.name) or r.name for r in part.add}
        assert not part.add or {plan.owner_of_claim(r.name) or r.name for r in part.remove} <= owners
    assert [r for part in parts for r in part.add] == [*new, kept]
    assert sorted(r for part in parts for r in part.remove) == sorted((*old, claim))  # kept: removed and added
    (guarded,) = [part for part in parts if need in part.require]    # a record, its claim, its prerequisite:
    assert old[20] in guarded.remove and claim in guarded.remove     # one owner's changes, one message
    assert sum(len(part.require) for part in parts) == 1



def test_a_split_never_divides_one_owners_changes() -> None:
    """An RRset never appears holding only some of the records added to it (say the staged certificate's
    but not the deployed one's), and a record never lands without its claim."""
    a = [tlsa("_25._tcp.a.example.org.", i) for i in range(3)]
    b = [tlsa("_25._tcp.b.example.org.", 10 + i) for i in range(3)]
    claims = [Record(plan.claim_name(r.name, r.value), "TXT", '"a1 mx"') for r in a + b]
    parts = split_update(ZoneUpdate("example.org.", (*a, *b, *claims)), budget=300)
    assert len(parts) == 2
    for part in parts:
        owners = {plan.owner_of_claim(r.name) or r.name for r in part.add}
        assert len(owners) == 1 and len(part.add) == 6
    client = DnsClient(DnsSettings(Endpoint("127.0.0.1", 53), TsigKey("k.", "hmac-sha256", b"0" * 32), (), 1, 1))
    assert all(len(client._message(part).to_wire()) <= 1000 for part in parts)


def test_a_thousand_records_go_out_in_several_updates_and_all_land(sandbox):
    client = DnsClient(settings_for(sandbox, timeout=10.0))
    names = [f"_25._tcp.batch{i}.example.net." for i in range(250)]  # BIND keeps <= 100 records per RRset
    first = tuple(tlsa(names[i // 4], i) for i in range(1000))
    second = tuple(tlsa(names[i // 4], 5000 + i) for i in range(1000))
    assert len(split_update(ZoneUpdate("example.net.", first))) > 1  # "The DNS message is too big" in one
    client.update(ZoneUpdate("example.net.", add=first))
    assert sandbox.primary.query(names[-1], "TLSA") == sorted(r.value for r in first[-4:])
    client.update(ZoneUpdate("example.net.", add=second, remove=first))
    assert sandbox.primary.query(names[0], "TLSA") == sorted(r.value for r in second[:4])
    client.update(ZoneUpdate("example.net.", remove=second))
    assert sandbox.primary.query(names[0], "TLSA") == sandbox.primary.query(names[-1], "TLSA") == []


def test_a_record_bind_ignores_at_a_cname_is_reported_with_server_zone_and_record(sandbox):
    # named logs "attempt to add non-CNAME alongside CNAME ignored" and answers NOERROR.
    client = DnsClient(settings_for(sandbox, timeout=1.0))
    record = Record("_25._tcp.alias.example.org.", "TLSA", NEW, 60)
    with pytest.raises(UpdateIgnored) as info:
        client.update(ZoneUpdate("example.org.", add=(record,)))
    message = str(info.value)
    assert f"127.0.0.1:{sandbox.port} answered NOERROR to UPDATE of zone example.org. (+1 -0 records)" in message
    assert f"added but absent: _25._tcp.alias.example.org. TLSA {NEW}" in message
    assert "_25._tcp.alias.example.org. is a CNAME to _dane.example.org." in message
    assert "a server policy may drop records while answering NOERROR" in message
