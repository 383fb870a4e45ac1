"""The DNS adapter against a real Knot DNS 3.2 primary: its answers, its ACL, its way of saying no."""

from __future__ import annotations

import pytest

from certbot_dane.errors import TsigRejected, UpdateIgnored, UpdateRejected
from certbot_dane.records import Answer, Record, ZoneUpdate
from certbot_dane.tsigkey import TsigKey, decode_secret
from tests.scenario import client_for

pytestmark = pytest.mark.realservers

NEW = "3 1 1 " + "5e" * 32


def test_a_zone_knot_could_not_load_answers_servfail_never_no_records(knot):
    client = client_for(knot)
    answer = client.query(client.settings.server, "_25._tcp.mx.knot-broken.test", "TLSA")
    assert answer == Answer("SERVFAIL", frozenset())
    assert not answer.definite and answer.describe() == "SERVFAIL"


def test_an_update_the_acl_denies_names_the_acl_not_an_unknown_key(knot):
    # Knot answers NOTAUTH + BADKEY, as for an unknown key; a signed SOA query tells them apart.
    client = client_for(knot)
    record = Record("_25._tcp.mx.knot-txt.test.", "TLSA", NEW, 60)
    with pytest.raises(UpdateRejected) as info:
        client.update(ZoneUpdate("knot-txt.test.", add=(record,)))
    message = str(info.value)
    assert f"{knot.address}:{knot.port}" in message and "_25._tcp.mx.knot-txt.test. TLSA" in message
    assert "knows key certbot-dane. but its ACL/update policy denies this update" in message
    assert "Knot: acl with key certbot-dane., action update, update-type TLSA TXT" in message
    assert knot.key.secret not in message


def test_a_key_no_acl_names_looks_unknown_even_to_the_probe_and_the_message_says_so(knot):
    # Knot answers BADKEY for a key that no ACL names, to updates and to signed queries alike.
    intruder = knot.other_keys[0]
    client = client_for(knot, key=TsigKey(intruder.name, intruder.algorithm, decode_secret(intruder.secret)))
    with pytest.raises(TsigRejected, match="BADKEY: the server does not know key intruder. .*Knot .*no acl names"):
        client.update(ZoneUpdate("knot.test.", add=(Record.txt("_acme-challenge.intruder.knot.test", "x", 60),)))


def test_an_unknown_key_is_still_badkey(knot):
    client = client_for(knot, key=TsigKey("nobody.", "hmac-sha256", decode_secret(knot.key.secret)))
    with pytest.raises(TsigRejected, match="BADKEY: the server does not know key nobody."):
        client.update(ZoneUpdate("knot.test.", add=(Record.txt("_acme-challenge.k.knot.test", "x", 60),)))


def test_a_record_knot_drops_at_a_cname_is_reported_as_ignored(knot):
    # Knot answers NOERROR and changes nothing: "no changes to the zone were made" in its log.
    client = client_for(knot, timeout=1.0)
    record = Record("_25._tcp.alias.knot.test.", "TLSA", NEW, 60)
    with pytest.raises(UpdateIgnored) as info:
        client.update(ZoneUpdate("knot.test.", add=(record,)))
    message = str(info.value)
    assert f"{knot.address}:{knot.port} answered NOERROR to UPDATE of zone knot.test." in message
    assert f"added but absent: _25._tcp.alias.knot.test. TLSA {NEW}" in message
    assert "_25._tcp.alias.knot.test. is a CNAME to _dane.knot.test." in message
