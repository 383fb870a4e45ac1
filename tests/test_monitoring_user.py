"""`status` as the monitoring user on the real sandbox: no TSIG key, the state readable through `monitor_group`.

The monitoring user is `nobody` with only the monitoring group (setpriv, no supplementary groups); the
sandbox's key file is out of its reach. It gets the right verdict and exit code in text (with Nagios
performance data), JSON and Prometheus formats, and a clear message when the group is not configured.
"""

from __future__ import annotations

import grp
import json
import os
import re
import stat
import subprocess
import time
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from certbot_dane import certificate
from certbot_dane.config import load
from certbot_dane.dnsclient import DnsClient
from certbot_dane.errors import ConfigError
from certbot_dane.records import Record, ZoneUpdate
from sandbox.servers import missing_binaries
from tests.scenario import GROUP, NOBODY, Scenario, as_monitor, fqdn, monitored, parse_perfdata, require_programs


@pytest.fixture(autouse=True)
def monitoring_user() -> None:
    """Running status as another user needs root and setpriv."""
    if os.geteuid() != 0:
        require_programs(["root (to run status as another user)"], "none: run the tests as root")
    require_programs(missing_binaries(("setpriv",)), "util-linux")


def mode_and_group(path: Path) -> tuple[str, str]:
    info = os.lstat(path)
    return f"{stat.S_IMODE(info.st_mode):04o}", grp.getgrgid(info.st_gid).gr_name


def bootstrapped(s: Scenario) -> set[str]:
    """The first certificate through the real deploy hook (as root): deployed at once; its records, once served."""
    s.deliver(via="hook")
    live = s.records(s.certbot_cert())
    for name in s.tlsa:
        s.wait_until_served(name, live)
    return live


def remove_by_hand(s: Scenario, name: str, values: set[str]) -> None:
    """An admin removes records with the key (as root)."""
    client = DnsClient(load(s.config).dns)
    client.update(ZoneUpdate(client.find_zone(fqdn(name)), remove=tuple(Record(fqdn(name), "TLSA", v) for v in values)))


def first_line_perfdata(stdout: str) -> tuple[str, dict[str, tuple[str, str, list[str]]]]:
    first = stdout.splitlines()[0]
    text, bar, perf = first.partition(" | ")
    assert bar, first
    return text, parse_perfdata(perf)


