"""Fault injection on the real test bed: each fault ends with one clear error, nothing lost, convergence."""

from __future__ import annotations

import contextlib
import datetime
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from sandbox.fleet import write_certificate
from tests.scenario import FOREIGN, Scenario, snapshot

TTL = 1


@contextlib.contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    """A small tmpfs mounted at `path` (needs root); unmounted afterwards."""
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        if os.environ.get("CI") == "true":
            pytest.fail(f"cannot mount a tmpfs for the disk-full test: {mounted.stderr}")
        pytest.skip(f"cannot mount a tmpfs: {mounted.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def test_disk_full_while_staging_loses_nothing_and_the_next_run_stages(sandbox, tmp_path):
    name = "full.example.org"
    with tmpfs(tmp_path / "state", "256k"):
        s = Scenario(sandbox, tmp_path, name, [f"_25._tcp.{name}"], ttl=TTL, way="hook")
        s.bootstrapped()
        renewal = s.new_certificate()  # certbot renewed it, then runs the deploy hook:
        before = snapshot(tmp_path / "state")
        filler = tmp_path / "state" / "filler"
        with filler.open("wb", buffering=0) as handle:  # fill the file system up to the last byte
            for chunk in (65536, 4096, 512, 1):
                with contextlib.suppress(OSError):
                    while True:
                        handle.write(b"\0" * chunk)
        done = s.run_hook(renewal)
        assert done.returncode == 1 and done.stderr.count("\n") == 1
        assert "certbot-dane deploy hook: error:" in done.stderr
        assert "No space left on device" in done.stderr
        filler.unlink()
        assert snapshot(tmp_path / "state") == before, "nothing half-written is left behind"
        assert not list((tmp_path / "state" / "staging").rglob("*.tmp-*"))
        done = s.cli("deploy")
        assert done.returncode == 0, done.stderr
        assert "holds a newer certificate than certbot-dane knows; staging it" in done.stdout
        assert s.staged() == s.certbot_cert()


def test_read_only_state_dir_is_one_clear_error_and_nothing_changes(sandbox, tmp_path):
    name = "readonly.example.org"
    with tmpfs(tmp_path / "state", "1m"):
        s = Scenario(sandbox, tmp_path, name, [f"_25._tcp.{name}"], ttl=TTL, way="hook")
        s.bootstrapped()
        deployed = s.deployed()
        subprocess.run(["mount", "-o", "remount,ro", str(tmp_path / "state")], check=True)
        done = s.run_hook(s.new_certificate())
        assert done.returncode == 1
        assert "Read-only file system" in done.stderr and str(tmp_path / "state") in done.stderr
        done = s.cli("deploy")
        assert done.returncode == 1
        assert done.stderr.count("\n") == 1 and "Read-only file system" in done.stderr
        assert s.deployed() == deployed
        subprocess.run(["mount", "-o", "remount,rw", str(tmp_path / "state")], check=True)
        assert s.deploy().returncode == 0
        assert s.staged() == s.certbot_cert()


def test_primary_down_during_the_deploy_run_is_named_and_changes_nothing(make_sandbox, tmp_path):
    box = make_sandbox(pebble=False)
    name = "gatedown.example.org"
    s = Scenario(box, tmp_path, name, [f"_25._tcp.{name}"], ttl=TTL)
    s.renewed()
    s.deploy()
    s.wait_out_gate()
    before = snapshot(tmp_path / "live") | snapshot(tmp_path / "state" / "staging")
    box.primary.stop()
    done = s.deploy()
    assert done.returncode == 1
    assert f"127.0.0.1:{box.port}" in done.stderr and done.stderr.count("\n") == 1
    assert snapshot(tmp_path / "live") | snapshot(tmp_path / "state" / "staging") == before
    box.primary.start()
    assert s.deploy().returncode == 0
    assert s.deployed() == s.certbot_cert()


def test_a_secondary_down_during_the_gate_holds_it_and_is_named(make_sandbox, tmp_path):
    box = make_sandbox(secondary=True, pebble=False)
    name = "secdown.example.org"
    s = Scenario(box, tmp_path, name, [f"_25._tcp.{name}"], ttl=TTL, deploy_nameservers=box.nameservers)
    s.renewed()
    box.secondary.stop()
    done = s.deploy()
    assert done.returncode == 0
    assert f"lagging: 127.0.0.2:{box.port} for _25._tcp.{name}.: no answer" in done.stdout
    assert s.state()["staged"]["served_at"] is None


def test_primary_down_during_retire_keeps_the_records_and_the_next_run_retires(make_sandbox, tmp_path):
    box = make_sandbox(pebble=False)
    name = "retiredown.example.org"
    s = Scenario(box, tmp_path, name, [f"_25._tcp.{name}"], ttl=TTL,
                 reload=[f"sh -c 'echo reloaded >> {tmp_path / 'reloads.log'}'"])
    old, new = s.renewed()
    s.deploy()
    s.wait_out_gate()
    config = s.deploy_config.read_text().replace(
        "reload = [", f"reload = [\"sh -c 'test -e {tmp_path / 'stop'} && kill {box.primary.pid}; true'\", ")
    s.deploy_config.write_text(config)
    (tmp_path / "stop").touch()
    done = s.deploy()  # swap, reload (which stops the primary), verify, then retire fails
    assert done.returncode == 1
    assert f"127.0.0.1:{box.port}" in done.stderr
    assert s.deployed() == s.certbot_cert()
    assert {p["value"] for p in s.state()["published"]} == old | new, "old records still ours to retire"
    (tmp_path / "stop").unlink()
    box.primary.stop()
    box.primary.start()
    assert s.tlsa_on(s.tlsa[0]) == old | new | {FOREIGN}
    done = s.deploy()
    assert done.returncode == 0, done.stderr
    s.wait_until_exactly(s.tlsa[0], new | {FOREIGN})


@pytest.mark.parametrize("fault, expected", [
    ("badsig", "BADSIG: the server knows key certbot-dane. but the secret differs"),
    ("badkey", "BADKEY: the server does not know key wrong-name."),
])
def test_wrong_tsig_key_is_one_line_without_the_secret(sandbox, tmp_path, fault, expected):
    name = f"{fault}.example.org"
    s = Scenario(sandbox, tmp_path, name, [f"_25._tcp.{name}"], ttl=TTL)
    s.renewed()
    wrong = tmp_path / "wrong.key"
    secret = "d3Jvbmctc2VjcmV0LXdyb25nLXNlY3JldC13cm9uZyE="
    key_name = "certbot-dane." if fault == "badsig" else "wrong-name."
    wrong.write_text(f'key "{key_name}" {{ algorithm hmac-sha256; secret "{secret}"; }};\n')
    wrong.chmod(0o600)
    s.deploy_config.write_text(s.deploy_config.read_text().replace(str(sandbox.key.path), str(wrong)))
    before = snapshot(tmp_path / "live")
    # the lineage's publish is complete, so the first UPDATE is the retire after the forced deploy
    done = s.deploy(force=True)
    assert done.returncode == 1 and done.stderr.count("\n") == 1
    assert expected in done.stderr and secret not in done.stderr + done.stdout
    assert sandbox.key.secret not in done.stderr + done.stdout
    assert snapshot(tmp_path / "live") != before  # the swap itself needs no DNS; the retire failed
    assert s.tlsa_on(s.tlsa[0]) >= s.records(s.certbot_cert())


# -- bad certificates handed to the deploy hook: a precise message, nothing changed ---------------
@pytest.mark.parametrize("problem, make, message", [
    ("mismatched key", "mismatch", "the private key does not match the certificate"),
    ("expired", "expired", "the certificate expired on"),
    ("not yet valid", "future", "the certificate is not valid before"),
])
def test_a_bad_certificate_is_refused_and_nothing_changes(sandbox, tmp_path, problem, make, message):
    name = f"bad-{make}.example.org"
    s = Scenario(sandbox, tmp_path, name, [f"_25._tcp.{name}"], ttl=TTL, way="hook")
    s.bootstrapped()
    serial = sandbox.primary.soa_serial("example.org")
    before = snapshot(tmp_path / "state") | snapshot(tmp_path / "live")
    bad = tmp_path / "bad" / name
    if make == "expired":
        write_certificate(bad, name, age=datetime.timedelta(days=100), lifetime=datetime.timedelta(days=90))
    elif make == "future":
        write_certificate(bad, name, age=-datetime.timedelta(days=1))
    else:
        write_certificate(bad, name)
        write_certificate(tmp_path / "other", name)
        (bad / "privkey.pem").write_bytes((tmp_path / "other" / "privkey.pem").read_bytes())
    done = s.run_hook(bad)
    assert done.returncode == 1
    assert f"{name}: refusing the new certificate: {message}" in done.stderr
    assert snapshot(tmp_path / "state") | snapshot(tmp_path / "live") == before
    assert sandbox.primary.soa_serial("example.org") == serial


def test_a_certificate_not_covering_the_tlsa_host_is_staged_with_a_warning(sandbox, tmp_path):
    name = "cover.example.org"
    s = Scenario(sandbox, tmp_path, name, [f"_25._tcp.{name}", "_25._tcp.other-host.example.org"], ttl=TTL,
                 way="hook")
    done = s.run_hook(s.new_certificate())
    assert done.returncode == 0, done.stderr
    assert "does not cover other-host.example.org" in done.stderr
    assert s.deployed() == s.certbot_cert(), "staged (and, no RRset existing, deployed) all the same"


def test_a_tlsa_name_outside_every_zone_is_named(sandbox, tmp_path):
    s = Scenario(sandbox, tmp_path, "nozone.example.org", ["_25._tcp.mx.not-served.test"], ttl=TTL)
    done = s.cli("check")
    assert done.returncode == 1
    assert "is authoritative for no zone containing _25._tcp.mx.not-served.test." in done.stderr


def test_secrets_never_appear_in_any_output_or_log(sandbox, tmp_path):
    name = "secret.example.org"
    s = Scenario(sandbox, tmp_path, name, [f"_25._tcp.{name}"], ttl=TTL)
    outputs = [s.certbot("run", "-v", "-a", "dane", "-i", "dane", "--dane-config", str(s.config),
                         "--cert-name", name, "-d", name)]
    outputs += [s.renew("-v"), s.cli("-v", "deploy"), s.cli("-v", "deploy", "--dry-run"), s.cli("check")]
    outputs += [s.cli("status", "--json"), s.cli("status")]
    logs = "".join(p.read_text(errors="replace") for p in (sandbox.base / "certbot" / "logs").glob("*"))
    text = "".join(o.stdout + o.stderr for o in outputs) + logs
    assert sandbox.key.secret not in text
    assert (tmp_path / "state").stat().st_mode & 0o777 == 0o700
    for key in (tmp_path / "live").rglob("*.pem"):
        if key.name in ("privkey.pem", "combined.pem"):
            assert key.stat().st_mode & 0o077 == 0, f"{key} readable by others"
