"""What `status` says about each MTA-STS domain: pure findings from what was observed, and their JSON and text.

The observations (`Observation`) come from `mtasts_io.observe`; `assess` turns one into a `DomainReport`
(same Nagios severities as the lineages'); `to_json` and `to_text` render the `mta_sts` section of the
status document (docs/status-json.md) and of the human output.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Any

from cryptography import x509

from certbot_dane import compat, mtasts
from certbot_dane.assessment import EXPIRY_WARNING_DAYS, Finding, Severity, iso
from certbot_dane.config import MtaStsSettings
from certbot_dane.mtasts import Policy
from certbot_dane.records import Answer


@dataclass(frozen=True)
class PolicyServed:
    """One address of `mta-sts.<domain>`: the policy it served (None: none, `error` says why) and its certificate."""

    address: str
    text: str | None
    error: str | None = None
    not_after: datetime.datetime | None = None


@dataclass(frozen=True)
class MxSeen:
    """One address of one MX host over SMTP STARTTLS, as an MTA-STS sender checks it (RFC 8461 §4.2).

    `valid`: the chain validated against the CA bundle for the host name; `leaf`: the certificate
    presented (DER; also when it did not validate), None when there was no handshake.
    """

    host: str
    address: str
    valid: bool
    leaf: bytes | None = None
    error: str | None = None


@dataclass(frozen=True)
class Observation:
    """Everything `status` gathered for one configured domain."""

    settings: MtaStsSettings
    mx: tuple[str, ...] | None              # the MX RRset's hosts (None: unknown, `dns_error` says why)
    served: tuple[PolicyServed, ...] = ()
    sts: Answer | None = None               # `_mta-sts` TXT on the primary
    tlsrpt: Answer | None = None            # `_smtp._tls` TXT on the primary
    mx_seen: tuple[MxSeen, ...] = ()
    dns_error: str | None = None
    host_error: str | None = None           # why the policy host has no address


@dataclass(frozen=True)
class DomainReport:
    """Everything status says about one domain; `to_json` is its documented form."""

    domain: str
    mode: str
    intended: Policy | None
    observation: Observation
    policy: Policy | None                   # what senders get: the served policy (else the intended one)
    findings: tuple[Finding, ...]

    @property
    def status(self) -> Severity:
        """The most severe finding (OK when there is none)."""
        return max((f.severity for f in self.findings), default=Severity.OK)


def _policy(text: str | None) -> Policy | None:
    try:
        return mtasts.parse_policy(text) if text is not None else None
    except ValueError:
        return None


def _cert(der: bytes | None) -> x509.Certificate | None:
    try:
        return x509.load_der_x509_certificate(der) if der else None
    except ValueError:
        return None


def assess(seen: Observation, now: float) -> DomainReport:
    """The findings for one domain, most severe first (pure)."""
    settings, found = seen.settings, []
    enforce = Severity.CRITICAL if settings.mode == "enforce" else Severity.WARNING

    def add(severity: Severity, code: str, text: str) -> None:
        found.append(Finding(severity, code, f"{settings.domain}: {text}"))

    try:
        intended = mtasts.intended(settings, seen.mx)
    except ValueError as err:
        intended = None
        add(Severity.WARNING, "policy-unknown", str(err))
    if seen.dns_error:
        add(Severity.WARNING, "dns-error", seen.dns_error)
    if seen.host_error:
        add(Severity.CRITICAL, "policy-unreachable", seen.host_error)
    texts = {s.text for s in seen.served if s.text is not None}
    served_policy = _policy(next(iter(texts))) if len(texts) == 1 else None
    for s in seen.served:
        if s.text is None:
            add(Severity.CRITICAL, "policy-unreachable", f"{s.error}: senders cannot fetch the policy")
        elif _policy(s.text) is None:
            add(Severity.CRITICAL, "policy-invalid", f"{mtasts.policy_url(settings.domain)} at {s.address} serves "
                                                     "a policy senders reject")
        elif intended is not None and s.text != intended.text():
            add(Severity.WARNING, "policy-pending", f"{s.address} serves policy id {mtasts.policy_id(s.text)}, not "
                                                    f"the intended {intended.id}: the next deploy run writes it")
        if s.not_after is not None:
            days = (s.not_after.timestamp() - now) / 86400
            if 0 < days <= EXPIRY_WARNING_DAYS:
                add(Severity.WARNING, "https-expires-soon", f"the certificate of {mtasts.policy_host(settings.domain)} "
                                                            f"at {s.address} expires in {days:.1f} days")
    if seen.sts is not None:
        records = mtasts.versioned(seen.sts, "STSv1")
        txt_id = mtasts.served_id(seen.sts)
        if len(records) > 1:
            add(Severity.CRITICAL, "sts-records-multiple", f"{len(records)} v=STSv1 records at "
                f"{mtasts.sts_name(settings.domain)}: senders ignore the policy")
        elif not records:
            add(Severity.WARNING, "sts-record-missing", f"no v=STSv1 record at {mtasts.sts_name(settings.domain)}: "
                                                        "senders do not look for the policy")
        elif len(texts) == 1 and txt_id != mtasts.policy_id(next(iter(texts))):
            if intended is not None and txt_id == intended.id:
                add(Severity.CRITICAL, "id-ahead", f"the TXT id {txt_id} is the intended policy's, but the web server "
                                                   "serves another: senders cache the old policy under the new id")
            else:
                add(Severity.WARNING, "id-stale", f"the TXT id {txt_id} is not the served policy's "
                    f"({mtasts.policy_id(next(iter(texts)))}): senders keep a cached policy until it changes")
    if settings.tlsrpt and seen.tlsrpt is not None:
        want = mtasts.tlsrpt_record_text(settings.tlsrpt)
        have = [mtasts.txt_text(v) for v in mtasts.versioned(seen.tlsrpt, "TLSRPTv1")]
        if have != [want]:
            add(Severity.WARNING, "tlsrpt-differs", f"{mtasts.tlsrpt_name(settings.domain)} holds "
                                                    f"{', '.join(have) or 'no TLSRPT record'}, not {want}")
    policy = served_policy or intended
    if policy is not None and policy.mode != "none":
        for host in seen.mx or ():
            if not policy.matches(host):
                add(enforce, "mx-unmatched", f"MX host {host} is not matched by the policy's mx "
                    f"({', '.join(policy.mx)}): senders that enforce it refuse the host")
        for m in seen.mx_seen:
            cert = _cert(m.leaf)
            if m.leaf is None:
                add(Severity.WARNING, "mx-unreachable", f"{m.error}")
            elif not m.valid:
                add(enforce, "mx-certificate-invalid", f"{m.error}")
            elif cert is not None:
                days = (compat.not_valid_after(cert).timestamp() - now) / 86400
                if days <= EXPIRY_WARNING_DAYS:
                    add(Severity.WARNING, "mx-expires-soon", f"the certificate of {m.host} at {m.address} expires "
                                                             f"in {days:.1f} days")
    found.sort(key=lambda f: -f.severity)
    return DomainReport(settings.domain, settings.mode, intended, seen, policy, tuple(found))


# -- rendering ---------------------------------------------------------------------------------------------
def _days(moment: datetime.datetime | None, now: float) -> float | None:
    return None if moment is None else round((moment.timestamp() - now) / 86400, 2)


def to_json(rep: DomainReport, now: float) -> dict[str, Any]:
    """One entry of the status document's `mta_sts` list (docs/status-json.md)."""
    seen, intended = rep.observation, rep.intended
    sts_values = sorted(mtasts.txt_text(v) for v in seen.sts.values) if seen.sts else []
    txt_id = mtasts.served_id(seen.sts) if seen.sts else None
    mx = []
    for host in seen.mx or ():
        endpoints = []
        for m in (m for m in seen.mx_seen if m.host == host):
            cert = _cert(m.leaf)
            endpoints.append({"address": m.address, "valid": m.valid, "error": m.error,
                              "names": list(_names(cert)), "not_after": iso(compat.not_valid_after(cert))
                              if cert else None,
                              "days_left": _days(compat.not_valid_after(cert), now) if cert else None})
        mx.append({"host": host, "matched": rep.policy.matches(host) if rep.policy else None, "endpoints": endpoints})
    return {
        "domain": rep.domain, "status": rep.status.name, "mode": rep.mode,
        "intended": {"id": intended.id, "text": intended.text()} if intended else None,
        "served": [{"address": s.address, "id": mtasts.policy_id(s.text) if s.text is not None else None,
                    "matches_intended": intended is not None and s.text == intended.text(), "error": s.error,
                    "https_not_after": iso(s.not_after) if s.not_after else None,
                    "https_days_left": _days(s.not_after, now)} for s in seen.served],
        "txt": {"name": mtasts.sts_name(rep.domain), "records": sts_values, "id": txt_id,
                "matches_served": txt_id is not None and bool(seen.served) and all(
                    s.text is not None and mtasts.policy_id(s.text) == txt_id for s in seen.served)},
        "mx": mx,
        "tlsrpt": {"name": mtasts.tlsrpt_name(rep.domain),
                   "intended": mtasts.tlsrpt_record_text(rep.observation.settings.tlsrpt)
                   if rep.observation.settings.tlsrpt else None,
                   "records": sorted(mtasts.txt_text(v) for v in mtasts.versioned(seen.tlsrpt, "TLSRPTv1"))
                   if seen.tlsrpt else []},
        "findings": [{"severity": f.severity.name, "code": f.code, "text": f.text} for f in rep.findings],
    }


