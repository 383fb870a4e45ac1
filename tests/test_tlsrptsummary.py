"""What the reports say over a period, per domain/policy/MX host and per rollover; status findings from it."""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest

from certbot_dane import tlsrpt
from certbot_dane.assessment import Severity
from certbot_dane.rollovers import GRACE, Window
from certbot_dane.tlsrpt import FailureDetail, Policy, Report
from certbot_dane.tlsrptsummary import (
    DAY,
    concerns,
    failure_host,
    findings,
    host_matches,
    parse_since,
    period,
    rows,
    summarise,
)

DATA = Path(__file__).parent / "data" / "tlsrpt"
NOON = datetime.datetime(2026, 11, 22, 12, tzinfo=datetime.UTC).timestamp()
DAY_START = datetime.datetime(2026, 11, 22, tzinfo=datetime.UTC).timestamp()
MX = ("mx.example.org",)


def sample(name: str) -> Report:
    return tlsrpt.parse((DATA / f"{name}.json").read_bytes())


MICROSOFT, GOOGLE = sample("microsoft"), sample("google")
ROLLOVER = Window("mx.example.org", MX, "ab" * 32, NOON, NOON + 600, NOON + 660)


def report(org: str, start: float, *policies: Policy) -> Report:
    return Report(org, f"{org}-{start}", "", start, start + DAY - 1, policies)


def tlsa(host: str, ok: int, *failures: FailureDetail) -> Policy:
    return Policy("tlsa", "example.org", ("3 1 1 ab",), (host,), ok, sum(f.failed_session_count for f in failures),
                  failures)


@pytest.mark.parametrize("text, expected", [
    ("30d", NOON - 30 * DAY), ("12h", NOON - 12 * 3600), ("2w", NOON - 14 * DAY), ("90m", NOON - 5400),
    ("1.5d", NOON - 1.5 * DAY), ("2026-11-01", datetime.datetime(2026, 11, 1, tzinfo=datetime.UTC).timestamp()),
    ("2026-11-01T06:00:00+02:00", datetime.datetime(2026, 11, 1, 4, tzinfo=datetime.UTC).timestamp()),
])
def test_since_is_a_duration_back_from_now_or_a_date(text: str, expected: float) -> None:
    assert parse_since(text, NOON) == expected


@pytest.mark.parametrize("text", ["", "30", "d", "-3d", "last week", "2026-13-01"])
def test_a_since_that_is_neither_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="neither a duration"):
        parse_since(text, NOON)


def test_a_one_day_report_period_reads_as_its_day() -> None:
    assert period(DAY_START, DAY_START + DAY - 1) == "2026-11-22"
    assert period(DAY_START, DAY_START + DAY) == "2026-11-22"
    assert period(NOON, NOON + 3600) == "2026-11-22T12:00:00Z..2026-11-22T13:00:00Z"


@pytest.mark.parametrize("pattern, host, matches", [
    ("mx.example.org", "MX.example.org.", True), ("*.example.org", "mx.example.org", True),
    ("*.example.org", "a.mx.example.org", False), ("*.example.org", "example.org", False),
    ("mx.example.org", "mx2.example.org", False),
])
def test_mx_host_patterns_cover_one_label(pattern: str, host: str, matches: bool) -> None:
    assert host_matches(pattern, host) is matches


def test_the_host_of_a_failure_is_the_one_the_report_names_else_the_policys() -> None:
    named = FailureDetail("tlsa-invalid", 1, receiving_mx_hostname="mx2.example.org")
    bare = FailureDetail("tlsa-invalid", 1)
    assert failure_host(tlsa("mx.example.org", 0, named), named) == "mx2.example.org"
    assert failure_host(tlsa("mx.example.org", 0, bare), bare) == "mx.example.org"
    assert failure_host(tlsa("*.example.org", 0, bare), bare) is None
    dane_base = Policy("tlsa", "mx3.example.org", (), (), 0, 1, (bare,))
    assert failure_host(dane_base, bare) == "mx3.example.org", "RFC 8460 §3: for DANE, the TLSA base domain"
    assert failure_host(Policy("sts", "example.org", (), (), 0, 1, (bare,)), bare) is None


def test_which_policies_concern_a_host() -> None:
    assert concerns(MICROSOFT.policies[0], "mx.example.org") and not concerns(MICROSOFT.policies[1], "mx.example.org")
    assert concerns(GOOGLE.policies[0], "mx.example.org"), "an MTA-STS policy of the domain above, no MX named"
    assert not concerns(GOOGLE.policies[1], "mx.example.org"), "lists.example.org is not above mx.example.org"
    assert not concerns(Policy("tlsa", "mx2.example.org", (), (), 1, 0), "mx.example.org")


def test_rows_count_sessions_and_failures_by_result_type_and_organisation() -> None:
    again = report("Microsoft Corporation", DAY_START + DAY,
                   tlsa("mx.example.org", 8, FailureDetail("tlsa-invalid", 2)))
    found = {(r.policy_domain, r.policy_type, r.mx_host): r for r in rows([MICROSOFT, GOOGLE, again])}
    assert set(found) == {("example.org", "tlsa", "mx.example.org"), ("example.org", "tlsa", "mx2.example.org"),
                          ("example.org", "sts", "-"), ("lists.example.org", "no-policy-found", "-")}
    mx = found[("example.org", "tlsa", "mx.example.org")]
    assert (mx.reports, mx.successful, mx.failed) == (2, 420, 5)
    assert mx.failures == (("tlsa-invalid", 4), ("dnssec-invalid", 1))
    (microsoft,) = mx.organizations
    assert (microsoft.name, microsoft.sessions, microsoft.failed) == ("Microsoft Corporation", 425, 5)
    assert found[("example.org", "sts", "-")].failures == (("certificate-host-mismatch", 1),)
    assert [r.policy_domain for r in rows([MICROSOFT, GOOGLE], domain="lists.example.org")] == ["lists.example.org"]


