"""`certbot-dane deploy` on real named: the gate, the swap, reload, retire, crashes and the lock."""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import stat
import time
from pathlib import Path

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
from tests.scenario import Scenario, snapshot

FOREIGN = "2 1 1 " + "cd" * 32
TTL = 1


def wait_for_gate(s: Scenario) -> None:
    """Wait on the real clock until the staged certificate's gate has opened (2 x TTL after served_at)."""
    staged = s.state()["staged"]
    assert staged["served_at"] is not None, "the gate clock has not started"
    time.sleep(max(0.0, staged["served_at"] + 2 * TTL + 0.05 - time.time()))


def renewed(s: Scenario) -> tuple[set[str], set[str]]:
    """Issue (bootstrap), add a foreign record, renew: return (old records, new records)."""
    assert s.issue().returncode == 0
    old = s.records(s.certbot_cert())
    s.add_by_hand(s.tlsa[0], FOREIGN, ttl=TTL)
    done = s.renew()
    assert done.returncode == 0, done.stderr
    new = s.records(s.certbot_cert())
    for name in s.tlsa:
        s.wait_until_served(name, old | new)
    return old, new


def key_matches_cert(directory: Path) -> bool:
    cert = load_pem_x509_certificate((directory / "cert.pem").read_bytes())
    key = serialization.load_pem_private_key((directory / "privkey.pem").read_bytes(), None)
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    pub = serialization.Encoding.DER
    combined = (directory / "combined.pem").read_bytes()
    return (cert.public_key().public_bytes(pub, spki) == key.public_key().public_bytes(pub, spki)
            and combined == (directory / "privkey.pem").read_bytes() + (directory / "fullchain.pem").read_bytes())


def test_deploy_waits_for_the_gate_then_swaps_reloads_and_retires(sandbox, tmp_path):
    name = "gate.example.org"
    s = Scenario(sandbox, tmp_path, name, [f"_25._tcp.{name}", f"_587._tcp.{name}"], ttl=TTL)
    old, new = renewed(s)
    first = s.deployed()

    done = s.cli("deploy")
    assert done.returncode == 0, done.stderr
    assert f"{name}: not deploying yet: waiting 2 x TTL ({2 * TTL}s) for caches to expire until " in done.stdout
    assert s.deployed() == first and s.ran.read_text().count("reloaded") == 1

    wait_for_gate(s)
    done = s.cli("deploy")
    assert done.returncode == 0, done.stderr
    assert s.deployed() == s.certbot_cert() != first
    assert key_matches_cert(tmp_path / "live" / name)
    assert stat.S_IMODE((tmp_path / "live" / name / "privkey.pem").stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "live" / name / "combined.pem").stat().st_mode) == 0o600
    assert s.ran.read_text().count("reloaded") == 2
    s.box.primary.wait_for(s.tlsa[0], "TLSA", lambda v: len(v) == 2)
    s.box.primary.wait_for(s.tlsa[1], "TLSA", lambda v: len(v) == 1)
    assert s.tlsa_on(s.tlsa[0]) == new | {FOREIGN}, "old retired, the hand-added record kept"
    assert s.tlsa_on(s.tlsa[1]) == new
    st = s.state()
    assert st["staged"] is None and st["previous"] is None and not st["unverified"]
    assert {p["value"] for p in st["published"]} == new
    assert s.staged() is None

    done = s.cli("deploy")  # steady state: nothing to do
    assert done.returncode == 0 and s.ran.read_text().count("reloaded") == 2


def test_a_lagging_secondary_holds_the_gate_until_it_catches_up(make_sandbox, tmp_path):
    box = make_sandbox(secondary=True)
    name = "lag.example.org"
    s = Scenario(box, tmp_path, name, [f"_25._tcp.{name}"], ttl=TTL, deploy_nameservers=box.nameservers)
    old, new = renewed(s)
    first = s.deployed()
    done = s.cli("deploy")
    assert f"lagging: 127.0.0.2:{box.port} for _25._tcp.{name}." in done.stdout
    assert s.state()["staged"]["served_at"] is None
    time.sleep(2 * TTL + 0.1)  # the TTLs pass, but the secondary still lags: no deploy
    done = s.cli("deploy")
    assert "lagging: 127.0.0.2" in done.stdout and s.deployed() == first

    box.secondary.retransfer("example.org")
    assert s.cli("deploy").returncode == 0  # the clock starts now
    assert s.deployed() == first
    wait_for_gate(s)
    assert s.cli("deploy").returncode == 0
    assert s.deployed() == s.certbot_cert()


