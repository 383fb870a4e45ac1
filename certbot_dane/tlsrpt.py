"""SMTP TLS reports (RFC 8460 §4) as values: gzip and JSON in, a checked `Report` out; no I/O."""

from __future__ import annotations

import datetime
import json
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from certbot_dane.errors import ReportError

MAX_SIZE = 10 * 1024 * 1024
"""Bytes a report may take uncompressed (config `[reports] max_size`); real ones take kilobytes."""

POLICY_TYPES = ("tlsa", "sts", "no-policy-found")
RESULT_TYPES = (  # RFC 8460 §4.3; the IANA registry may grow, so other tokens are kept as they come
    "starttls-not-supported", "certificate-host-mismatch", "certificate-expired", "certificate-not-trusted",
    "validation-failure", "tlsa-invalid", "dnssec-invalid", "dane-required", "sts-policy-fetch-error",
    "sts-policy-invalid", "sts-webpki-invalid",
)
DANE_RESULTS = frozenset({"tlsa-invalid", "dnssec-invalid", "dane-required"})
"""Result types about DANE whatever the policy type; under a `tlsa` policy every failure is DANE's."""

_GZIP_MAGIC = b"\x1f\x8b"


@dataclass(frozen=True)
class FailureDetail:
    """One `failure-details` entry: a result type and how many sessions ended in it (RFC 8460 §4.4)."""

    result_type: str
    failed_session_count: int
    sending_mta_ip: str | None = None
    receiving_mx_hostname: str | None = None
    receiving_mx_helo: str | None = None
    receiving_ip: str | None = None
    failure_reason_code: str | None = None
    additional_information: str | None = None


@dataclass(frozen=True)
class Policy:
    """One `policies` entry: the policy a sender applied, its session counts and failures.

    `mx_host` holds the MX host pattern(s): RFC 8460 gives one string, tlsrpt-reporter a list.
    """

    policy_type: str
    policy_domain: str
    policy_string: tuple[str, ...]
    mx_host: tuple[str, ...]
    total_successful_session_count: int
    total_failure_session_count: int
    failure_details: tuple[FailureDetail, ...] = ()

    def dane(self, detail: FailureDetail) -> bool:
        """Whether a failure of this policy is about DANE: any failure under `tlsa`, DANE's result types anywhere."""
        return self.policy_type == "tlsa" or detail.result_type in DANE_RESULTS


@dataclass(frozen=True)
class Report:
    """One aggregate report of one sending organisation; known by (`organization_name`, `report_id`)."""

    organization_name: str
    report_id: str
    contact_info: str
    start_datetime: float  # POSIX seconds, UTC
    end_datetime: float
    policies: tuple[Policy, ...]

    @property
    def key(self) -> tuple[str, str]:
        """What makes a report the same report when it arrives twice."""
        return self.organization_name, self.report_id


def decompress(data: bytes, limit: int = MAX_SIZE) -> bytes:
    """The JSON text of a report: gunzipped when it is gzip (every member), as it is otherwise.

    ReportError when it is truncated or corrupt, or holds more than `limit` bytes (a gzip bomb stops
    there: at most `limit` + 1 bytes are ever inflated).
    """
    if not data.startswith(_GZIP_MAGIC):
        if len(data) > limit:
            raise ReportError(f"{len(data)} bytes, over the {limit}-byte limit")
        return data
    out = bytearray()
    rest = data
    while rest:
        inflater = zlib.decompressobj(wbits=31)
        try:
            out += inflater.decompress(rest, limit + 1 - len(out))
        except zlib.error as err:
            raise ReportError(f"corrupt gzip: {err}") from None
        if len(out) > limit:
            raise ReportError(f"over the {limit}-byte limit uncompressed")
        if not inflater.eof:
            raise ReportError("truncated gzip: the compressed data ends early")
        rest = inflater.unused_data
        if rest and not rest.startswith(_GZIP_MAGIC):
            break  # trailing garbage after the last member, as gzip(1) tolerates
    return bytes(out)


def text(data: bytes, limit: int = MAX_SIZE) -> str:
    """The JSON text of a report as received (gzipped or not); ReportError if it is not UTF-8 or too big."""
    try:
        return decompress(data, limit).decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise ReportError(f"not UTF-8 text: {err}") from None