def test_each_dane_failure_is_lined_up_with_the_rollover_of_its_hosts_certificate() -> None:
    other = Window("mx2", ("mx2.example.org",), "cd" * 32, NOON, NOON + 60, NOON + 70)
    later = Window("mx.example.org", MX, "ef" * 32, NOON + 5 * DAY, NOON + 5 * DAY + 60)
    summary = summarise([MICROSOFT, GOOGLE], [ROLLOVER, other, later], DAY_START - DAY, DAY_START + 2 * DAY)
    assert summary.reports == 2 and summary.organizations == ("Google Inc.", "Microsoft Corporation")
    assert [(f.organization, f.result_type, f.host, f.count, f.rollovers) for f in summary.failures] == [
        ("Microsoft Corporation", "dnssec-invalid", "mx.example.org", 1, (ROLLOVER,)),
        ("Microsoft Corporation", "tlsa-invalid", "mx.example.org", 2, (ROLLOVER,)),
    ], "Google's failure is MTA-STS's, not DANE's; the later rollover is outside the period"
    by_window = {r.window.lineage: r for r in summary.rollovers}
    mx = by_window["mx.example.org"]
    assert (mx.reports, mx.sessions, mx.organizations, mx.dane_failures) == (
        2, 415 + 1209, ("Google Inc.", "Microsoft Corporation"), 3)
    mx2 = by_window["mx2"]
    assert (mx2.sessions, mx2.dane_failures) == (17 + 1209, 0), "N sessions from M organisations, 0 DANE failures"


def test_a_failure_outside_every_rollover_lines_up_with_none() -> None:
    long_after = Window("mx.example.org", MX, "ab" * 32, NOON - 9 * DAY, NOON - 9 * DAY + 60, NOON - 9 * DAY + 61)
    summary = summarise([MICROSOFT], [long_after], DAY_START - 10 * DAY, DAY_START + DAY)
    assert all(f.rollovers == () for f in summary.failures)
    assert [r.sessions for r in summary.rollovers] == [0], "no report covers it"


def test_a_rollover_still_waiting_for_its_gate_is_in_progress_for_every_later_report() -> None:
    waiting = Window("mx.example.org", MX, "ab" * 32, DAY_START - 3 * DAY, waiting=True)
    summary = summarise([MICROSOFT], [waiting], DAY_START - 5 * DAY, DAY_START + DAY)
    assert all(f.rollovers == (waiting,) for f in summary.failures)


def test_status_warns_of_dane_failures_at_its_hosts_and_is_critical_during_a_rollover() -> None:
    found = findings([MICROSOFT, GOOGLE], [ROLLOVER], MX, since=DAY_START - DAY)
    assert [(f.severity, f.code) for f in found] == [(Severity.CRITICAL, "tlsrpt-rollover-failure")] * 2
    text = found[1].text
    for part in ("Microsoft Corporation", "2 tlsa-invalid failure(s)", "mx.example.org", "2026-11-22",
                 "during the rollover of mx.example.org", "staged 2026-11-22T12:00:00Z"):
        assert part in text, text
    quiet = findings([MICROSOFT], [], MX, since=DAY_START - DAY)
    assert {(f.severity, f.code) for f in quiet} == {(Severity.WARNING, "tlsrpt-dane-failure")}
    assert "outside any rollover" in quiet[0].text


def test_status_ignores_other_hosts_mta_sts_failures_and_old_reports() -> None:
    assert findings([MICROSOFT], [ROLLOVER], ("mx2.example.org",), since=0) == ()
    assert findings([GOOGLE], [], ("mx2.example.org",), since=0) == (), "certificate-host-mismatch under sts"
    assert findings([MICROSOFT], [ROLLOVER], MX, since=DAY_START + DAY) == (), "ended before the status window"


def test_one_finding_per_organisation_host_and_result_type_over_several_reports() -> None:
    reports = [report("Example Mail", DAY_START + i * DAY, tlsa("mx.example.org", 5, FailureDetail("tlsa-invalid", 1)))
               for i in range(3)]
    (found,) = findings(reports, [], MX, since=0)
    assert "Example Mail reported 3 tlsa-invalid failure(s) at mx.example.org over " \
           "2026-11-22T00:00:00Z..2026-11-24T23:59:59Z (3 report(s))" in found.text


def test_a_rollover_counts_for_an_hour_after_its_last_step() -> None:
    assert ROLLOVER.retired is not None
    failed = tlsa("mx.example.org", 0, FailureDetail("tlsa-invalid", 1))
    just_after = report("Late", ROLLOVER.retired + GRACE - 10, failed)
    assert summarise([just_after], [ROLLOVER], 0, 1e10).failures[0].rollovers == (ROLLOVER,)
    too_late = report("Late", ROLLOVER.retired + GRACE + 10, failed)
    assert summarise([too_late], [ROLLOVER], 0, 1e10).failures[0].rollovers == ()