def test_a_failed_reload_keeps_the_old_records_and_the_next_run_finishes(sandbox, tmp_path):
    name = "reloadfail.example.org"
    flag, log = tmp_path / "broken", tmp_path / "reloads.log"
    command = f"sh -c 'if [ -e {flag} ]; then echo postfix: fatal: boom >&2; exit 3; fi; echo reloaded >> {log}'"
    s = Scenario(sandbox, tmp_path, name, [f"_25._tcp.{name}"], ttl=TTL, reload=[command])
    old, new = renewed(s)
    s.cli("deploy")
    wait_for_gate(s)
    flag.touch()
    done = s.cli("deploy")
    assert done.returncode == 1
    assert "exited 3: postfix: fatal: boom" in done.stderr
    assert s.tlsa_on(s.tlsa[0]) == old | new | {FOREIGN}
    assert s.state()["unverified"] and "boom" in s.state()["error"]
    flag.unlink()
    done = s.cli("deploy")
    assert done.returncode == 0, done.stderr
    s.box.primary.wait_for(s.tlsa[0], "TLSA", lambda v: len(v) == 2)
    assert s.tlsa_on(s.tlsa[0]) == new | {FOREIGN}
    assert not s.state()["unverified"] and s.state()["error"] is None


def test_dry_run_prints_the_plan_and_changes_nothing(sandbox, tmp_path):
    name = "drydeploy.example.org"
    s = Scenario(sandbox, tmp_path, name, [f"_25._tcp.{name}"], ttl=TTL)
    renewed(s)
    s.cli("deploy")
    wait_for_gate(s)
    serial = sandbox.primary.soa_serial("example.org")
    before = snapshot(tmp_path)
    done = s.cli("deploy", "--dry-run")
    assert done.returncode == 0, done.stderr
    assert f"{name}: (dry run) deploy certificate" in done.stdout
    assert f"{name}: (dry run) reload with" in done.stdout
    assert f"{name}: (dry run) retire _25._tcp.{name}. TLSA 3 0 1" in done.stdout
    assert sandbox.primary.soa_serial("example.org") == serial
    assert snapshot(tmp_path) == before


def test_emergency_override_deploys_before_the_gate_and_says_who_may_break(sandbox, tmp_path):
    name = "force.example.org"
    s = Scenario(sandbox, tmp_path, name, [f"_25._tcp.{name}"], ttl=TTL)
    renewed(s)
    done = s.cli("deploy", "--force-before-gate")
    assert done.returncode == 0, done.stderr
    assert "EMERGENCY deploy before the gate" in done.stdout and "will defer mail" in done.stdout
    assert s.deployed() == s.certbot_cert()


def test_the_lock_keeps_a_second_run_out(sandbox, tmp_path):
    name = "locked.example.org"
    s = Scenario(sandbox, tmp_path, name, [f"_25._tcp.{name}"], ttl=TTL)
    assert s.issue().returncode == 0
    with state.locked(tmp_path / "state"):
        done = s.cli("deploy")
    assert done.returncode == 1
    assert "another certbot-dane run holds" in done.stderr


@pytest.mark.parametrize("fault", ["before-swap", "after-swap", "after-reload", "after-retire"])
def test_a_kill_at_each_deploy_step_converges_on_the_next_run(sandbox, tmp_path, fault):
    name = f"kill-{fault}.example.org"
    s = Scenario(sandbox, tmp_path, name, [f"_25._tcp.{name}"], ttl=TTL)
    old, new = renewed(s)
    first = s.deployed()
    s.cli("deploy")
    wait_for_gate(s)
    done = s.cli("deploy", env={"CERTBOT_DANE_FAULT": fault})
    assert done.returncode == 137
    live = tmp_path / "live" / name
    assert key_matches_cert(live), "never a mismatched key/cert pair"
    assert s.deployed() in (first, s.certbot_cert())
    assert s.tlsa_on(s.tlsa[0]) >= (new if s.deployed() != first else old), "I2: the live record stays"
    done = s.cli("deploy")
    assert done.returncode == 0, done.stderr
    assert s.deployed() == s.certbot_cert() and key_matches_cert(live)
    s.box.primary.wait_for(s.tlsa[0], "TLSA", lambda v: len(v) == 2)
    assert s.tlsa_on(s.tlsa[0]) == new | {FOREIGN}
    st = s.state()
    assert st["staged"] is None and not st["unverified"]
    assert s.ran.read_text().count("reloaded") >= 2


