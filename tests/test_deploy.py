"""`certbot-dane deploy` on real named: the gate, the swap, reload, retire, crashes and the lock.

Certificates are handed over as certbot hands them to the deploy hook; the runs are in-process with an
injected clock (tests/scenario.py) but for the tests of the command itself.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import stat

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.x509 import load_pem_x509_certificate

from certbot_dane import state
from certbot_dane.certstore import CertStore
from certbot_dane.config import load
from certbot_dane.deploy import Rollout, deploy_all
from certbot_dane.dnsclient import DnsClient
from sandbox.fleet import write_certificate, write_fleet
from sandbox.tlsendpoint import TlsEndpoint
from tests.scenario import FOREIGN, Clock, Scenario, key_matches_cert, snapshot

TTL = 1


def test_deploy_waits_for_the_gate_then_swaps_reloads_and_retires(sandbox, tmp_path):
    name = "gate.example.org"
    s = Scenario(sandbox, tmp_path, name, [f"_25._tcp.{name}", f"_587._tcp.{name}"], ttl=TTL)
    old, new = s.renewed()
    first = s.deployed()

    done = s.cli("deploy")  # the command itself, with the real clock: it starts the gate's clock
    assert done.returncode == 0, done.stderr
    assert f"{name}: not deploying yet: waiting 2 x TTL ({2 * TTL}s) for caches to expire until " in done.stdout
    assert s.deployed() == first and s.ran.read_text().count("reloaded") == 1

    s.wait_out_gate()
    done = s.deploy()
    assert done.returncode == 0, done.stderr
    assert s.deployed() == s.certbot_cert() != first
    assert key_matches_cert(tmp_path / "live" / name)
    assert stat.S_IMODE((tmp_path / "live" / name / "privkey.pem").stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "live" / name / "combined.pem").stat().st_mode) == 0o600
    assert s.ran.read_text().count("reloaded") == 2
    s.wait_until_exactly(s.tlsa[0], new | {FOREIGN})  # old retired, the hand-added record kept
    s.wait_until_exactly(s.tlsa[1], new)
    st = s.state()
    assert st["staged"] is None and st["previous"] is None and not st["unverified"]
    assert {p["value"] for p in st["published"]} == new
    assert s.staged() is None

    done = s.deploy()  # steady state: nothing to do
    assert done.returncode == 0 and done.stdout == "" and s.ran.read_text().count("reloaded") == 2


def test_a_lagging_secondary_holds_the_gate_until_it_catches_up(make_sandbox, tmp_path):
    box = make_sandbox(secondary=True, pebble=False)
    name = "lag.example.org"
    s = Scenario(box, tmp_path, name, [f"_25._tcp.{name}"], ttl=TTL, deploy_nameservers=box.nameservers)
    s.renewed()
    first = s.deployed()
    done = s.deploy()
    assert f"lagging: 127.0.0.2:{box.port} for _25._tcp.{name}." in done.stdout
    assert s.state()["staged"]["served_at"] is None
    s.clock.advance(2 * TTL + 1)  # the TTLs pass, but the secondary still lags: no deploy
    done = s.deploy()
    assert "lagging: 127.0.0.2" in done.stdout and s.deployed() == first

    box.secondary.retransfer("example.org")
    assert s.deploy().returncode == 0  # the clock starts now
    assert s.deployed() == first
    s.wait_out_gate()
    assert s.deploy().returncode == 0
    assert s.deployed() == s.certbot_cert()


def test_a_failed_reload_keeps_the_old_records_and_the_next_run_finishes(sandbox, tmp_path):
    name = "reloadfail.example.org"
    flag, log = tmp_path / "broken", tmp_path / "reloads.log"
    command = f"sh -c 'if [ -e {flag} ]; then echo postfix: fatal: boom >&2; exit 3; fi; echo reloaded >> {log}'"
    s = Scenario(sandbox, tmp_path, name, [f"_25._tcp.{name}"], ttl=TTL, reload=[command])
    old, new = s.renewed()
    s.deploy()
    s.wait_out_gate()
    flag.touch()
    done = s.deploy()
    assert done.returncode == 1
    assert "exited 3: postfix: fatal: boom" in done.stderr
    assert s.tlsa_on(s.tlsa[0]) == old | new | {FOREIGN}
    assert s.state()["unverified"] and "boom" in s.state()["error"]
    flag.unlink()
    done = s.deploy()
    assert done.returncode == 0, done.stderr
    s.wait_until_exactly(s.tlsa[0], new | {FOREIGN})
    assert not s.state()["unverified"] and s.state()["error"] is None


def test_dry_run_prints_the_plan_and_changes_nothing(sandbox, tmp_path):
    name = "drydeploy.example.org"
    s = Scenario(sandbox, tmp_path, name, [f"_25._tcp.{name}"], ttl=TTL)
    s.renewed()
    s.deploy()
    s.wait_out_gate()
    serial = sandbox.primary.soa_serial("example.org")
    before = snapshot(tmp_path)
    done = s.deploy(dry_run=True)
    assert done.returncode == 0, done.stderr
    assert f"{name}: (dry run) deploy certificate" in done.stdout
    assert f"{name}: (dry run) reload with" in done.stdout
    assert f"{name}: (dry run) retire _25._tcp.{name}. TLSA 3 0 1" in done.stdout
    assert sandbox.primary.soa_serial("example.org") == serial
    assert snapshot(tmp_path) == before


def test_the_dry_run_option_of_the_command_changes_nothing(sandbox, tmp_path):
    name = "drycli.example.org"
    s = Scenario(sandbox, tmp_path, name, [f"_25._tcp.{name}"], ttl=TTL)
    s.renewed()
    serial = sandbox.primary.soa_serial("example.org")
    before = snapshot(tmp_path)
    done = s.cli("deploy", "--dry-run")
    assert done.returncode == 0, done.stderr
    assert f"{name}: (dry run) not deploying yet: waiting 2 x TTL" in done.stdout
    assert sandbox.primary.soa_serial("example.org") == serial
    assert snapshot(tmp_path) == before, "not even the gate's clock is written down"


def test_emergency_override_deploys_before_the_gate_and_says_who_may_break(sandbox, tmp_path):
    name = "force.example.org"
    s = Scenario(sandbox, tmp_path, name, [f"_25._tcp.{name}"], ttl=TTL)
    s.renewed()
    done = s.cli("deploy", "--force-before-gate")
    assert done.returncode == 0, done.stderr
    assert "EMERGENCY deploy before the gate" in done.stdout and "will defer mail" in done.stdout
    assert s.deployed() == s.certbot_cert()


def test_the_lock_keeps_a_second_run_out(sandbox, tmp_path):
    name = "locked.example.org"
    s = Scenario(sandbox, tmp_path, name, [f"_25._tcp.{name}"], ttl=TTL)
    s.bootstrapped()
    with state.locked(tmp_path / "state"):
        done = s.cli("deploy")
    assert done.returncode == 1
    assert "another certbot-dane run holds" in done.stderr


@pytest.mark.parametrize("fault", ["before-swap", "after-swap", "after-reload", "after-retire"])
def test_a_kill_at_each_deploy_step_converges_on_the_next_run(sandbox, tmp_path, fault):
    name = f"kill-{fault}.example.org"
    s = Scenario(sandbox, tmp_path, name, [f"_25._tcp.{name}"], ttl=TTL)
    old, new = s.renewed()
    first = s.deployed()
    s.deploy()
    s.wait_out_gate()
    assert s.killed_at(fault) == 137
    live = tmp_path / "live" / name
    assert key_matches_cert(live), "never a mismatched key/cert pair"
    assert s.deployed() in (first, s.certbot_cert())
    assert s.tlsa_on(s.tlsa[0]) >= (new if s.deployed() != first else old), "I2: the live record stays"
    done = s.deploy()
    assert done.returncode == 0, done.stderr
    assert s.deployed() == s.certbot_cert() and key_matches_cert(live)
    s.wait_until_exactly(s.tlsa[0], new | {FOREIGN})
    st = s.state()
    assert st["staged"] is None and not st["unverified"]
    assert s.ran.read_text().count("reloaded") >= 2


@pytest.mark.parametrize("fault", ["after-stage-files", "before-publish", "after-publish"])
def test_a_kill_while_staging_loses_nothing_and_the_next_run_publishes(sandbox, tmp_path, fault):
    name = f"kill-{fault}.example.org"
    s = Scenario(sandbox, tmp_path, name, [f"_25._tcp.{name}"], ttl=TTL, way="hook")
    old = s.bootstrapped()
    renewal = s.new_certificate()
    assert s.killed_at(fault, lambda: s.hand_over(renewal)) == 137
    new_cert = s.certbot_cert()
    assert s.staged() == new_cert, "the staged certificate survives the kill"
    done = s.deploy()
    assert done.returncode == 0, done.stderr
    s.wait_until_served(s.tlsa[0], old | s.records(new_cert))
    fingerprint = hashlib.sha256(load_pem_x509_certificate(new_cert).public_bytes(serialization.Encoding.DER))
    assert s.state()["staged"]["fingerprint"] == fingerprint.hexdigest()
    assert (tmp_path / "live" / name / "cert.pem").exists()


def test_verification_passes_after_a_real_reload_and_fails_when_the_service_kept_the_old_certificate(
        sandbox, tmp_path):
    name = "verify.example.org"
    placeholder = tmp_path / "placeholder"
    write_certificate(placeholder, name)
    (tmp_path / "live").mkdir()
    (tmp_path / "live" / name).symlink_to(placeholder)  # the service starts before certbot-dane deploys
    with TlsEndpoint.for_lineage("smtp", tmp_path / "live", name) as endpoint:
        flag, script = tmp_path / "skip-reload", tmp_path / "reload.sh"
        script.write_text(f"#!/bin/sh\n[ -e {flag} ] && exit 0\nexec {endpoint.reload_command}\n")
        script.chmod(0o755)
        s = Scenario(sandbox, tmp_path, name, [f"_{endpoint.port}._tcp.{name}"], ttl=TTL, reload=[str(script)],
                     verify=[f"smtp://{name}:{endpoint.port}"], lineage_more='verify_address = "127.0.0.1"')
        old = s.bootstrapped()
        assert endpoint.reloads == 1 and not s.state()["unverified"]
        assert endpoint.sni[-1] == name
        new = s.records(s.deliver())
        s.wait_until_served(s.tlsa[0], old | new)
        s.deploy()
        s.wait_out_gate()

        flag.touch()  # "reload" succeeds but the service keeps serving the old certificate
        done = s.deploy()
        assert done.returncode == 1
        assert f"smtp://{name}:{endpoint.port} serves certificate" in done.stderr
        assert "was the service reloaded?" in done.stderr
        assert s.tlsa_on(s.tlsa[0]) == old | new, "old records stay after a failed verification"
        assert s.state()["unverified"]

        flag.unlink()
        done = s.deploy()
        assert done.returncode == 0, done.stderr
        assert f"verified smtp://{name}:{endpoint.port}" in done.stdout
        s.wait_until_exactly(s.tlsa[0], new)


class CountingClient(DnsClient):
    """The real DNS client, counting the UPDATE messages it sends per zone and direction."""

    def __init__(self, settings) -> None:
        super().__init__(settings)
        self.updates: list[tuple[str, str]] = []

    def update(self, change) -> None:
        self.updates += [(change.zone, "add")] * bool(change.add) + [(change.zone, "remove")] * bool(change.remove)
        super().update(change)


def test_a_batch_of_lineages_gets_one_update_per_zone_and_direction(sandbox, tmp_path):
    hosts = [f"b{i}.example.org" for i in range(6)] + ["b6.example.net", "b7.example.net"]
    le = tmp_path / "letsencrypt"
    write_fleet(le, hosts, age=datetime.timedelta(hours=2))
    config = sandbox.write_config(tmp_path / "fleet.toml", state_dir=tmp_path / "state", deploy_dir=tmp_path / "live",
                                  letsencrypt_dir=le, lineages={h: [f"_25._tcp.{h}", f"_465._tcp.{h}"] for h in hosts},
                                  lineage_extra=f"tlsa_ttl = {TTL}")
    settings = load(config)

    clock = Clock()

    def run() -> CountingClient:
        client = CountingClient(settings.dns)
        rollout = Rollout(settings, client, CertStore(settings.state_dir, settings.deploy_dir), now=clock.now,
                          uptime=clock.uptime)
        assert deploy_all(rollout) == {}
        return client

    first = run()  # bootstrap: all deployed at once, records published
    assert sorted(first.updates) == [("example.net.", "add"), ("example.org.", "add")]
    assert all((tmp_path / "live" / h / "cert.pem").exists() for h in hosts)
    write_fleet(le, hosts, age=datetime.timedelta(hours=1))  # certbot renewed them all
    staging = run()
    assert sorted(staging.updates) == [("example.net.", "add"), ("example.org.", "add")]
    for h in hosts:
        sandbox.primary.wait_for(f"_465._tcp.{h}", "TLSA", lambda v: len(v) == 2)
    run()  # starts the gate clock of every lineage
    deadline = max(json.loads((tmp_path / "state" / "lineages" / f"{h}.json").read_text())["staged"]["served_uptime"]
                   for h in hosts) + 2 * TTL + 0.05
    clock.advance(max(0.0, deadline - clock.uptime()[1]))
    final = run()
    assert sorted(final.updates) == [("example.net.", "remove"), ("example.org.", "remove")]
    for h in hosts:
        assert (tmp_path / "live" / h / "cert.pem").read_bytes() == (le / "live" / h / "cert.pem").read_bytes()
        sandbox.primary.wait_for(f"_25._tcp.{h}", "TLSA", lambda v: len(v) == 1)


def test_a_certificate_put_back_by_hand_keeps_its_records(sandbox, tmp_path):
    name = "rollback.example.org"
    flag = tmp_path / "broken"
    command = f"sh -c 'if [ -e {flag} ]; then exit 3; fi'"
    s = Scenario(sandbox, tmp_path, name, [f"_25._tcp.{name}"], ttl=TTL, reload=[command])
    old, new = s.renewed()
    first = s.deployed()
    s.deploy()
    s.wait_out_gate()
    flag.touch()
    assert s.deploy().returncode == 1  # swapped, reload failed
    live = tmp_path / "live" / name
    old_version = next(p for p in (tmp_path / "live" / ".versions" / name).iterdir()
                       if (p / "cert.pem").read_bytes() == first)
    tmp_link = tmp_path / "live" / "tmp-link"
    tmp_link.symlink_to(old_version)
    tmp_link.replace(live)  # the admin rolls back by hand
    flag.unlink()
    done = s.deploy()
    assert f"{name}: not retiring: {live} holds certificate" in done.stdout
    assert s.tlsa_on(s.tlsa[0]) == old | new | {FOREIGN}, "I2: the records of what is on disk stay"