def metrics(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a Prometheus exposition, parsed by the official client's parser."""
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def test_status_as_the_monitoring_user_needs_no_key_and_reads_the_state_through_its_group(sandbox, public_tmp):
    name = "mon-user.example.org"
    s = Scenario(sandbox, public_tmp, name, [f"_25._tcp.{name}", f"_465._tcp.{name}"], ttl=300)
    monitored(s, GROUP)
    done = s.issue()  # the real certbot with the plugin as installer
    assert done.returncode == 0, done.stderr
    live = s.records(s.certbot_cert())
    for tlsa in s.tlsa:
        s.wait_until_served(tlsa, live)
    key = str(sandbox.key.path)
    unreadable = subprocess.run(["setpriv", f"--reuid={NOBODY}", f"--regid={grp.getgrnam(GROUP).gr_gid}",
                                 "--clear-groups", "cat", key], capture_output=True)
    assert unreadable.returncode != 0  # the premise: the monitoring user cannot read the TSIG key

    state_dir, deployed = public_tmp / "state", public_tmp / "live" / name
    assert mode_and_group(state_dir) == ("0750", GROUP)
    assert mode_and_group(state_dir / "lineages") == ("0750", GROUP)
    assert mode_and_group(state_dir / "lineages" / f"{name}.json") == ("0640", GROUP)
    assert mode_and_group(state_dir / "instance") == ("0640", GROUP)
    assert mode_and_group(state_dir / "lock")[0] == "0600"  # whoever can open the lock can hold it
    assert mode_and_group(deployed / "cert.pem")[0] == "0644" and mode_and_group(deployed / "privkey.pem")[0] == "0600"

    done = as_monitor(s, "status")
    assert done.returncode == 0, done.stderr
    text, perf = first_line_perfdata(done.stdout)
    assert text == "DANE OK: 1 lineage(s), 0 critical, 0 warnings; every certificate matches its published records"
    assert 1800 < float(perf["days_left"][0]) < 1830 and perf["days_left"][2] == ["14:", "0:"]
    assert perf["lag_s"] == ("0", "s", ["300", "", "0"])
    assert perf[f"{name}_days_left"] == perf["days_left"] and perf[f"{name}_lag_s"] == perf["lag_s"]
    assert f"{name}  OK  steady" in done.stdout

    # what it cannot do: check or deploy as the keyed commands (today's message), read the key
    checked = as_monitor(s, "check", "--read-only")
    assert checked.returncode == 0, checked.stderr
    assert f"configuration is valid for read-only use (status, check --read-only; no TSIG key: dns.key_file: " \
           f"cannot read {key}: Permission denied;" in checked.stdout
    for command in (("check",), ("deploy",)):
        refused = as_monitor(s, *command)
        assert refused.returncode == 1 and f"dns.key_file: cannot read {key}: Permission denied" in refused.stderr

    # a renewal staged through the real deploy hook: the monitoring user reads the staged certificate too
    new = s.records(s.deliver(via="hook"))
    for tlsa in s.tlsa:
        s.wait_until_served(tlsa, live | new)
    assert mode_and_group(state_dir / "staging") == ("0750", GROUP)
    done = as_monitor(s, "status", "--json")
    assert done.returncode == 0, done.stderr
    lineage = json.loads(done.stdout)["lineages"][0]
    assert lineage["phase"] == "waiting-for-ttl" and set(lineage["staged"]["records"]) == new

    # an admin removes the deployed record by hand from one name: the monitoring user sees CRITICAL
    remove_by_hand(s, s.tlsa[0], live)
    s.wait_until_exactly(s.tlsa[0], new)
    done = as_monitor(s, "status")
    assert done.returncode == 2, done.stderr
    text, perf = first_line_perfdata(done.stdout)
    assert text.startswith(f"DANE CRITICAL: 1 lineage(s), 1 critical, 0 warnings; {name}: 127.0.0.1:{sandbox.port} "
                           f"serves 1 TLSA record(s) at _25._tcp.{name}., none matching the deployed certificate")
    assert perf["lag_s"][0] == "0" and 1800 < float(perf["days_left"][0]) < 1830


def test_without_monitor_group_status_names_the_unreadable_state_file_until_the_group_is_set(sandbox, public_tmp):
    name = "mon-nogroup.example.org"
    s = Scenario(sandbox, public_tmp, name, [f"_25._tcp.{name}"])
    monitored(s, None)
    bootstrapped(s)
    assert mode_and_group(public_tmp / "state")[0] == "0700"  # today's modes without the setting

    state_file = public_tmp / "state" / "lineages" / f"{name}.json"
    for args in (("status",), ("status", "--prometheus")):
        done = as_monitor(s, *args)
        assert done.returncode == 3
        assert done.stderr.startswith(f"certbot-dane status: UNKNOWN: cannot read state file {state_file}: "
                                      "Permission denied; for a monitoring user, set monitor_group")
    assert done.stdout.startswith("# HELP certbot_dane_up")
    assert metrics(done.stdout)[("certbot_dane_up", ())] == 0

    # the admin sets the group; the next deploy run (the timer's) lets it read the existing files
    monitored(s, GROUP)
    assert s.cli("deploy").returncode == 0
    assert mode_and_group(state_file) == ("0640", GROUP)
    done = as_monitor(s, "status")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("DANE OK: 1 lineage(s), 0 critical, 0 warnings")


def test_prometheus_output_as_the_monitoring_user_parses_with_the_real_parser(sandbox, public_tmp):
    name = "mon-prom.example.org"
    s = Scenario(sandbox, public_tmp, name, [f"_25._tcp.{name}", f"_587._tcp.{name}"])
    monitored(s, GROUP)
    live = bootstrapped(s)

    done = as_monitor(s, "status", "--prometheus")
    assert done.returncode == 0, done.stderr
    assert done.stdout.endswith("\n")
    assert not re.search(r"^certbot_dane_\S+ \S+ \S+$", done.stdout, re.M)  # no timestamps (the textfile collector)
    found = metrics(done.stdout)
    lineage = (("lineage", name),)
    primary = f"127.0.0.1:{sandbox.port}"
    assert found[("certbot_dane_up", ())] == 1
    assert found[("certbot_dane_status", lineage)] == 0
    assert {labels[1][1]: value for (metric, labels), value in found.items()
            if metric == "certbot_dane_phase" and labels[0] == lineage[0]}["steady"] == 1
    assert sum(value for (metric, _), value in found.items() if metric == "certbot_dane_phase") == 1
    not_after = certificate.info(s.certbot_cert()).not_after.timestamp()
    deployed = (("certificate", "deployed"), *lineage)
    assert found[("certbot_dane_certificate_not_after_timestamp_seconds", deployed)] == not_after
    checked = found[("certbot_dane_last_check_timestamp_seconds", ())]
    assert found[("certbot_dane_certificate_days_left", deployed)] == pytest.approx((not_after - checked) / 86400,
                                                                                   abs=1e-4)
    assert not any(labels[0] == ("certificate", "staged") for metric, labels in found if "certificate" in metric)
    assert found[("certbot_dane_deploy_lag_seconds", lineage)] == 0
    for tlsa in s.tlsa:
        labels = (*lineage, ("name", fqdn(tlsa)), ("server", primary))
        assert found[("certbot_dane_tlsa_records", labels)] == len(live)
        assert found[("certbot_dane_tlsa_matches_deployed", labels)] == 1
        assert found[("certbot_dane_tlsa_dnssec_valid", labels)] == 1
        assert found[("certbot_dane_tlsa_ttl_seconds", labels)] == s.ttl
    assert found[("certbot_dane_soa_serial", (*lineage, ("server", primary), ("zone", "example.org.")))] == \
        sandbox.primary.soa_serial("example.org")
    assert not any(metric == "certbot_dane_findings" for metric, _ in found)

    unknown = as_monitor(s, "status", "--prometheus", "--lineage", "nope.example.org")
    assert unknown.returncode == 3 and "lineage 'nope.example.org' is not configured" in unknown.stderr
    assert [(metric, value) for (metric, _), value in metrics(unknown.stdout).items()] == [
        ("certbot_dane_up", 0), ("certbot_dane_last_check_timestamp_seconds", pytest.approx(time.time(), abs=3600))]


def test_a_configuration_loaded_without_its_key_never_signs_an_update(sandbox, tmp_path):
    config = sandbox.write_config(tmp_path / "read-only.toml", lineages={"ro.example.org": ["_25._tcp.ro.example.org"]})
    config.write_text(config.read_text().replace(str(sandbox.key.path), str(tmp_path / "unreadable.key")))
    settings = load(config, need_key=False)
    assert settings.dns.key is None
    serial = sandbox.primary.soa_serial("example.org")
    client = DnsClient(settings.dns)
    with pytest.raises(ConfigError, match=rf"no TSIG key to sign with \(dns.key_file: cannot read {tmp_path}/unreadable"
                                          r".key: No such file or directory\): the configuration was loaded for "
                                          r"read-only use"):
        client.update(ZoneUpdate("example.org.", add=(Record("ro.example.org.", "TXT", '"x"', 60),)))
    assert client.find_zone("_25._tcp.ro.example.org.") == "example.org."  # queries need no key
    assert sandbox.primary.soa_serial("example.org") == serial and not sandbox.primary.query("ro.example.org", "TXT")
