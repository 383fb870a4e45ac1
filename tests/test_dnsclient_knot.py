"""The DNS adapter against a real Knot DNS 3.2 primary: its answers."""

from __future__ import annotations

import dataclasses

import pytest

from certbot_dane.config import DnsSettings, Endpoint
from certbot_dane.dnsclient import DnsClient
from certbot_dane.records import Answer
from certbot_dane.tsigkey import TsigKey, decode_secret
from sandbox.servers import KnotServer

pytestmark = pytest.mark.realservers

GOOD = "3 1 1 " + "ab" * 32


def client_for(server: KnotServer, **overrides: object) -> DnsClient:
    key = TsigKey(server.key.name, server.key.algorithm, decode_secret(server.key.secret))
    settings = DnsSettings(Endpoint(server.address, server.port), key, (), 3.0, 10.0)
    return DnsClient(dataclasses.replace(settings, **overrides))  # type: ignore[arg-type]


def test_a_zone_knot_could_not_load_answers_servfail_never_no_records(knot):
    client = client_for(knot)
    answer = client.query(client.settings.server, "_25._tcp.mx.knot-broken.test", "TLSA")
    assert answer == Answer("SERVFAIL", frozenset())
    assert not answer.definite and answer.describe() == "SERVFAIL"


def test_a_cname_answer_carries_the_alias_and_the_target_rrset(knot):
    client = client_for(knot)
    assert client.query(client.settings.server, "_25._tcp.alias.knot.test", "TLSA") == \
        Answer("NOERROR", frozenset({"3 1 1 " + "cd" * 32}), 60, "_dane.knot.test.")
    assert client.query(client.settings.server, "_25._TCP.Far.knot.test.", "TLSA") == \
        Answer("NOERROR", frozenset(), None, "_dane.elsewhere.test.")


def test_a_malformed_record_from_the_zone_file_is_listed_next_to_the_good_one(knot):
    client = client_for(knot)
    answer = client.query(client.settings.server, "_25._tcp.bad.knot.test", "TLSA")
    assert answer == Answer("NOERROR", frozenset({"3 1 1 aabbccdd", GOOD}), 60)
