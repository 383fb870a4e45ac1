"""End to end: the real `certbot` with `-a dane` and with the manual hooks, against real named + Pebble."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cryptography import x509

from sandbox.servers import Sandbox

HOOKS = Path(__file__).resolve().parent.parent / "hooks"


def hook_env(config: Path) -> dict[str, str]:
    """Environment for hooks: our config, and this interpreter's bin/ first on PATH (for python3)."""
    return {"CERTBOT_DANE_CONFIG": str(config),
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}


def issued_names(box: Sandbox, cert_name: str) -> set[str]:
    pem = (box.base / "certbot" / "config" / "live" / cert_name / "cert.pem").read_bytes()
    san = x509.load_pem_x509_certificate(pem).extensions.get_extension_for_class(x509.SubjectAlternativeName)
    return set(san.value.get_values_for_type(x509.DNSName))


def test_certonly_with_dane_issues_a_wildcard_and_apex_certificate_across_two_zones(sandbox, tmp_path):
    config = sandbox.write_config(tmp_path / "dane.toml")
    done = sandbox.certbot("certonly", "-a", "dane", "--dane-config", str(config), "--cert-name", "p1",
                           "-d", "p1.example.org", "-d", "*.p1.example.org", "-d", "p1.example.net")
    assert done.returncode == 0, done.stderr
    assert issued_names(sandbox, "p1") == {"p1.example.org", "*.p1.example.org", "p1.example.net"}
    # cleanup removed every validation value
    assert sandbox.primary.query("_acme-challenge.p1.example.org", "TXT") == []
    assert sandbox.primary.query("_acme-challenge.p1.example.net", "TXT") == []
    renewal = (sandbox.base / "certbot" / "config" / "renewal" / "p1.conf").read_text()
    assert "authenticator = dane" in renewal and f"dane_config = {config}" in renewal


def test_validation_values_of_others_at_the_same_name_survive(sandbox, tmp_path):
    from certbot_dane.config import load
    from certbot_dane.dnsclient import DnsClient
    from certbot_dane.records import Record, ZoneUpdate

    config = sandbox.write_config(tmp_path / "dane.toml")
    name = "_acme-challenge.p2.example.org"
    DnsClient(load(config).dns).update(ZoneUpdate("example.org.", add=(Record.txt(name, "someone-else", 60),)))
    done = sandbox.certbot("certonly", "-a", "dane", "--dane-config", str(config), "-d", "p2.example.org")
    assert done.returncode == 0, done.stderr
    assert sandbox.primary.query(name, "TXT") == ['"someone-else"']


def test_manual_hooks_issue_a_certificate_and_clean_up_exactly_what_they_added(sandbox, tmp_path):
    config = sandbox.write_config(tmp_path / "dane.toml")
    done = sandbox.certbot("certonly", "--manual", "--preferred-challenges", "dns", "--cert-name", "p3",
                           "--manual-auth-hook", str(HOOKS / "certbot-dane-auth"),
                           "--manual-cleanup-hook", str(HOOKS / "certbot-dane-cleanup"),
                           "-d", "p3.example.org", "-d", "*.p3.example.org", env=hook_env(config))
    assert done.returncode == 0, done.stderr
    assert issued_names(sandbox, "p3") == {"p3.example.org", "*.p3.example.org"}
    assert sandbox.primary.query("_acme-challenge.p3.example.org", "TXT") == []
    state = (sandbox.base / "state" / "manual-challenges.json").read_text()
    assert '"added": []' in state and '"pending": []' in state


def test_refused_update_fails_certbot_with_one_clear_line(sandbox, tmp_path):
    config = sandbox.write_config(tmp_path / "dane.toml")
    done = sandbox.certbot("certonly", "-a", "dane", "--dane-config", str(config), "-d", "no.locked.example")
    assert done.returncode != 0
    assert "answered REFUSED to UPDATE of zone locked.example." in done.stderr
    assert sandbox.key.secret not in done.stdout + done.stderr


