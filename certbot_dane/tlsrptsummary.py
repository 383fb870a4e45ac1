"""What TLSRPT reports say over a period, lined up with certbot-dane's rollovers; pure functions of values."""

from __future__ import annotations

import datetime
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from certbot_dane.assessment import Finding, Severity, iso
from certbot_dane.rollovers import Window
from certbot_dane.tlsrpt import FailureDetail, Policy, Report

DAY = 86400.0
_DURATION_RE = re.compile(r"([0-9]+(?:\.[0-9]+)?)\s*([smhdw])", re.I)
_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": DAY, "w": 7 * DAY}


def parse_since(text: str, now: float) -> float:
    """`--since`: a duration back from now ('30d', '12h', '2w', '90m') or a UTC date or date-time; ValueError."""
    text = text.strip()
    found = _DURATION_RE.fullmatch(text)
    if found:
        return now - float(found.group(1)) * _UNITS[found.group(2).lower()]
    try:
        moment = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{text!r} is neither a duration (30d, 12h, 2w, 90m) nor a date (2026-11-01)") from None
    return (moment if moment.tzinfo else moment.replace(tzinfo=datetime.UTC)).timestamp()


def period(start: float, end: float) -> str:
    """A report's date-range for people: the day for a one-day report, else 'start..end'."""
    first = datetime.datetime.fromtimestamp(start, datetime.UTC)
    if first.time() == datetime.time(0) and DAY - 1 <= end - start <= DAY:
        return first.strftime("%Y-%m-%d")
    return f"{iso(start)}..{iso(end)}"


def _host(name: str) -> str:
    return name.lower().rstrip(".")


def host_matches(pattern: str, host: str) -> bool:
    """An MX host pattern of a report ('mx.example.org', '*.example.org': one label) against a host name."""
    pattern, host = _host(pattern), _host(host)
    if pattern.startswith("*."):
        return host.endswith(pattern[1:]) and host.count(".") == pattern.count(".")
    return pattern == host


def failure_host(policy: Policy, detail: FailureDetail) -> str | None:
    """The MX host a failure happened at: the one the report names, else the policy's only host (for DANE,
    the policy domain is the TLSA base domain: the MX host, RFC 8460 §3)."""
    if detail.receiving_mx_hostname:
        return detail.receiving_mx_hostname
    exact = [h for h in policy.mx_host if not h.startswith("*")]
    if len(exact) == 1 and len(policy.mx_host) == 1:
        return exact[0]
    return policy.policy_domain if policy.policy_type == "tlsa" and not policy.mx_host else None


def concerns(policy: Policy, host: str) -> bool:
    """Whether a policy's sessions may have gone to `host`: it names the host (MX pattern, DANE's policy domain,
    a failure's receiving host), or it is a policy of a domain above the host that names no MX host."""
    host = _host(host)
    if any(host_matches(p, host) for p in policy.mx_host) or any(
            d.receiving_mx_hostname == host for d in policy.failure_details):
        return True
    if policy.mx_host:
        return False
    domain = policy.policy_domain
    return host == domain or (policy.policy_type != "tlsa" and host.endswith("." + domain))


def _in_domain(policy: Policy, domain: str | None) -> bool:
    if domain is None:
        return True
    domain = _host(domain)
    return policy.policy_domain == domain or policy.policy_domain.endswith("." + domain) or any(
        h == domain or h.endswith("." + domain) for h in policy.mx_host)


@dataclass(frozen=True)
class Organization:
    """One sending organisation's sessions in a row."""

    name: str
    sessions: int
    failed: int
    failures: tuple[tuple[str, int], ...]  # (result type, failed sessions), most first


@dataclass(frozen=True)
class Row:
    """Sessions for one policy domain, policy type and MX host pattern, over the period."""

    policy_domain: str
    policy_type: str
    mx_host: str  # the pattern(s) as the reports name them, '-' when they name none
    reports: int
    successful: int
    failed: int
    failures: tuple[tuple[str, int], ...]  # (result type, failed sessions), most first
    organizations: tuple[Organization, ...]


