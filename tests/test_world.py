"""The world the rollover must survive (ROLLOVER.md), on real named and Pebble: CNAME'd TLSA names,
config edits while a renewal waits, two hosts sharing one RRset, SERVFAIL, malformed foreign records,
an edited state file, and a params change.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import struct
import time

import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.update
import dns.wire
import pytest

from certbot_dane import state
from certbot_dane.errors import DaneError
from sandbox.fleet import write_certificate
from sandbox.servers import NOBODY, Sandbox, TsigKey, generate_tsig_key
from tests.scenario import CA, Clock, Scenario, fqdn, lineage_of, records_of, served

TTL = 2
MALFORMED = "3 1 1 aabbccdd"  # a SHA-256 digest of 4 bytes: BIND serves it, dnspython refuses to parse it


# -- helpers -------------------------------------------------------------------------------

def tlsa_on_wire(box: Sandbox, name: str) -> set[str]:
    """The TLSA records the primary serves at `name`, read off the wire here: dnspython refuses a whole
    message holding a malformed TLSA record, and certbot-dane's own lenient reader is what is under test."""
    request = dns.message.make_query(name, "TLSA")
    request.flags &= ~dns.flags.RD
    query = request.to_wire()
    with socket.create_connection((box.primary.address, box.port), timeout=2.0) as sock, \
            sock.makefile("rb") as stream:
        sock.sendall(struct.pack("!H", len(query)) + query)
        (length,) = struct.unpack("!H", stream.read(2))
        parser = dns.wire.Parser(stream.read(length))
    _id, _flags, questions, answers, _ns, _ar = parser.get_struct("!HHHHHH")
    for _ in range(questions):
        parser.get_name(decompress=True)
        parser.get_struct("!HH")
    found = set()
    for _ in range(answers):
        owner = parser.get_name(decompress=True).to_text()
        rdtype, _class, _ttl, size = parser.get_struct("!HHIH")
        data = parser.get_bytes(size)
        if owner == fqdn(name) and rdtype == dns.rdatatype.TLSA:
            found.add(f"{data[0]} {data[1]} {data[2]} {data[3:].hex()}")
    return found


def wire_wait(box: Sandbox, name: str, values: set[str], timeout: float = 10) -> None:
    """Poll until the primary serves exactly `values` at `name` (inline signing applies an UPDATE a moment later)."""
    deadline = time.monotonic() + timeout
    while (seen := tlsa_on_wire(box, name)) != values:
        assert time.monotonic() < deadline, f"{name}: serves {seen}, not {values}"
        time.sleep(0.05)


def ask(box: Sandbox, name: str, rdtype: str) -> dns.message.Message:
    """One non-recursive TCP query to the primary, the whole message (to tell owner names apart)."""
    request = dns.message.make_query(name, rdtype)
    request.flags &= ~dns.flags.RD
    return dns.query.tcp(request, box.primary.address, port=box.port, timeout=2.0)


def claim_name(owner: str, value: str) -> str:
    """Where the ownership claims on one record live: `<32 hex of sha256(value)>._certbot-dane.<owner>`."""
    return f"{hashlib.sha256(value.encode()).hexdigest()[:32]}._certbot-dane.{fqdn(owner)}"


def claims(box: Sandbox, owner: str, value: str) -> set[str]:
    """The TXT claims on record `value` at `owner` as the primary serves them (quotes stripped)."""
    return {v.strip('"') for v in box.primary.query(claim_name(owner, value), "TXT")}


def as_nobody(path) -> None:
    """Files named reads must belong to the unprivileged user it runs as (when the tests run as root)."""
    if os.geteuid() == 0:
        os.chown(path, NOBODY, NOBODY)