@pytest.mark.parametrize("fault", ["after-stage-files", "before-publish", "after-publish"])
def test_a_kill_while_staging_loses_nothing_and_the_next_run_publishes(sandbox, tmp_path, fault):
    name = f"kill-{fault}.example.org"
    s = Scenario(sandbox, tmp_path, name, [f"_25._tcp.{name}"], ttl=TTL, way="hook")
    assert s.issue().returncode == 0
    old = s.records(s.certbot_cert())
    env = {**s.env, "CERTBOT_DANE_FAULT": fault}
    done = s.box.certbot("renew", "--force-renewal", "--cert-name", name, env=env)
    assert "137" in done.stderr or done.returncode != 0 or "error" in done.stderr.lower()
    new_cert = s.certbot_cert()
    assert s.staged() == new_cert, "the staged certificate survives the kill"
    done = s.cli("deploy")
    assert done.returncode == 0, done.stderr
    s.wait_until_served(s.tlsa[0], old | s.records(new_cert))
    assert json.loads((tmp_path / "state" / "lineages" / f"{name}.json").read_text())["staged"]["fingerprint"] == \
        hashlib.sha256(load_pem_x509_certificate(new_cert).public_bytes(serialization.Encoding.DER)).hexdigest()
    assert os.path.exists(tmp_path / "live" / name / "cert.pem")


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
        done = s.issue()
        assert done.returncode == 0, done.stderr
        assert endpoint.reloads == 1 and not s.state()["unverified"]
        assert endpoint.sni[-1] == name
        old = s.records(s.certbot_cert())
        assert s.renew().returncode == 0
        new = s.records(s.certbot_cert())
        s.wait_until_served(s.tlsa[0], old | new)
        s.cli("deploy")
        wait_for_gate(s)

        flag.touch()  # "reload" succeeds but the service keeps serving the old certificate
        done = s.cli("deploy")
        assert done.returncode == 1
        assert f"smtp://{name}:{endpoint.port} serves certificate" in done.stderr
        assert "was the service reloaded?" in done.stderr
        assert s.tlsa_on(s.tlsa[0]) == old | new, "old records stay after a failed verification"
        assert s.state()["unverified"]

        flag.unlink()
        done = s.cli("deploy")
        assert done.returncode == 0, done.stderr
        assert f"verified smtp://{name}:{endpoint.port}" in done.stdout
        s.box.primary.wait_for(s.tlsa[0], "TLSA", lambda v: len(v) == 1)
        assert s.tlsa_on(s.tlsa[0]) == new


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

    def run() -> CountingClient:
        client = CountingClient(settings.dns)
        rollout = Rollout(settings, client, CertStore(settings.state_dir, settings.deploy_dir))
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
    deadline = max(json.loads((tmp_path / "state" / "lineages" / f"{h}.json").read_text())["staged"]["served_at"]
                   for h in hosts) + 2 * TTL + 0.05
    time.sleep(max(0.0, deadline - time.time()))
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
    old, new = renewed(s)
    first = s.deployed()
    s.cli("deploy")
    wait_for_gate(s)
    flag.touch()
    assert s.cli("deploy").returncode == 1  # swapped, reload failed
    live = tmp_path / "live" / name
    old_version = next(p for p in (tmp_path / "live" / ".versions" / name).iterdir()
                       if (p / "cert.pem").read_bytes() == first)
    tmp_link = tmp_path / "live" / "tmp-link"
    tmp_link.symlink_to(old_version)
    tmp_link.replace(live)  # the admin rolls back by hand
    flag.unlink()
    done = s.cli("deploy")
    assert f"{name}: not retiring: {live} holds certificate" in done.stdout
    assert s.tlsa_on(s.tlsa[0]) == old | new | {FOREIGN}, "I2: the records of what is on disk stay"
