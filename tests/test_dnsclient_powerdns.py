"""The DNS adapter against a real PowerDNS Authoritative 4.7 (gsqlite3): its answers and its ways of saying no."""

from __future__ import annotations

import dataclasses

import pytest

from certbot_dane.errors import TsigRejected, UpdateIgnored, UpdateRejected
from certbot_dane.records import Record, ZoneUpdate
from tests.scenario import client_for

pytestmark = pytest.mark.realservers

NEW = "3 1 1 " + "7a" * 32


@pytest.mark.parametrize("fault", ["unknown key", "wrong secret"])
def test_a_rejected_tsig_is_reported_although_powerdns_answers_unsigned(powerdns, fault):
    # PowerDNS answers REFUSED with no TSIG record at all, which dnspython reads as a FormError.
    key = client_for(powerdns).settings.key
    wrong = {"unknown key": dataclasses.replace(key, name="nobody."),
             "wrong secret": dataclasses.replace(key, secret=b"wrong-secret-wrong-secret-wrong!")}[fault]
    client = client_for(powerdns, key=wrong)
    with pytest.raises(TsigRejected) as info:
        client.update(ZoneUpdate("pdns.test.", add=(Record.txt("_acme-challenge.tsig.pdns.test", "x", 60),)))
    message = str(info.value)
    assert f"{powerdns.address}:{powerdns.port} answered REFUSED without a TSIG record to UPDATE of zone pdns.test." \
        in message
    assert "rejected the TSIG signature without signing its answer" in message
    assert f"check TSIG-ALLOW-DNSUPDATE and the key {wrong.name}" in message
    assert "wrong-secret" not in message and powerdns.key.secret not in message


def test_a_zone_without_update_metadata_is_refused_with_what_to_check(powerdns):
    client = client_for(powerdns)
    with pytest.raises(UpdateRejected) as info:
        client.update(ZoneUpdate("pdns-locked.test.", add=(Record("_25._tcp.mx.pdns-locked.test.", "TLSA", NEW, 60),)))
    message = str(info.value)
    assert "answered REFUSED" in message and "_25._tcp.mx.pdns-locked.test. TLSA" in message
    assert "TSIG-ALLOW-DNSUPDATE certbot-dane. and ALLOW-DNSUPDATE-FROM" in message


def test_a_record_at_a_cname_is_refused_and_the_hint_says_why(powerdns):
    client = client_for(powerdns)
    with pytest.raises(UpdateRejected, match="answered REFUSED .*a record at a name that is a CNAME"):
        client.update(ZoneUpdate("pdns.test.", add=(Record("_25._tcp.alias.pdns.test.", "TLSA", NEW, 60),)))


def test_a_lua_policy_that_drops_tlsa_while_answering_noerror_is_caught(powerdns_lua):
    # pdns-txt.test grants TXT only: the policy script drops the TLSA record, PowerDNS says NOERROR.
    client = client_for(powerdns_lua, timeout=1.0)
    txt = Record.txt("_acme-challenge.lua.pdns-txt.test", "kept", 60)
    tlsa = Record("_25._tcp.lua.pdns-txt.test.", "TLSA", NEW, 60)
    with pytest.raises(UpdateIgnored) as info:
        client.update(ZoneUpdate("pdns-txt.test.", add=(txt, tlsa)))
    message = str(info.value)
    server = f"{powerdns_lua.address}:{powerdns_lua.port}"
    assert f"{server} answered NOERROR to UPDATE of zone pdns-txt.test. (+2 -0 records)" in message
    assert f"added but absent: _25._tcp.lua.pdns-txt.test. TLSA {NEW}" in message
    assert "_acme-challenge" not in message  # the TXT record was applied
    assert "lua-dnsupdate-policy-script" in message
    assert powerdns_lua.query(txt.name, "TXT") == ['"kept"'] and powerdns_lua.query(tlsa.name, "TLSA") == []


def test_what_the_lua_policy_grants_is_applied_and_confirmed(powerdns_lua):
    client = client_for(powerdns_lua)
    record = Record("_25._tcp.granted.pdns.test.", "TLSA", NEW, 60)
    client.update(ZoneUpdate("pdns.test.", add=(record,)))
    assert powerdns_lua.query(record.name, "TLSA") == [NEW]