@dataclass(frozen=True)
class Failure:
    """DANE-related failed sessions one report states, and the rollovers in progress during its period."""

    organization: str
    report_id: str
    start: float
    end: float
    policy_domain: str
    policy_type: str
    host: str | None
    result_type: str
    count: int
    failure_reason_code: str | None
    rollovers: tuple[Window, ...]


@dataclass(frozen=True)
class Rollover:
    """One rollover and what the reports covering it say about its hosts."""

    window: Window
    reports: int
    sessions: int
    organizations: tuple[str, ...]
    dane_failures: int


@dataclass(frozen=True)
class Summary:
    """Everything `certbot-dane reports` prints."""

    since: float
    until: float
    domain: str | None
    reports: int
    organizations: tuple[str, ...]
    rows: tuple[Row, ...]
    failures: tuple[Failure, ...]
    rollovers: tuple[Rollover, ...]


def in_period(reports: Iterable[Report], since: float, until: float) -> list[Report]:
    """The reports whose date-range shares a moment with [since, until]."""
    return [r for r in reports if r.end_datetime >= since and r.start_datetime <= until]


def aligned(start: float, end: float, host: str | None, domain: str, windows: Iterable[Window]) -> tuple[Window, ...]:
    """The rollovers in progress during [start, end] of the certificate `host` presents (host unknown: of any
    host in `domain`)."""
    def serves(window: Window) -> bool:
        if host is not None:
            return window.serves(host)
        return any(h == domain or h.endswith("." + domain) for h in window.hosts)
    return tuple(w for w in windows if serves(w) and w.overlaps(start, end))


def dane_failures(reports: Iterable[Report], windows: Sequence[Window], domain: str | None = None) -> list[Failure]:
    """Every DANE-related failure the reports state, newest first, each with the rollovers it falls in."""
    found = []
    for report in reports:
        for policy in report.policies:
            if not _in_domain(policy, domain):
                continue
            for detail in policy.failure_details:
                if not policy.dane(detail) or detail.failed_session_count == 0:
                    continue
                host = failure_host(policy, detail)
                found.append(Failure(report.organization_name, report.report_id, report.start_datetime,
                                     report.end_datetime, policy.policy_domain, policy.policy_type, host,
                                     detail.result_type, detail.failed_session_count, detail.failure_reason_code,
                                     aligned(report.start_datetime, report.end_datetime, host, policy.policy_domain,
                                             windows)))
    return sorted(found, key=lambda f: (-f.end, f.organization, f.host or "", f.result_type))