def parse(data: bytes | str, limit: int = MAX_SIZE) -> Report:
    """A checked report from its JSON (gzipped or not); ReportError naming the first problem and where."""
    text_ = text(data, limit) if isinstance(data, bytes) else data
    try:
        document = json.loads(text_)
    except json.JSONDecodeError as err:
        raise ReportError(f"not JSON: {err}") from None
    except RecursionError:
        raise ReportError("not JSON: nested too deeply") from None
    return from_json(document)


def from_json(document: Any) -> Report:
    """A checked report from a decoded JSON document."""
    top = _object(document, "the report")
    dates = _object(top.get("date-range"), "date-range")
    start = _moment(dates.get("start-datetime"), "date-range.start-datetime")
    end = _moment(dates.get("end-datetime"), "date-range.end-datetime")
    if end < start:
        raise ReportError("date-range: end-datetime is before start-datetime")
    policies = top.get("policies")
    if not isinstance(policies, list):
        raise ReportError(f"policies: must be a list, not {_kind(policies)}")
    report_id = top.get("report-id")
    if isinstance(report_id, int) and not isinstance(report_id, bool):
        report_id = str(report_id)
    contact = top.get("contact-info", "")
    return Report(_text(top.get("organization-name"), "organization-name"), _text(report_id, "report-id"),
                  contact if isinstance(contact, str) else "", start, end,
                  tuple(_policy(p, f"policies[{i}]") for i, p in enumerate(policies)))


def _policy(value: Any, where: str) -> Policy:
    entry = _object(value, where)
    policy = _object(entry.get("policy"), f"{where}.policy")
    kind = policy.get("policy-type")
    if kind not in POLICY_TYPES:
        raise ReportError(f"{where}.policy.policy-type: {kind!r} is not one of {', '.join(POLICY_TYPES)}")
    summary = _object(entry.get("summary"), f"{where}.summary")
    details = entry.get("failure-details", [])
    if details is None:
        details = []
    if not isinstance(details, list):
        raise ReportError(f"{where}.failure-details: must be a list, not {_kind(details)}")
    mx_host = policy.get("mx-host")
    return Policy(
        kind, _text(policy.get("policy-domain"), f"{where}.policy.policy-domain").lower().rstrip("."),
        _strings(policy.get("policy-string"), f"{where}.policy.policy-string"),
        tuple(h.lower().rstrip(".") for h in _strings(mx_host, f"{where}.policy.mx-host")),
        _count(summary.get("total-successful-session-count"), f"{where}.summary.total-successful-session-count"),
        _count(summary.get("total-failure-session-count"), f"{where}.summary.total-failure-session-count"),
        tuple(_detail(d, f"{where}.failure-details[{i}]") for i, d in enumerate(details)))


def _detail(value: Any, where: str) -> FailureDetail:
    entry = _object(value, where)

    def optional(key: str) -> str | None:
        found = entry.get(key)
        return found if isinstance(found, str) and found else None

    host = optional("receiving-mx-hostname")
    return FailureDetail(_text(entry.get("result-type"), f"{where}.result-type"),
                         _count(entry.get("failed-session-count"), f"{where}.failed-session-count"),
                         optional("sending-mta-ip"), host.lower().rstrip(".") if host else None,
                         optional("receiving-mx-helo"), optional("receiving-ip"), optional("failure-reason-code"),
                         optional("additional-information"))


def _kind(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number")


def _object(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise ReportError(f"{where}: must be a JSON object, not {_kind(value)}")
    return value


def _text(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ReportError(f"{where}: must be a non-empty string, not {_kind(value) if value != '' else 'empty'}")
    return value.strip()


def _strings(value: Any, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,) if value else ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ReportError(f"{where}: must be a string or a list of strings, not {_kind(value)}")
    return tuple(v for v in value if v)


def _count(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ReportError(f"{where}: must be a non-negative integer, not {value!r}"[:200])
    return value


def _moment(value: Any, where: str) -> float:
    """RFC 3339 date-time ('2016-04-01T00:00:00Z'); one without a zone is taken as UTC."""
    if not isinstance(value, str):
        raise ReportError(f"{where}: must be an RFC 3339 date-time string, not {_kind(value)}")
    try:
        moment = datetime.datetime.fromisoformat(value.strip().replace("z", "Z"))
    except ValueError:
        raise ReportError(f"{where}: {value[:60]!r} is not an RFC 3339 date-time") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return moment.timestamp()