def _names(cert: x509.Certificate | None) -> tuple[str, ...]:
    if cert is None:
        return ()
    try:
        return tuple(cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
                     .get_values_for_type(x509.DNSName))
    except x509.ExtensionNotFound:
        return ()


def to_text(rep: DomainReport, now: float) -> list[str]:
    """The human block of one domain (after the lineages' blocks)."""
    seen, intended = rep.observation, rep.intended
    lines = ["", f"mta-sts {rep.domain}  {rep.status.name}  mode {rep.mode}"
             + (f", intended policy id {intended.id} (mx {', '.join(intended.mx) or '-'}, max_age {intended.max_age})"
                if intended else "")]
    for s in seen.served:
        state = (f"policy id {mtasts.policy_id(s.text)}" + (" (intended)" if intended and s.text == intended.text()
                                                            else "")) if s.text is not None else "no policy"
        https = f", https certificate until {iso(s.not_after)} ({_days(s.not_after, now):.0f} d)" if s.not_after else ""
        lines.append(f"  {'served':<9} {s.address}: {state}{https}")
    if seen.sts is not None:
        lines.append(f"  {'txt':<9} {mtasts.sts_name(rep.domain)} "
                     + (", ".join(sorted(mtasts.txt_text(v) for v in seen.sts.values)) or seen.sts.describe()))
    for host in seen.mx or ():
        matched = "matched" if rep.policy and rep.policy.matches(host) else "NOT matched"
        lines.append(f"  {'mx':<9} {host}  {matched}")
        for m in (m for m in seen.mx_seen if m.host == host):
            cert = _cert(m.leaf)
            until = f", until {iso(compat.not_valid_after(cert))}" if cert else ""
            verdict = "valid" if m.valid else "INVALID" if m.leaf is not None else "no handshake"
            lines.append(f"    {m.address}  {verdict}{until}"
                         + (f": {m.error}" if m.error else ""))
    if seen.tlsrpt is not None and (rep.observation.settings.tlsrpt or seen.tlsrpt.values):
        lines.append(f"  {'tlsrpt':<9} {mtasts.tlsrpt_name(rep.domain)} "
                     + (", ".join(sorted(mtasts.txt_text(v) for v in seen.tlsrpt.values)) or seen.tlsrpt.describe()))
    lines += [f"  {f.severity.name:<9} {f.text}" for f in rep.findings]
    return lines
