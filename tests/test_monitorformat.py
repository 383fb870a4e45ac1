"""Monitoring formats of hand-built reports: Nagios performance data and Prometheus text exposition, line by line."""

from __future__ import annotations

import datetime

from prometheus_client.parser import text_string_to_metric_families

from certbot_dane import dnssec, monitorformat
from certbot_dane.assessment import (
    CertView,
    EndpointView,
    Finding,
    LineageReport,
    NameView,
    RecordView,
    Report,
    SenderAnswer,
    ServerView,
    Severity,
    ZoneServer,
    ZoneView,
)
from certbot_dane.dnssec import Verdict
from tests.scenario import parse_perfdata

NOW = 1_900_000_000.0
DAY = 86400
OLD, NEW, FOREIGN = "3 0 1 " + "aa" * 32, "3 0 1 " + "bb" * 32, "2 1 1 " + "cd" * 32
NAME, ZONE = "_25._tcp.mx.example.org.", "example.org."
VALID, BOGUS = Verdict(dnssec.VALID), Verdict(dnssec.BOGUS, "signature expired")
ODD = 'x"y\\z\'=w\nv'  # every character either format must escape
RESOLVER, SMTP = "127.0.0.53:53", "smtp://mx.example.org:25"


def cert(value: str, days: float) -> CertView:
    not_after = datetime.datetime.fromtimestamp(NOW + days * DAY, datetime.UTC)
    return CertView(value[6:], "mx.example.org", "1f", not_after, (value,), frozenset({value}))


# mx: staged, ready for 400 s, deployed certificate 10 days from expiry; the primary serves both records,
# the secondary only an admin's record that does not accept the deployed certificate, with a bad signature;
# the resolver validates one name and fails the other; one address of the endpoint serves another certificate.
MX = LineageReport(
    "mx.example.org", "ready", "2 x TTL passed", NOW - 400, cert(OLD, 10), cert(NEW, 90),
    (NameView(NAME, ZONE, (
        ServerView("127.0.0.1:53", "NOERROR", 60, 7, (RecordView(OLD, "deployed", True),
                                                     RecordView(NEW, "staged", False)), VALID, NOW + 5 * DAY),
        ServerView("127.0.0.2:53", "NOERROR", 30, 6, (RecordView(FOREIGN, "foreign", False),
                                                     RecordView(NEW, "stale", False)), BOGUS))),),
    (ZoneView(ZONE, True, (ZoneServer("127.0.0.1:53", "NOERROR", 7, VALID),
                           ZoneServer("127.0.0.2:53", "NOERROR", 6, VALID))),),
    dnssec.BOGUS,
    (Finding(Severity.CRITICAL, "deployed-unmatched", "..."), Finding(Severity.CRITICAL, "dnssec-bogus", "..."),
     Finding(Severity.WARNING, "server-lags", "a"), Finding(Severity.WARNING, "server-lags", "b"),
     Finding(Severity.WARNING, "expires-soon", "...")),
    ("deploy certificate bbbb",),
    sender=(SenderAnswer(RESOLVER, NAME, "NOERROR", frozenset({OLD, NEW}), True),
            SenderAnswer(RESOLVER, "_465._tcp.mx.example.org.", "SERVFAIL")),
    endpoints=(EndpointView(SMTP, "127.0.0.1", Severity.OK, "aa" * 32, OLD, "matches"),
               EndpointView(SMTP, "127.0.0.2", Severity.CRITICAL, "ee" * 32, None, "matches nothing")),
)
# a lineage with an odd name, nothing deployed; its server serves nothing (no TTL)
NEW_LINEAGE = LineageReport(
    ODD, "new", "nothing yet", None, None, None,
    (NameView("_443._tcp.www.example.org.", ZONE, (ServerView("127.0.0.1:53", "NXDOMAIN", None, None, (), VALID),)),),
    (ZoneView(ZONE, True, (ZoneServer("127.0.0.1:53", "NXDOMAIN", None, VALID),)),),
    "none", (Finding(Severity.WARNING, "nothing-deployed", "..."),),
    sender=(SenderAnswer(RESOLVER, "_443._tcp.www.example.org.", None, error="no answer within 10s"),),
)
REPORT = Report(NOW, (MX, NEW_LINEAGE))

PHASES = ("new", "steady", "waiting-for-servers", "waiting-for-ttl", "ready", "unverified", "error")
ODD_LABEL = 'x\\"y\\\\z\'=w\\nv'
MX_NAME_P = f'lineage="mx.example.org",name="{NAME}",server="127.0.0.1:53"'
MX_NAME_S = f'lineage="mx.example.org",name="{NAME}",server="127.0.0.2:53"'
ODD_NAME = f'lineage="{ODD_LABEL}",name="_443._tcp.www.example.org.",server="127.0.0.1:53"'