def admin_key(box: Sandbox) -> TsigKey:
    """A second key, `admin.`, that may change ANY type in example.org (certbot-dane.'s grant is TXT TLSA only).

    Made on this private sandbox's primary: its named.conf includes the key and grants it, then
    `rndc reconfig`. A restart of the primary would rewrite named.conf without it.
    """
    key = generate_tsig_key("admin.", box.base / "keys")
    workdir = box.primary.workdir
    shutil.copyfile(key.path, workdir / key.path.name)
    (workdir / key.path.name).chmod(0o600)
    as_nobody(workdir / key.path.name)
    conf = workdir / "named.conf"
    lines = [line.replace("update-policy { ", "update-policy { grant admin. zonesub ANY; ", 1)
             if line.startswith('zone "example.org" ') else line for line in conf.read_text().splitlines()]
    assert any("grant admin." in line for line in lines), "example.org's zone statement not found"
    conf.write_text(f'include "{key.path.name}";\n' + "\n".join(lines) + "\n")
    box.primary.rndc("reconfig")
    return key


def admin_add(box: Sandbox, key: TsigKey, records: list[tuple[str, str, str]], ttl: int = TTL) -> None:
    """The admin's own records in example.org (name, type, value), sent as one UPDATE with `key`."""
    update = dns.update.UpdateMessage("example.org.", keyring=key.as_dnspython())
    for name, rdtype, value in records:
        update.add(fqdn(name), ttl, rdtype, value)
    response = dns.query.tcp(update, box.primary.address, port=box.port, timeout=5.0)
    assert response.rcode() == dns.rcode.NOERROR, dns.rcode.to_text(response.rcode())


def add_zone(box: Sandbox, zone: str, body: str) -> None:
    """Configure a dynamic, unsigned primary zone on this private sandbox's primary (`rndc reconfig`)."""
    workdir = box.primary.workdir
    write_zone(box, zone, body)
    conf = workdir / "named.conf"
    conf.write_text(conf.read_text() + f'zone "{zone}" {{ type primary; file "{zone}.zone"; '
                                       'update-policy { grant certbot-dane. zonesub TXT TLSA; }; };\n')
    box.primary.rndc("reconfig")


def write_zone(box: Sandbox, zone: str, body: str) -> None:
    path = box.primary.workdir / f"{zone}.zone"
    path.write_text(f"$TTL {TTL}\n@ IN SOA ns1.example.org. hostmaster.example.org. 1 3600 600 86400 {TTL}\n"
                    f"@ IN NS ns1.example.org.\n{body}", encoding="utf-8")
    as_nobody(path)


def rcode_for(box: Sandbox, name: str, rdtype: str, rcode: int, timeout: float = 10) -> None:
    """Poll the primary until it answers `rcode` for name/type (a reconfig or reload takes a moment)."""
    deadline = time.monotonic() + timeout
    while (seen := ask(box, name, rdtype).rcode()) != rcode:
        assert time.monotonic() < deadline, f"{name} {rdtype}: still {dns.rcode.to_text(seen)}"
        time.sleep(0.05)


# -- 1. CNAME'd TLSA names (RFC 7671 §7) -----------------------------------------------------

def no_tlsa_at(box: Sandbox, owner: str) -> bool:
    """Whether the primary's answer for owner/TLSA holds no TLSA RRset owned by `owner` itself."""
    return not [r for r in ask(box, owner, "TLSA").answer if r.name.to_text() == fqdn(owner)
                and r.rdtype == dns.rdatatype.TLSA]


