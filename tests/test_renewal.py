"""Renewal stages the certificate and pre-publishes its TLSA records (installer role and deploy hook).

The real certbot where its side is tested (installer versus hook, --reuse-key, dry runs, the installed hook);
elsewhere certificates are handed to the deploy hook as certbot hands them over (tests/scenario.py).
"""

from __future__ import annotations

import pytest

from certbot_dane.certificate import fingerprint
from sandbox.fleet import write_certificate
from tests.scenario import CA, Scenario, snapshot

FOREIGN = "2 1 1 " + "ab" * 32


@pytest.mark.parametrize("way", ["installer", "hook"])
def test_first_issue_bootstraps_then_renewal_stages_and_prepublishes_next_to_the_old(sandbox, tmp_path, way):
    name = f"r-{way}.example.org"
    tlsa = [f"_25._tcp.{name}", f"_465._tcp.{name}"]
    s = Scenario(sandbox, tmp_path, name, tlsa, way=way)
    done = s.issue()
    assert done.returncode == 0, done.stderr
    first = s.certbot_cert()
    # bootstrap: no TLSA RRset existed, so the first certificate is deployed at once and published
    assert s.deployed() == first and s.staged() is None
    old = s.records(first)
    for n in tlsa:
        s.wait_until_served(n, old)
    assert s.ran.read_text().count("reloaded") == 1
    s.add_by_hand(tlsa[0], FOREIGN)

    done = s.renew()
    assert done.returncode == 0, done.stderr
    second = s.certbot_cert()
    assert second != first
    assert s.deployed() == first, "the deployed copy must not change on renewal"
    assert s.staged() == second
    new = s.records(second)
    for n in tlsa:
        s.wait_until_served(n, old | new)
    assert s.tlsa_on(tlsa[0]) == old | new | {FOREIGN}
    state = s.state()
    assert state["staged"]["fingerprint"] == fingerprint(second)
    published = {(p["name"], p["value"]) for p in state["published"]}
    assert published == {(n.lower() + ".", v) for n in tlsa for v in old | new}
    assert all(p["at"] > 0 for p in state["published"])
    assert s.ran.read_text().count("reloaded") == 1, "no reload before the gate"


def test_renewed_again_before_deploy_replaces_the_staged_one_and_retires_its_records(sandbox, tmp_path):
    name = "twice.example.org"
    tlsa = [f"_25._tcp.{name}"]
    s = Scenario(sandbox, tmp_path, name, tlsa, way="hook")
    old = s.bootstrapped()
    middle = s.records(s.deliver(via="hook"))
    s.wait_until_served(tlsa[0], old | middle)
    newest_cert = s.deliver(via="hook")
    newest = s.records(newest_cert)
    assert s.staged() == newest_cert
    s.wait_until_exactly(tlsa[0], old | newest)  # the never-deployed middle certificate's record is retired
    assert s.state()["staged"]["served_at"] is None, "the newer one's clock starts fresh"


def test_existing_tlsa_records_mean_no_bootstrap_the_first_certificate_waits(sandbox, tmp_path):
    name = "nobootstrap.example.org"
    tlsa = [f"_25._tcp.{name}"]
    s = Scenario(sandbox, tmp_path, name, tlsa, way="hook")
    s.add_by_hand(tlsa[0], FOREIGN)
    first = s.deliver(via="hook")
    assert s.deployed() is None and s.staged() == first
    s.wait_until_served(tlsa[0], s.records(first) | {FOREIGN})


def test_several_params_and_two_zones_are_published_in_one_run(sandbox, tmp_path):
    name = "multi.example.org"
    tlsa = [f"_25._tcp.{name}", "_25._tcp.multi.example.net"]
    s = Scenario(sandbox, tmp_path, name, tlsa, way="hook", params=("3 1 1", "2 1 1", "3 0 2"))
    values = s.records(s.deliver(via="hook", ca=CA()))
    assert {v.split()[0] + v.split()[1] + v.split()[2] for v in values} == {"311", "211", "302"}
    for n in tlsa:
        s.wait_until_served(n, values)


def test_reused_key_with_3_1_1_needs_no_wait_and_goes_live_at_once(sandbox, tmp_path):
    name = "reuse.example.org"
    tlsa = [f"_25._tcp.{name}"]
    s = Scenario(sandbox, tmp_path, name, tlsa, params=("3 1 1",))
    assert s.issue().returncode == 0
    before = s.tlsa_on(tlsa[0])
    done = s.renew("--reuse-key")
    assert done.returncode == 0, done.stderr
    assert s.deployed() == s.certbot_cert(), "same key: records already published and aged"
    assert s.staged() is None
    assert s.tlsa_on(tlsa[0]) == before
    assert s.ran.read_text().count("reloaded") == 2