EXPECTED_SAMPLES = [
    "certbot_dane_up 1",
    "certbot_dane_last_check_timestamp_seconds 1900000000",
    'certbot_dane_status{lineage="mx.example.org"} 2',
    f'certbot_dane_status{{lineage="{ODD_LABEL}"}} 1',
    *(f'certbot_dane_phase{{lineage="mx.example.org",phase="{p}"}} {int(p == "ready")}' for p in PHASES),
    *(f'certbot_dane_phase{{lineage="{ODD_LABEL}",phase="{p}"}} {int(p == "new")}' for p in PHASES),
    'certbot_dane_findings{lineage="mx.example.org",code="deployed-unmatched",severity="CRITICAL"} 1',
    'certbot_dane_findings{lineage="mx.example.org",code="dnssec-bogus",severity="CRITICAL"} 1',
    'certbot_dane_findings{lineage="mx.example.org",code="expires-soon",severity="WARNING"} 1',
    'certbot_dane_findings{lineage="mx.example.org",code="server-lags",severity="WARNING"} 2',
    f'certbot_dane_findings{{lineage="{ODD_LABEL}",code="nothing-deployed",severity="WARNING"}} 1',
    'certbot_dane_deploy_lag_seconds{lineage="mx.example.org"} 400',
    f'certbot_dane_deploy_lag_seconds{{lineage="{ODD_LABEL}"}} 0',
    'certbot_dane_safe_at_timestamp_seconds{lineage="mx.example.org"} 1899999600',
    'certbot_dane_pending_steps{lineage="mx.example.org"} 1',
    f'certbot_dane_pending_steps{{lineage="{ODD_LABEL}"}} 0',
    'certbot_dane_certificate_days_left{lineage="mx.example.org",certificate="deployed"} 10',
    'certbot_dane_certificate_days_left{lineage="mx.example.org",certificate="staged"} 90',
    'certbot_dane_certificate_not_after_timestamp_seconds{lineage="mx.example.org",certificate="deployed"} 1900864000',
    'certbot_dane_certificate_not_after_timestamp_seconds{lineage="mx.example.org",certificate="staged"} 1907776000',
    f"certbot_dane_tlsa_records{{{MX_NAME_P}}} 2",
    f"certbot_dane_tlsa_records{{{MX_NAME_S}}} 2",
    f"certbot_dane_tlsa_records{{{ODD_NAME}}} 0",
    f"certbot_dane_tlsa_matches_deployed{{{MX_NAME_P}}} 1",
    f"certbot_dane_tlsa_matches_deployed{{{MX_NAME_S}}} 0",
    f"certbot_dane_tlsa_matches_deployed{{{ODD_NAME}}} 0",
    f"certbot_dane_tlsa_stale_records{{{MX_NAME_P}}} 0",
    f"certbot_dane_tlsa_stale_records{{{MX_NAME_S}}} 1",
    f"certbot_dane_tlsa_stale_records{{{ODD_NAME}}} 0",
    f"certbot_dane_tlsa_ttl_seconds{{{MX_NAME_P}}} 60",
    f"certbot_dane_tlsa_ttl_seconds{{{MX_NAME_S}}} 30",
    f"certbot_dane_tlsa_dnssec_valid{{{MX_NAME_P}}} 1",
    f"certbot_dane_tlsa_dnssec_valid{{{MX_NAME_S}}} 0",
    f"certbot_dane_tlsa_dnssec_valid{{{ODD_NAME}}} 1",
    f"certbot_dane_tlsa_rrsig_expiry_timestamp_seconds{{{MX_NAME_P}}} 1900432000",
    'certbot_dane_soa_serial{lineage="mx.example.org",zone="example.org.",server="127.0.0.1:53"} 7',
    'certbot_dane_soa_serial{lineage="mx.example.org",zone="example.org.",server="127.0.0.2:53"} 6',
    f'certbot_dane_sender_secure{{lineage="mx.example.org",name="{NAME}",resolver="{RESOLVER}"}} 1',
    f'certbot_dane_sender_secure{{lineage="mx.example.org",name="_465._tcp.mx.example.org.",resolver="{RESOLVER}"}} 0',
    f'certbot_dane_sender_matches_deployed{{lineage="mx.example.org",name="{NAME}",resolver="{RESOLVER}"}} 1',
    'certbot_dane_sender_matches_deployed{lineage="mx.example.org",name="_465._tcp.mx.example.org.",'
    f'resolver="{RESOLVER}"}} 0',
    f'certbot_dane_endpoint_status{{lineage="mx.example.org",endpoint="{SMTP}",address="127.0.0.1"}} 0',
    f'certbot_dane_endpoint_status{{lineage="mx.example.org",endpoint="{SMTP}",address="127.0.0.2"}} 2',
    f'certbot_dane_endpoint_matched{{lineage="mx.example.org",endpoint="{SMTP}",address="127.0.0.1"}} 1',
    f'certbot_dane_endpoint_matched{{lineage="mx.example.org",endpoint="{SMTP}",address="127.0.0.2"}} 0',
]


