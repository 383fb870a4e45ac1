"""The DNS adapter against a real PowerDNS Authoritative 4.7 (gsqlite3): its answers."""

from __future__ import annotations

import dataclasses

import pytest

from certbot_dane.config import DnsSettings, Endpoint
from certbot_dane.dnsclient import DnsClient
from certbot_dane.records import Answer
from certbot_dane.tsigkey import TsigKey, decode_secret
from sandbox.servers import PowerDnsServer

pytestmark = pytest.mark.realservers

GOOD = "3 1 1 " + "ab" * 32


def client_for(server: PowerDnsServer, **overrides: object) -> DnsClient:
    key = TsigKey(server.key.name, server.key.algorithm, decode_secret(server.key.secret))
    settings = DnsSettings(Endpoint(server.address, server.port), key, (), 3.0, 10.0)
    return DnsClient(dataclasses.replace(settings, **overrides))  # type: ignore[arg-type]


def test_a_cname_answer_carries_the_alias_and_the_target_rrset(powerdns):
    client = client_for(powerdns)
    assert client.query(client.settings.server, "_25._tcp.alias.pdns.test", "TLSA") == \
        Answer("NOERROR", frozenset({"3 1 1 " + "cd" * 32}), 60, "_dane.pdns.test.")
    assert client.query(client.settings.server, "_25._tcp.far.pdns.test", "TLSA") == \
        Answer("NOERROR", frozenset(), None, "_dane.elsewhere.test.")


def test_a_malformed_record_loaded_by_pdnsutil_is_listed_next_to_the_good_one(powerdns):
    client = client_for(powerdns)
    answer = client.query(client.settings.server, "_25._tcp.bad.pdns.test", "TLSA")
    assert answer == Answer("NOERROR", frozenset({"3 1 1 aabbccdd", GOOD}), 60)
