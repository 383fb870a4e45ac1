"""What the DNS adapter reads and writes the same way on a Knot DNS 3.2 and a PowerDNS 4.7 primary:
CNAME answers, a malformed record next to a good one, a confirmed update (each server's own ways of
saying no are in test_dnsclient_knot.py and test_dnsclient_powerdns.py)."""

from __future__ import annotations

import pytest

from certbot_dane.records import Answer, Record, ZoneUpdate
from sandbox.servers import KnotServer, PowerDnsServer
from tests.scenario import client_for

pytestmark = pytest.mark.realservers

GOOD = "3 1 1 " + "ab" * 32
NEW = "3 1 1 " + "5e" * 32
SERVERS = [("knot", "knot.test."), ("powerdns", "pdns.test.")]
"""The fixture that starts each server, and its zone holding the records met in the wild (ODD_RECORDS)."""


@pytest.fixture(params=SERVERS, ids=[fixture for fixture, _ in SERVERS])
def server(request: pytest.FixtureRequest) -> tuple[KnotServer | PowerDnsServer, str]:
    fixture, zone = request.param
    return request.getfixturevalue(fixture), zone


def test_a_cname_answer_carries_the_alias_and_the_target_rrset(server):
    primary, zone = server
    client = client_for(primary)
    assert client.query(client.settings.server, f"_25._tcp.alias.{zone}", "TLSA") == \
        Answer("NOERROR", frozenset({"3 1 1 " + "cd" * 32}), 60, f"_dane.{zone}")
    assert client.query(client.settings.server, f"_25._TCP.Far.{zone}", "TLSA") == \
        Answer("NOERROR", frozenset(), None, "_dane.elsewhere.test.")


def test_a_malformed_record_from_the_zone_is_listed_next_to_the_good_one(server):
    primary, zone = server
    client = client_for(primary)
    answer = client.query(client.settings.server, f"_25._tcp.bad.{zone}", "TLSA")
    assert answer == Answer("NOERROR", frozenset({"3 1 1 aabbccdd", GOOD}), 60)


def test_an_update_the_server_allows_is_applied_and_confirmed(server):
    primary, zone = server
    client = client_for(primary)
    record = Record(f"_25._tcp.applied.{zone}", "TLSA", NEW, 60)
    client.update(ZoneUpdate(zone, add=(record,)))
    assert primary.query(record.name, "TLSA") == [NEW]
    client.update(ZoneUpdate(zone, remove=(record,)))
    assert primary.query(record.name, "TLSA") == []