def test_prometheus_exposition_has_every_metric_line_with_escaped_labels():
    text = monitorformat.prometheus(REPORT)
    samples = [line for line in text.splitlines() if not line.startswith("#")]
    assert samples == EXPECTED_SAMPLES
    families = [line.split()[2] for line in text.splitlines() if line.startswith("# TYPE")]
    assert families == list(dict.fromkeys(s.split("{")[0].split()[0] for s in EXPECTED_SAMPLES))
    assert all(line.endswith(" gauge") for line in text.splitlines() if line.startswith("# TYPE"))
    for family in families:  # HELP, then TYPE, then the samples: the order the text format asks for
        help_at = text.splitlines().index(next(x for x in text.splitlines() if x.startswith(f"# HELP {family} ")))
        assert text.splitlines()[help_at + 1] == f"# TYPE {family} gauge"


def test_prometheus_exposition_parses_to_the_same_values_and_label_values():
    parsed = {(s.name, tuple(sorted(s.labels.items()))): s.value
              for family in text_string_to_metric_families(monitorformat.prometheus(REPORT) + "\n")
              for s in family.samples}
    assert len(parsed) == len(EXPECTED_SAMPLES)
    assert parsed[("certbot_dane_status", (("lineage", ODD),))] == 1  # escapes undone: the odd name comes back
    assert parsed[("certbot_dane_deploy_lag_seconds", (("lineage", "mx.example.org"),))] == 400
    assert parsed[("certbot_dane_tlsa_matches_deployed",
                   (("lineage", "mx.example.org"), ("name", NAME), ("server", "127.0.0.2:53")))] == 0


def test_prometheus_when_the_check_could_not_run_is_valid_and_says_up_0():
    text = monitorformat.prometheus_unknown(NOW)
    assert text.splitlines() == [
        "# HELP certbot_dane_up 1 if the check could run; 0 if it could not (bad configuration, an unreadable "
        "state file, a DNS server that does not answer: see the command's stderr)",
        "# TYPE certbot_dane_up gauge",
        "certbot_dane_up 0",
        "# HELP certbot_dane_last_check_timestamp_seconds When the check ran, Unix time",
        "# TYPE certbot_dane_last_check_timestamp_seconds gauge",
        "certbot_dane_last_check_timestamp_seconds 1900000000",
    ]
    assert [(f.name, [s.value for s in f.samples]) for f in text_string_to_metric_families(text + "\n")] == [
        ("certbot_dane_up", [0]), ("certbot_dane_last_check_timestamp_seconds", [NOW])]


def test_an_empty_report_is_up_with_no_lineage_metric():
    text = monitorformat.prometheus(Report(NOW, ()))
    assert [line for line in text.splitlines() if not line.startswith("#")] == [
        "certbot_dane_up 1", "certbot_dane_last_check_timestamp_seconds 1900000000"]


# -- Nagios ---------------------------------------------------------------------------------------
def test_perfdata_over_all_lineages_then_per_lineage():
    text = monitorformat.perfdata(REPORT)
    assert text == ("days_left=10;14:;0: lag_s=400s;300;;0 'mx.example.org_days_left'=10;14:;0: "
                    "'mx.example.org_lag_s'=400s;300;;0 'x\"y\\z''_w_v_days_left'=U;14:;0: "
                    "'x\"y\\z''_w_v_lag_s'=0s;300;;0")
    parsed = parse_perfdata(text)
    assert parsed["days_left"] == ("10", "", ["14:", "0:"])
    assert parsed["lag_s"] == ("400", "s", ["300", "", "0"])
    assert parsed["mx.example.org_days_left"] == ("10", "", ["14:", "0:"])
    assert parsed["x\"y\\z'_w_v_days_left"][0] == "U"
    assert parsed["x\"y\\z'_w_v_lag_s"] == ("0", "s", ["300", "", "0"])


def test_perfdata_of_a_steady_lineage_has_no_lag_and_fractional_days():
    steady = LineageReport("a", "steady", "", None, cert(OLD, 1826.456), None, (), (), "valid", ())
    assert monitorformat.perfdata(Report(NOW, (steady,))) == \
        "days_left=1826.46;14:;0: lag_s=0s;300;;0 'a_days_left'=1826.46;14:;0: 'a_lag_s'=0s;300;;0"


def test_nagios_output_puts_perfdata_on_the_first_line_only_and_no_stray_pipe():
    text = "DANE OK: 1 lineage(s) | odd\nmx  OK  steady\n  a | b"
    out = monitorformat.nagios(text, Report(NOW, ()))
    assert out == "DANE OK: 1 lineage(s) / odd | days_left=U;14:;0: lag_s=U;300;;0\nmx  OK  steady\n  a / b"


def test_perfdata_numbers_never_use_an_exponent():
    ready = LineageReport("a", "ready", "", NOW - 12_345_678.9, cert(OLD, -0.001), None, (), (), "valid", ())
    assert monitorformat.perfdata(Report(NOW, (ready,))).split()[:2] == ["days_left=0;14:;0:",
                                                                         "lag_s=12345678.9s;300;;0"]
