"""`certbot-dane reports` output: the text people read and the versioned JSON document; pure."""

from __future__ import annotations

from typing import Any

from certbot_dane.assessment import iso
from certbot_dane.rollovers import Window
from certbot_dane.tlsrptsummary import Failure, Summary, describe, period

SCHEMA_VERSION = 1


def _types(counts: tuple[tuple[str, int], ...]) -> str:
    return ", ".join(f"{name} {count}" for name, count in counts)


def _window(window: Window) -> dict[str, Any]:
    def at(moment: float | None) -> str | None:
        return iso(moment) if moment is not None else None
    return {"lineage": window.lineage, "hosts": list(window.hosts), "certificate": window.certificate,
            "staged": at(window.staged), "deployed": at(window.deployed), "retired": at(window.retired),
            "forced": window.forced, "in_progress": window.waiting}


def _failure_line(f: Failure) -> str:
    during = "; ".join(f"during the rollover of {w.lineage} ({describe(w)})" for w in f.rollovers) \
        or "no rollover in progress"
    reason = f" ({f.failure_reason_code})" if f.failure_reason_code else ""
    return (f"  {period(f.start, f.end)}  {f.organization}: {f.count} {f.result_type}{reason} at "
            f"{f.host or f.policy_domain + ' (host not named)'} ({f.policy_type} policy): {during}")


def to_text(summary: Summary) -> str:
    """The report for people: totals, one block per domain/policy/MX host, the DANE failures, the rollovers."""
    rows = summary.rows
    sessions = sum(r.successful + r.failed for r in rows)
    failed = sum(r.failed for r in rows)
    dane = sum(f.count for f in summary.failures)
    scope = f" for {summary.domain}" if summary.domain else ""
    lines = [f"TLSRPT{scope} {iso(summary.since)} .. {iso(summary.until)}: {summary.reports} report(s) from "
             f"{len(summary.organizations)} organisation(s), {sessions} session(s), {failed} failed, "
             f"{dane} DANE failure(s)"]
    if not summary.reports:
        lines.append("no reports in this period (import them with `certbot-dane reports import PATH`)")
    for row in rows:
        lines += ["", f"{row.policy_domain}  {row.policy_type}  mx {row.mx_host}",
                  f"  sessions  {row.successful} successful, {row.failed} failed ({row.reports} report(s))"]
        if row.failures:
            lines.append(f"  failures  {_types(row.failures)}")
        width = max(len(o.name) for o in row.organizations)
        for org in row.organizations:
            detail = f" ({_types(org.failures)})" if org.failures else ""
            lines.append(f"  {org.name:<{width}}  {org.sessions} session(s), {org.failed} failed{detail}")
    if summary.failures:
        lines += ["", "DANE failures (newest first)"] + [_failure_line(f) for f in summary.failures]
    if summary.rollovers:
        lines += ["", "Rollovers (sessions in the reports whose period covers each)"]
        for r in summary.rollovers:
            lines.append(f"  {r.window.lineage}  {describe(r.window)}: {r.sessions} session(s) from "
                         f"{len(r.organizations)} organisation(s) in {r.reports} report(s), "
                         f"{r.dane_failures} DANE failure(s)")
    return "\n".join(lines)


def to_json(summary: Summary) -> dict[str, Any]:
    """The JSON document (`schema_version` 1; README, TLSRPT)."""
    return {
        "schema_version": SCHEMA_VERSION, "since": iso(summary.since), "until": iso(summary.until),
        "domain": summary.domain, "reports": summary.reports, "organizations": list(summary.organizations),
        "policies": [{
            "policy_domain": r.policy_domain, "policy_type": r.policy_type, "mx_host": r.mx_host,
            "reports": r.reports, "successful_sessions": r.successful, "failed_sessions": r.failed,
            "failures": dict(r.failures),
            "organizations": [{"organization": o.name, "sessions": o.sessions, "failed_sessions": o.failed,
                               "failures": dict(o.failures)} for o in r.organizations],
        } for r in summary.rows],
        "dane_failures": [{
            "organization": f.organization, "report_id": f.report_id, "start": iso(f.start), "end": iso(f.end),
            "policy_domain": f.policy_domain, "policy_type": f.policy_type, "mx_host": f.host,
            "result_type": f.result_type, "failed_sessions": f.count, "failure_reason_code": f.failure_reason_code,
            "rollovers": [_window(w) for w in f.rollovers],
        } for f in summary.failures],
        "rollovers": [{**_window(r.window), "reports": r.reports, "sessions": r.sessions,
                       "organizations": list(r.organizations), "dane_failures": r.dane_failures}
                      for r in summary.rollovers],
    }
