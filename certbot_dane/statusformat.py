"""Status rendering: the JSON document (schema in certbot_dane.status) and the human table."""

from __future__ import annotations

from typing import Any

from certbot_dane import mtastsreport
from certbot_dane.assessment import PHASES, SCHEMA_VERSION, CertView, Report, Severity, iso, short
from certbot_dane.dnssec import Verdict


def _verdict(v: Verdict) -> dict[str, str]:
    return {"status": v.status, "reason": v.reason}


def _cert(view: CertView | None, now: float) -> dict[str, Any] | None:
    if view is None:
        return None
    days = (view.not_after.timestamp() - now) / 86400
    return {"fingerprint": view.fingerprint, "subject": view.subject, "serial": view.serial,
            "not_after": iso(view.not_after), "days_left": round(days, 2), "expired": days <= 0,
            "records": list(view.records)}


def to_json(rep: Report) -> dict[str, Any]:
    """The documented JSON document (schema_version 1; see docs/status-json.md)."""
    return {
        "schema_version": SCHEMA_VERSION, "status": rep.status.name, "checked_at": iso(rep.checked_at),
        "error": None,
        "lineages": [{
            "lineage": lr.lineage, "status": lr.status.name, "phase": lr.phase, "reason": lr.reason,
            "safe_at": iso(lr.safe_at) if lr.safe_at is not None else None, "dnssec": lr.dnssec,
            "deployed": _cert(lr.deployed, rep.checked_at), "staged": _cert(lr.staged, rep.checked_at),
            "names": [{"name": n.name, "zone": n.zone, "servers": [
                {"server": s.server, "rcode": s.rcode, "ttl": s.ttl, "soa_serial": s.soa_serial,
                 "dnssec": _verdict(s.dnssec),
                 "rrsig_expires": iso(s.rrsig_expires) if s.rrsig_expires is not None else None,
                 "records": [{"value": r.value, "match": r.match, "accepts_deployed": r.accepts_deployed}
                             for r in s.records]} for s in n.servers]} for n in lr.names],
            "zones": [{"zone": z.zone, "signed": z.signed, "servers": [
                {"server": s.server, "rcode": s.rcode, "soa_serial": s.soa_serial, "dnssec": _verdict(s.dnssec)}
                for s in z.servers]} for z in lr.zones],
            "findings": [{"severity": f.severity.name, "code": f.code, "text": f.text} for f in lr.findings],
            "pending": list(lr.pending),
            "sender": [{"resolver": v.resolver, "name": v.asked, "rcode": v.rcode, "secure": v.secure,
                        "records": sorted(v.values), "error": v.error} for v in lr.sender],
            "advice": list(lr.advice),
            "endpoints": [{"endpoint": e.target, "address": e.address, "status": e.status.name,
                           "fingerprint": e.fingerprint, "matched": e.matched, "text": e.text} for e in lr.endpoints],
        } for lr in rep.lineages],
        "mta_sts": [mtastsreport.to_json(d, rep.checked_at) for d in rep.mta_sts],
    }


def unknown_json(error: str, now: float) -> dict[str, Any]:
    """The JSON document when the check could not run."""
    return {"schema_version": SCHEMA_VERSION, "status": Severity.UNKNOWN.name, "checked_at": iso(now),
            "error": error, "lineages": [], "mta_sts": []}


_COLOURS = {"CRITICAL": "1;31", "WARNING": "33", "OK": "32", "UNKNOWN": "35", "deployed": "32", "staged": "36",
            "previous": "36", "stale": "33", "foreign": "2"}


def summary(rep: Report) -> str:
    """The Nagios status line: state, counts, and the most severe finding."""
    sts = [f for d in rep.mta_sts for f in d.findings]  # MTA-STS findings name their domain
    findings = sorted((*(f for lr in rep.lineages for f in lr.findings), *sts), key=lambda f: -f.severity)
    critical, warnings = (sum(f.severity == s for f in findings) for s in (Severity.CRITICAL, Severity.WARNING))
    counts = f"{critical} critical, {warnings} warning{'' if warnings == 1 else 's'}"
    first = next((f"{lr.lineage}: {f.text}" for lr in rep.lineages for f in lr.findings
                  if f.severity == rep.status), next((f"mta-sts {f.text}" for f in sts if f.severity == rep.status),
                                                     "every certificate matches its published records"))
    domains = f", {len(rep.mta_sts)} MTA-STS domain(s)" if rep.mta_sts else ""
    return f"DANE {rep.status.name}: {len(rep.lineages)} lineage(s){domains}, {counts}; {first}"


def to_text(rep: Report, colour: bool = False) -> str:
    """Human output: a status line, then one compact block per lineage."""
    def c(word: str, key: str | None = None) -> str:
        code = _COLOURS.get(key or word)
        return f"\033[{code}m{word}\033[0m" if colour and code else word

    lines = [summary(rep).replace(rep.status.name, c(rep.status.name), 1)]
    for lr in rep.lineages:
        when = f" (safe at {iso(lr.safe_at)})" if lr.safe_at is not None and lr.phase != "steady" else ""
        lines += ["", f"{lr.lineage}  {c(lr.status.name)}  {PHASES[lr.phase]}{when}: {lr.reason}"]
        for label, view in (("deployed", lr.deployed), ("staged", lr.staged)):
            if view is None:
                lines.append(f"  {label:<9} -")
                continue
            days = (view.not_after.timestamp() - rep.checked_at) / 86400
            lines.append(f"  {label:<9} {view.subject}  serial {view.serial[:12]}  not after "
                         f"{iso(view.not_after)} ({days:.0f} d)  {', '.join(short(r) for r in view.records)}")
        zones = ", ".join(f"{z.zone} {'signed' if z.signed else 'unsigned'}" for z in lr.zones)
        lines.append(f"  {'dnssec':<9} {lr.dnssec} ({zones})")
        for name in lr.names:
            lines.append(f"  {name.name}")
            width = max(len(s.server) for s in name.servers) if name.servers else 0
            for s in name.servers:
                served = ", ".join(f"{short(r.value)} {c(r.match)}" for r in s.records) or s.rcode.lower()
                lines.append(f"    {s.server:<{width}}  soa {s.soa_serial if s.soa_serial is not None else '-'}  "
                             f"ttl {s.ttl if s.ttl is not None else '-'}  {served}")
        for v in lr.sender:
            seen = (", ".join(short(r) for r in sorted(v.values)) or "no records") if v.rcode == "NOERROR" else \
                (v.rcode or f"no answer: {v.error}")
            lines.append(f"  {'sender':<9} {v.asked} via {v.resolver}: {seen}"
                         + (" (validated)" if v.secure else " (NOT validated)" if v.rcode else ""))
        lines += [f"  {'endpoint':<9} {c(e.status.name)} {e.text}" for e in lr.endpoints]
        lines += [f"  {c(f'{f.severity.name:<8}', f.severity.name)} {f.text}" for f in lr.findings]
        lines += [f"  {'advice':<9} {text}" for text in lr.advice]
        lines += [f"  {'next run' if i == 0 else '':<9} {step}" for i, step in enumerate(lr.pending)]
    lines += [line for d in rep.mta_sts for line in mtastsreport.to_text(d, rep.checked_at)]
    return "\n".join(lines)