def _most(counts: Counter[str]) -> tuple[tuple[str, int], ...]:
    return tuple(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def rows(reports: Iterable[Report], domain: str | None = None) -> tuple[Row, ...]:
    """Session counts and failures per policy domain, policy type and MX host, by result type and organisation."""
    groups: dict[tuple[str, str, str], list[tuple[Report, Policy]]] = defaultdict(list)
    for report in reports:
        for policy in report.policies:
            if _in_domain(policy, domain):
                key = (policy.policy_domain, policy.policy_type, ", ".join(sorted(policy.mx_host)) or "-")
                groups[key].append((report, policy))
    found = []
    for (policy_domain, policy_type, mx_host), entries in sorted(groups.items()):
        by_type: Counter[str] = Counter()
        orgs: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        org_types: dict[str, Counter[str]] = defaultdict(Counter)
        for report, policy in entries:
            org = orgs[report.organization_name]
            org[0] += policy.total_successful_session_count + policy.total_failure_session_count
            org[1] += policy.total_failure_session_count
            for detail in policy.failure_details:
                by_type[detail.result_type] += detail.failed_session_count
                org_types[report.organization_name][detail.result_type] += detail.failed_session_count
        found.append(Row(
            policy_domain, policy_type, mx_host, len({r.key for r, _ in entries}),
            sum(p.total_successful_session_count for _, p in entries),
            sum(p.total_failure_session_count for _, p in entries), _most(by_type),
            tuple(Organization(name, sessions, failed, _most(org_types[name]))
                  for name, (sessions, failed) in sorted(orgs.items(), key=lambda kv: (-kv[1][0], kv[0])))))
    return tuple(found)


def rollovers(reports: Sequence[Report], windows: Iterable[Window],
              failures: Sequence[Failure]) -> tuple[Rollover, ...]:
    """Per rollover: the sessions to its hosts in the reports whose period covers it, from how many
    organisations, and how many of them failed for DANE reasons."""
    found = []
    for window in windows:
        covering = [r for r in reports if window.overlaps(r.start_datetime, r.end_datetime)]
        sessions, orgs = 0, set()
        for report in covering:
            for policy in report.policies:
                if any(concerns(policy, h) for h in window.hosts):
                    sessions += policy.total_successful_session_count + policy.total_failure_session_count
                    orgs.add(report.organization_name)
        failed = sum(f.count for f in failures if window in f.rollovers)
        found.append(Rollover(window, len(covering), sessions, tuple(sorted(orgs)), failed))
    return tuple(found)


def summarise(reports: Iterable[Report], windows: Iterable[Window], since: float, until: float,
              domain: str | None = None) -> Summary:
    """`certbot-dane reports`: the reports of [since, until] (in `domain` and below), lined up with the rollovers."""
    chosen = [r for r in in_period(reports, since, until) if any(_in_domain(p, domain) for p in r.policies)]
    shown = [w for w in windows if w.overlaps(since, until)
             and (domain is None or any(h == domain or h.endswith("." + domain) for h in w.hosts))]
    failures = dane_failures(chosen, shown, domain)
    return Summary(since, until, domain, len({r.key for r in chosen}),
                   tuple(sorted({r.organization_name for r in chosen})), rows(chosen, domain), tuple(failures),
                   rollovers(chosen, shown, failures))


def findings(reports: Iterable[Report], windows: Sequence[Window], hosts: Iterable[str],
             since: float) -> tuple[Finding, ...]:
    """`status` findings for one lineage: DANE failures reported since `since` at one of its MX `hosts`.

    WARNING for each organisation, host and result type; CRITICAL when they fall in a rollover of the
    certificate that host presents (the rollover may have cost deliveries).
    """
    mine = {_host(h) for h in hosts}
    groups: dict[tuple[bool, str, str, str], list[Failure]] = defaultdict(list)
    for failure in dane_failures([r for r in reports if r.end_datetime >= since], windows):
        if failure.host in mine:
            assert failure.host is not None
            groups[(bool(failure.rollovers), failure.organization, failure.host, failure.result_type)].append(failure)
    found = []
    for (during, org, host, result), group in sorted(groups.items(), key=lambda kv: (not kv[0][0], kv[0][1:])):
        count = sum(f.count for f in group)
        span = period(min(f.start for f in group), max(f.end for f in group))
        text = (f"TLSRPT: {org} reported {count} {result} failure(s) at {host} over {span} "
                f"({len(group)} report(s))")
        if during:
            window = max((w for f in group for w in f.rollovers), key=lambda w: w.start)
            found.append(Finding(Severity.CRITICAL, "tlsrpt-rollover-failure",
                                 f"{text}, during the rollover of {window.lineage} ({describe(window)}): senders "
                                 "could not validate the certificate presented, mail was deferred"))
        else:
            found.append(Finding(Severity.WARNING, "tlsrpt-dane-failure",
                                 f"{text}, outside any rollover: check the TLSA records and the certificate served"))
    return tuple(found)


def describe(window: Window) -> str:
    """A rollover in one phrase: 'certificate ab12cd34.. staged ..., deployed ... (forced), retired ...'."""
    forced = " before the gate (--force-before-gate)" if window.forced else ""
    steps = [f"{label} {iso(at)}" for label, at in (("staged", window.staged), ("deployed", window.deployed),
                                                    ("retired", window.retired)) if at is not None]
    steps = [step + forced if step.startswith("deployed") else step for step in steps]
    if window.waiting:
        steps.append("in progress")
    return f"certificate {window.certificate[:16]}.. " + ", ".join(steps)