def test_cname_tlsa_name_is_published_gated_retired_and_reported_at_its_target(make_sandbox, tmp_path):
    box = make_sandbox(pebble=False)
    host = "cn.example.org"
    alias, target = f"_25._tcp.{host}.", f"_dane.{host}."
    write_certificate(tmp_path / "old", host)
    old = records_of(tmp_path / "old", ("3 0 1",))  # the admin's certificate from before certbot-dane
    admin_add(box, admin_key(box), [(alias, "CNAME", target), *((target, "TLSA", v) for v in old)])
    box.primary.wait_for(target, "TLSA", lambda v: len(v) == 1)
    s = Scenario(box, tmp_path, host, [alias], ttl=TTL)
    server = f"127.0.0.1:{box.port}"

    first = s.deliver(via="hook")
    assert s.deployed() is None and s.staged() == first, "the target holds records: no bootstrap"
    new = s.records(first)
    assert s.tlsa_on(target) == old | new, "published at the target, next to the admin's record"
    assert box.primary.query(alias, "CNAME") == [target] and no_tlsa_at(box, alias)
    assert {p["name"] for p in s.state()["published"]} == {target}
    (value,) = new
    assert claims(box, target, value) == {f"{s.instance()} {host}"}

    done = s.cli("deploy")  # starts the clock: every server serves the new record at the target
    assert done.returncode == 0, done.stderr
    assert f"{host}: not deploying yet: waiting 2 x TTL ({2 * TTL}s)" in done.stdout
    assert s.deployed() is None
    assert s.state()["staged"]["names"] == [target], "the gate's clock belongs to the target"
    code, doc = s.status()
    lineage = lineage_of(doc)
    assert (code, lineage["phase"]) == (0, "waiting-for-ttl"), doc
    assert served(lineage, target) == {server: {**dict.fromkeys(old, "foreign"), **dict.fromkeys(new, "staged")}}
    s.wait_out_gate()
    done = s.deploy()
    assert done.returncode == 0, done.stderr
    assert s.deployed() == first and s.staged() is None
    assert s.tlsa_on(target) == old | new, "the admin's record is foreign: kept (I3)"

    # the next rollover: staged and aged at the target, our old record retired there
    renewed = s.records(s.deliver())
    assert s.tlsa_on(target) == old | new | renewed and s.deployed() == first
    assert s.deploy().returncode == 0
    s.wait_out_gate()
    done = s.deploy()
    assert done.returncode == 0, done.stderr
    assert f"{host}: retire {target} TLSA {value[:14]}.." in done.stdout
    assert s.deployed() != first
    s.wait_until_exactly(target, old | renewed)
    assert claims(box, target, value) == set(), "the retired record's claim went with it"
    assert box.primary.query(alias, "CNAME") == [target] and no_tlsa_at(box, alias)

    code, doc = s.status()
    lineage = lineage_of(doc)
    assert [n["name"] for n in lineage["names"]] == [target], "status reports the RRset senders use"
    assert served(lineage, target) == {server: {**dict.fromkeys(old, "foreign"), **dict.fromkeys(renewed, "deployed")}}
    assert code == 0 and lineage["phase"] == "steady", doc
    text = s.status_text()
    assert target in text and "do not use DANE" not in text


# -- 2. a TLSA name added to the config while a renewal waits ---------------------------------

def test_a_tlsa_name_added_while_a_renewal_waits_gets_its_own_two_ttls(sandbox, tmp_path):
    host = "w-added.example.org"
    first_name, added = f"_25._tcp.{host}", f"_587._tcp.{host}"
    s = Scenario(sandbox, tmp_path, host, [first_name], ttl=TTL)
    old = s.bootstrapped()
    first = s.deployed()
    for value in old:  # the admin already publishes the deployed certificate's record at the new name
        s.add_by_hand(added, value, ttl=TTL)
    second = s.deliver()
    new = s.records(second)
    assert s.deploy().returncode == 0  # the clock starts for _25
    s.wait_out_gate()  # _25 alone would be safe now

    s = s.reconfigured([first_name, added])
    done = s.deploy()
    assert done.returncode == 0, done.stderr
    assert s.deployed() == first, "the added name's RRset may be cached without the new record"
    assert f"{host}: publish {fqdn(added)} TLSA" in done.stdout
    assert f"{host}: not deploying yet" in done.stdout
    assert s.tlsa_on(added) == old | new
    assert s.state()["staged"]["names"] == sorted([fqdn(first_name), fqdn(added)])

    s.wait_out_gate()
    done = s.deploy()
    assert done.returncode == 0, done.stderr
    assert s.deployed() == second
    s.wait_until_exactly(first_name, new)  # our old record retired
    assert s.tlsa_on(added) == old | new, "the admin's record at the added name is foreign: kept"


# -- 3. two hosts, one RRset --------------------------------------------------------------