def test_bad_config_fails_certbot_naming_file_and_key(sandbox, tmp_path):
    config = sandbox.write_config(tmp_path / "dane.toml", dns_extra='key_algoritm = "hmac-sha256"')
    done = sandbox.certbot("certonly", "-a", "dane", "--dane-config", str(config), "-d", "p4.example.org")
    assert done.returncode != 0
    assert f"{config}: 1 problem(s)" in done.stderr and "did you mean dns.key_algorithm?" in done.stderr


def _certbot_log(box: Sandbox) -> str:
    path = box.base / "certbot" / "logs" / "letsencrypt.log"
    return path.read_text() if path.exists() else ""


def test_plugin_waits_for_a_lagging_secondary_then_succeeds(make_sandbox, tmp_path):
    box = make_sandbox(secondary=True)
    config = box.write_config(tmp_path / "dane.toml", nameservers=box.nameservers,
                              dns_extra="propagation_timeout = 120")
    run = subprocess.Popen(box.certbot_command("certonly", "-a", "dane", "--dane-config", str(config),
                                               "-d", "lag.example.org"),
                           env=box.certbot_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # the plugin is demonstrably blocked on the secondary: the primary serves the value and
        # the plugin logs that it still waits for 127.0.0.2 (poll the log; no fixed sleep)
        box.primary.wait_for("_acme-challenge.lag.example.org", "TXT", bool)
        deadline = time.monotonic() + 60
        while f"still waiting for 127.0.0.2:{box.port}" not in _certbot_log(box):
            assert run.poll() is None, run.communicate()
            assert time.monotonic() < deadline, "the plugin never reported waiting for the secondary"
            time.sleep(0.05)
        assert box.secondary.query("_acme-challenge.lag.example.org", "TXT") == []
        box.secondary.retransfer("example.org")
        out, err = run.communicate(timeout=120)
    finally:
        run.kill()
    assert run.returncode == 0, err
    assert issued_names(box, "lag.example.org") == {"lag.example.org"}


def test_plugin_times_out_naming_the_lagging_server_and_cleans_up(make_sandbox, tmp_path):
    box = make_sandbox(secondary=True)
    config = box.write_config(tmp_path / "dane.toml", nameservers=box.nameservers, dns_extra="propagation_timeout = 2")
    done = box.certbot("certonly", "-a", "dane", "--dane-config", str(config), "-d", "never.example.org")
    assert done.returncode != 0
    assert (f"propagation timed out after 2s: 1 still lagging: 127.0.0.2:{box.port} for "
            "_acme-challenge.never.example.org. TXT (answered: NXDOMAIN)") in done.stderr
    assert box.primary.query("_acme-challenge.never.example.org", "TXT") == []


@pytest.mark.parametrize("hook", ["certbot-dane-auth", "certbot-dane-cleanup", "certbot-dane-deploy"])
def test_hooks_outside_certbot_say_how_to_use_them(hook, tmp_path, sandbox):
    config = sandbox.write_config(tmp_path / "dane.toml")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CERTBOT_", "RENEWED_"))}
    done = subprocess.run([str(HOOKS / hook)], env={**env, **hook_env(config)}, capture_output=True, text=True)
    assert done.returncode == 1
    assert "run this as certbot's" in done.stderr


def test_a_refused_zone_leaves_no_validation_record_in_the_zone_that_took_its_update(sandbox, tmp_path):
    # zones are updated in sorted order: example.org. takes its UPDATE, then locked.example. refuses its own
    config = sandbox.write_config(tmp_path / "dane.toml")
    done = sandbox.certbot("certonly", "-a", "dane", "--dane-config", str(config), "--cert-name", "half",
                           "-d", "half.example.org", "-d", "no.locked.example")
    assert done.returncode != 0
    assert "answered REFUSED to UPDATE of zone locked.example." in done.stderr
    assert sandbox.primary.query("_acme-challenge.half.example.org", "TXT") == []
    assert sandbox.key.secret not in done.stdout + done.stderr