@pytest.mark.parametrize("way", ["installer", "hook"])
def test_dry_run_changes_nothing_in_dns_or_on_disk(sandbox, tmp_path, way):
    name = f"dry-{way}.example.org"
    tlsa = [f"_25._tcp.{name}"]
    s = Scenario(sandbox, tmp_path, name, tlsa, way=way)
    assert s.issue().returncode == 0
    s.wait_until_served(tlsa[0], s.records(s.certbot_cert()))
    records = s.tlsa_on(tlsa[0])
    disk = snapshot(tmp_path / "state") | snapshot(tmp_path / "live")
    done = s.certbot("renew", "--dry-run", "--run-deploy-hooks", "--cert-name", name)
    assert done.returncode == 0, done.stderr
    # the dry run's own DNS-01 challenge adds and removes a TXT record; the TLSA RRset is untouched
    assert s.tlsa_on(tlsa[0]) == records
    assert sandbox.primary.query(f"_acme-challenge.{name}", "TXT") == []
    assert snapshot(tmp_path / "state") | snapshot(tmp_path / "live") == disk


def test_hook_skips_lineages_it_does_not_manage_with_one_info_line(sandbox, tmp_path):
    s = Scenario(sandbox, tmp_path, "managed.example.org", ["_25._tcp.managed.example.org"], way="hook")
    unmanaged = tmp_path / "letsencrypt" / "live" / "unmanaged.example.org"
    write_certificate(unmanaged, "unmanaged.example.org")
    done = s.run_hook(unmanaged)
    assert done.returncode == 0, done.stderr
    assert "lineage unmanaged.example.org is not configured" in done.stderr + done.stdout
    assert not (tmp_path / "state" / "staging" / "unmanaged.example.org").exists()


def test_dns_failure_during_publish_keeps_the_staged_certificate_and_the_next_run_completes(make_sandbox, tmp_path):
    box = make_sandbox(pebble=False)
    name = "down.example.org"
    tlsa = [f"_25._tcp.{name}"]
    s = Scenario(box, tmp_path, name, tlsa, way="hook")
    old = s.bootstrapped()
    renewal = s.new_certificate()  # certbot renewed it, then runs the deploy hook while the primary is down
    box.primary.stop()
    done = s.run_hook(renewal)
    assert done.returncode == 1
    assert done.stderr.count("error:") == 1 and f"127.0.0.1:{box.port}" in done.stderr
    new_cert = s.certbot_cert()
    assert s.staged() == new_cert and s.state()["staged"] is not None
    assert s.deployed() != new_cert
    box.primary.start()
    done = s.cli("deploy")
    assert done.returncode == 0, done.stderr
    s.wait_until_served(tlsa[0], old | s.records(new_cert))


def test_refused_publish_is_reported_in_one_line_and_retried_by_the_next_run(sandbox, tmp_path):
    name = "ok.locked.example"
    s = Scenario(sandbox, tmp_path, name, [f"_25._tcp.{name}"], way="hook")
    done = s.run_hook(s.new_certificate())
    (error,) = [line for line in done.stderr.splitlines() if "error:" in line]  # the rest: info lines
    assert done.returncode == 1 and "answered REFUSED" in error and "update-policy" in error
    assert s.deployed() is None, "a bootstrap goes live only once its records are published"
    assert s.staged() == s.certbot_cert(), "the certificate is staged, nothing lost"
    done = s.cli("deploy")
    assert done.returncode == 1
    assert done.stderr.strip().count("\n") == 0 and "answered REFUSED" in done.stderr
    assert s.deployed() is None


def test_install_hook_puts_a_working_hook_in_certbots_directory(sandbox, tmp_path):
    name = "installhook.example.org"
    s = Scenario(sandbox, tmp_path, name, [f"_25._tcp.{name}"])
    hooks_dir = sandbox.base / "certbot" / "config" / "renewal-hooks" / "deploy"
    done = s.cli("install-hook", "--hooks-dir", str(hooks_dir))
    assert done.returncode == 0, done.stderr
    hook = hooks_dir / "certbot-dane"
    assert hook.stat().st_mode & 0o111 and str(s.config) in hook.read_text()
    try:
        done = s.certbot("certonly", "-a", "dane", "--dane-config", str(s.config), "--cert-name", name, "-d", name)
        assert done.returncode == 0, done.stderr
        assert s.deployed() == s.certbot_cert(), "certbot ran the installed hook: bootstrap deployed it"
    finally:
        hook.unlink()