def test_two_hosts_sharing_a_record_keep_it_until_neither_needs_it(sandbox, tmp_path):
    shared = "_25._tcp.w-shared.example.org"
    for directory in ("h1", "h2"):
        (tmp_path / directory).mkdir()
    ca, clock = CA(), Clock()  # one issuing CA: identical 2 0 1 records; one time for both hosts
    h1 = Scenario(sandbox, tmp_path / "h1", "w-h1.example.org", [shared], ttl=TTL, params=("2 0 1",), clock=clock)
    h2 = Scenario(sandbox, tmp_path / "h2", "w-h2.example.org", [shared], ttl=TTL, params=("2 0 1",), clock=clock)

    h1.deliver(ca=ca)
    assert h1.deployed() is not None, "bootstrap: no RRset yet"
    shared_records = h1.records(h1.deployed())
    h2_first = h2.deliver(ca=ca)
    assert h2.records(h2_first) == shared_records, "one CA: identical 2 0 1 records"
    assert h2.deployed() is None, "the RRset exists: host 2 waits"
    assert h2.deploy().returncode == 0
    h2.wait_out_gate()
    assert h2.deploy().returncode == 0
    assert h2.deployed() == h2_first
    (value,) = shared_records
    id1, id2 = h1.instance(), h2.instance()
    assert id1 != id2
    assert claims(sandbox, shared, value) == {f"{id1} w-h1.example.org", f"{id2} w-h2.example.org"}
    assert sandbox.primary.query(shared, "TLSA") == [value]

    # host 1's "CA rotation": it now pins its own certificate (3 0 1); host 2's live certificate still needs 2 0 1
    h1 = h1.reconfigured(params=("3 0 1",))
    h1_cert = h1.deliver(ca=ca)
    h1_new = h1.records(h1_cert)
    assert h1.deploy().returncode == 0
    h1.wait_out_gate()
    done = h1.deploy()
    assert done.returncode == 0, done.stderr
    assert h1.deployed() == h1_cert
    assert h1.tlsa_on(shared) == {value} | h1_new, "host 2's record stays"
    assert claims(sandbox, shared, value) == {f"{id2} w-h2.example.org"}, "only host 1's claim went"

    # host 2 stops needing it too: the last claim goes, and the record with it
    h2 = h2.reconfigured(params=("3 0 1",))
    done = h2.deploy()
    assert done.returncode == 0, done.stderr
    h2_now = h2.records(h2.deployed())
    h2.wait_until_exactly(shared, h1_new | h2_now)
    assert claims(sandbox, shared, value) == set()


# -- 4. SERVFAIL is unknown, not "no RRset" -------------------------------------------------

def test_servfail_for_the_tlsa_zone_means_no_bootstrap_and_names_server_and_rcode(make_sandbox, tmp_path):
    box = make_sandbox(pebble=False)
    host, zone = "sf.example.org", "_tcp.sf.example.org"  # the TLSA names live in a zone of their own
    tlsa = f"_25.{zone}"
    add_zone(box, zone, "_25 IN TLSA 3 0 1 zz\n")  # bad hex: named does not load the zone and answers SERVFAIL
    rcode_for(box, tlsa, "TLSA", dns.rcode.SERVFAIL)
    s = Scenario(box, tmp_path, host, [tlsa], ttl=TTL)
    server = f"127.0.0.1:{box.port}"

    with pytest.raises(DaneError) as failed:  # what the deploy hook reports
        s.deliver(via="hook")
    assert f"{server} answered SERVFAIL for {fqdn(tlsa)} TLSA" in str(failed.value)
    assert s.deployed() is None, "SERVFAIL says nothing about the RRset: no bootstrap"
    assert s.staged() == s.certbot_cert(), "staged all the same: nothing lost"
    error = s.state()["error"]
    assert server in error and "SERVFAIL" in error, error

    done = s.cli("deploy")
    assert done.returncode == 1
    assert server in done.stderr and "SERVFAIL" in done.stderr, done.stderr
    assert s.deployed() is None

    # the zone loads again, with a record already there: the certificate waits for its gate
    foreign = "2 1 1 " + "ef" * 32
    write_zone(box, zone, f"_25 IN TLSA {foreign}\n")
    box.primary.rndc("reload", zone)
    rcode_for(box, tlsa, "TLSA", dns.rcode.NOERROR)
    done = s.cli("deploy")
    assert done.returncode == 0, done.stderr
    assert s.tlsa_on(tlsa) == {foreign} | s.records(s.certbot_cert())
    assert s.deployed() is None and f"{host}: not deploying yet: waiting 2 x TTL" in done.stdout
    assert s.state()["error"] is None


# -- 5. a malformed foreign record ----------------------------------------------------------

def test_a_malformed_foreign_record_blocks_no_rollover_and_stays(sandbox, tmp_path):
    host = "w-malformed.example.org"
    name = f"_25._tcp.{host}"
    s = Scenario(sandbox, tmp_path, host, [name], ttl=TTL)
    old = s.records(s.deliver())
    assert s.deployed() is not None, "bootstrap"
    bad = dns.rdata.GenericRdata(dns.rdataclass.IN, dns.rdatatype.TLSA, bytes.fromhex("030101aabbccdd"))
    update = dns.update.UpdateMessage("example.org.", keyring=sandbox.key.as_dnspython())  # the admin, by hand
    update.add(fqdn(name), TTL, bad)
    assert dns.query.tcp(update, sandbox.primary.address, port=sandbox.port, timeout=5.0).rcode() == dns.rcode.NOERROR
    wire_wait(sandbox, name, old | {MALFORMED})

    new = s.records(s.deliver())
    assert tlsa_on_wire(sandbox, name) == old | new | {MALFORMED}
    done = s.deploy()
    assert done.returncode == 0, done.stderr
    s.wait_out_gate()
    done = s.deploy()
    assert done.returncode == 0, done.stderr
    assert s.records(s.deployed()) == new
    wire_wait(sandbox, name, new | {MALFORMED})  # ours retired, the malformed one kept

    code, doc = s.status()
    assert code != 3, doc.get("error")
    lineage = lineage_of(doc)
    assert served(lineage, name) == {f"127.0.0.1:{sandbox.port}": {**dict.fromkeys(new, "deployed"),
                                                                   MALFORMED: "foreign"}}
    assert code == 0, lineage["findings"]


# -- 6. an edited state file ----------------------------------------------------------------

def test_deployed_records_emptied_in_the_state_file_are_recomputed_not_retired(sandbox, tmp_path):
    host = "w-emptied.example.org"
    name = f"_25._tcp.{host}"
    s = Scenario(sandbox, tmp_path, host, [name], ttl=TTL)
    live = s.bootstrapped()
    assert s.tlsa_on(name) == live and s.deployed() is not None
    edited = s.state()
    edited["deployed"]["records"] = []
    state.write_json(tmp_path / "state" / "lineages" / f"{host}.json", edited)

    done = s.deploy()
    assert done.returncode == 0, done.stderr
    assert "retire" not in done.stdout
    assert s.tlsa_on(name) == live, "the deployed certificate's record stays (I2)"
    assert set(s.state()["deployed"]["records"]) == live
    assert {p["value"] for p in s.state()["published"]} == live


# -- 7. params changed in the config ---------------------------------------------------------

def test_params_changed_publishes_the_deployed_certificates_new_record_without_renewal(sandbox, tmp_path):
    host = "w-params.example.org"
    name = f"_25._tcp.{host}"
    s = Scenario(sandbox, tmp_path, host, [name], ttl=TTL)
    s.bootstrapped()
    deployed = s.deployed()
    full = s.records(deployed)
    s = s.reconfigured(params=("3 1 1",))
    spki = s.records(deployed)
    assert spki != full and all(v.startswith("3 1 1 ") for v in spki)

    done = s.deploy()
    assert done.returncode == 0, done.stderr
    assert s.deployed() == deployed, "no renewal, no swap"
    # the certificate did not change, so a cached RRset holding only the 3 0 1 record still accepts it
    s.wait_until_exactly(name, spki)
    code, doc = s.status()
    lineage = lineage_of(doc)
    assert served(lineage, name) == {f"127.0.0.1:{sandbox.port}": dict.fromkeys(spki, "deployed")}
    assert set(lineage["deployed"]["records"]) == spki
    assert code == 0, lineage["findings"]

    # a renewal with the same key: its 3 1 1 record is live, but was never aged (caches may hold the
    # 3 0 1-only RRset, which the renewed certificate does not match): it must wait for its gate
    renewal = s.deliver(reuse_key=True)
    assert s.records(renewal) == spki
    assert s.deployed() == deployed and s.staged() == renewal
