"""Monitoring formats of a status report, pure: Nagios performance data and Prometheus text exposition.

Each metric is one row of a table (`PERFDATA`, `METRICS`): a name, what it means, and a function
from the report's values to its value. Adding a metric is adding a row.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from certbot_dane.assessment import (
    EXPIRY_WARNING_DAYS,
    OVERDUE,
    PHASES,
    CertView,
    EndpointView,
    LineageReport,
    NameView,
    Report,
    SenderAnswer,
    ServerView,
    ZoneServer,
)

PREFIX = "certbot_dane_"
Labels = tuple[tuple[str, str], ...]
Sample = tuple[Labels, float | None]  # a value of None is left out (unknown, e.g. no TTL without an RRset)


# -- the values both formats show ------------------------------------------------------------
def days_left(view: CertView | None, now: float) -> float | None:
    """Days until the certificate's not-after (negative once expired); None without a certificate."""
    return None if view is None else (view.not_after.timestamp() - now) / 86400


def lag(lr: LineageReport, now: float) -> float:
    """Seconds a ready staged certificate has waited past its safe moment without being deployed (0: none)."""
    return max(0.0, now - lr.safe_at) if lr.phase == "ready" and lr.safe_at is not None else 0.0


# -- Nagios performance data -------------------------------------------------------------------
@dataclass(frozen=True)
class Perf:
    """One performance value per lineage, `'<lineage>_<label>'`, and over all lineages, `<label>`.

    `warn`/`crit` are Nagios ranges ("14:" alerts below 14, "300" above 300); `worst` picks the
    value over all lineages (min or max) from those that are known.
    """

    label: str
    value: Callable[[LineageReport, float], float | None]
    worst: Callable[[Iterable[float]], float]
    uom: str = ""
    warn: str = ""
    crit: str = ""
    low: str = ""


PERFDATA: tuple[Perf, ...] = (
    Perf("days_left", lambda lr, now: days_left(lr.deployed, now), min,
         warn=f"{EXPIRY_WARNING_DAYS}:", crit="0:"),
    Perf("lag_s", lag, max, uom="s", warn=f"{OVERDUE:g}", low="0"),
)


def _perf_label(text: str) -> str:
    """A quoted Nagios label: '=' (it ends a label) and unprintable characters as '_', a quote doubled."""
    return "'" + "".join(c if c.isprintable() and c != "=" else "_" for c in text).replace("'", "''") + "'"


def _decimal(value: float) -> str:
    """Two decimals at most, never an exponent (Nagios reads none): 1826.46, 400, -0.5."""
    text = f"{value:.2f}".rstrip("0").rstrip(".")
    return "0" if text == "-0" else text


def _perf_value(value: float | None, perf: Perf) -> str:
    number = "U" if value is None else _decimal(value) + perf.uom
    return ";".join((number, perf.warn, perf.crit, perf.low)).rstrip(";")


def perfdata(rep: Report) -> str:
    """The performance data: each `PERFDATA` row over all lineages, then per lineage ('mx.example.org_days_left')."""
    items = []
    for perf in PERFDATA:
        known = [v for lr in rep.lineages if (v := perf.value(lr, rep.checked_at)) is not None]
        items.append(f"{perf.label}={_perf_value(perf.worst(known) if known else None, perf)}")
    for lr in rep.lineages:
        items += [f"{_perf_label(f'{lr.lineage}_{perf.label}')}={_perf_value(perf.value(lr, rep.checked_at), perf)}"
                  for perf in PERFDATA]
    return " ".join(items)


def nagios(text: str, rep: Report) -> str:
    """The human output with the performance data on its first line (`DANE OK: ... | days_left=...`).

    A '|' in the text would start performance data for Nagios: it becomes '/'.
    """
    first, newline, rest = text.replace("|", "/").partition("\n")
    return f"{first} | {perfdata(rep)}{newline}{rest}"


# -- Prometheus text exposition (node_exporter's textfile collector) ---------------------------
@dataclass(frozen=True)
class Metric:
    """One metric family: `certbot_dane_<name>`, its help text, and its samples from a report."""

    name: str
    help: str
    samples: Callable[[Report], Iterable[Sample]]
    type: str = "gauge"


def per_lineage(value: Callable[[LineageReport, float], float | None]) -> Callable[[Report], Iterator[Sample]]:
    """Samples labelled {lineage}."""
    return lambda rep: (((("lineage", lr.lineage),), value(lr, rep.checked_at)) for lr in rep.lineages)


def per_certificate(value: Callable[[CertView, float], float]) -> Callable[[Report], Iterator[Sample]]:
    """Samples labelled {lineage, certificate="deployed"|"staged"}, for the certificates there are."""
    return lambda rep: (((("lineage", lr.lineage), ("certificate", which)), value(view, rep.checked_at))
                        for lr in rep.lineages
                        for which, view in (("deployed", lr.deployed), ("staged", lr.staged)) if view is not None)


def per_server(value: Callable[[ServerView], float | None]) -> Callable[[Report], Iterator[Sample]]:
    """Samples labelled {lineage, name, server}: each TLSA name on each of its authoritative servers."""
    return lambda rep: ((_server_labels(lr, name, server), value(server))
                        for lr in rep.lineages for name in lr.names for server in name.servers)


def per_zone_server(value: Callable[[ZoneServer], float | None]) -> Callable[[Report], Iterator[Sample]]:
    """Samples labelled {lineage, zone, server}: each zone of the lineage on each of its servers."""
    return lambda rep: (((("lineage", lr.lineage), ("zone", zone.zone), ("server", server.server)), value(server))
                        for lr in rep.lineages for zone in lr.zones for server in zone.servers)


def per_sender(value: Callable[[SenderAnswer, LineageReport], float | None]) -> Callable[[Report], Iterator[Sample]]:
    """Samples labelled {lineage, name, resolver}: what the validating resolver answered for each TLSA name."""
    return lambda rep: (((("lineage", lr.lineage), ("name", answer.asked), ("resolver", answer.resolver)),
                         value(answer, lr)) for lr in rep.lineages for answer in lr.sender)


def per_endpoint(value: Callable[[EndpointView], float | None]) -> Callable[[Report], Iterator[Sample]]:
    """Samples labelled {lineage, endpoint, address}: each address of each endpoint the lineage verifies."""
    return lambda rep: (((("lineage", lr.lineage), ("endpoint", seen.target), ("address", seen.address)), value(seen))
                        for lr in rep.lineages for seen in lr.endpoints)


def _sender_matches(answer: SenderAnswer, lr: LineageReport) -> float | None:
    if answer.rcode is None or lr.deployed is None:
        return None
    return float(bool(answer.values & lr.deployed.accepts))


def _server_labels(lr: LineageReport, name: NameView, server: ServerView) -> Labels:
    return ("lineage", lr.lineage), ("name", name.name), ("server", server.server)


def _phases(rep: Report) -> Iterator[Sample]:
    return (((("lineage", lr.lineage), ("phase", phase)), float(lr.phase == phase))
            for lr in rep.lineages for phase in PHASES)


def _findings(rep: Report) -> Iterator[Sample]:
    for lr in rep.lineages:
        counts: dict[tuple[str, str], int] = {}
        for finding in lr.findings:
            key = (finding.code, finding.severity.name)
            counts[key] = counts.get(key, 0) + 1
        yield from (((("lineage", lr.lineage), ("code", code), ("severity", severity)), n)
                    for (code, severity), n in sorted(counts.items()))


METRICS: tuple[Metric, ...] = (
    Metric("status", "Nagios state of the lineage: 0 OK, 1 WARNING, 2 CRITICAL (its most severe finding)",
           per_lineage(lambda lr, now: int(lr.status))),
    Metric("phase", "1 for the rollover phase the lineage is in, 0 for the others",
           _phases),
    Metric("findings", "Findings of the lineage by code and severity (docs/status-json.md lists the codes)",
           _findings),
    Metric("deploy_lag_seconds", "How long a staged certificate ready to deploy has waited past its safe moment "
                                 "(0: none); over 300 is the deploy-overdue warning",
           per_lineage(lag)),
    Metric("safe_at_timestamp_seconds", "When the staged certificate may go live (2 x TTL after every server "
                                        "served its records), Unix time",
           per_lineage(lambda lr, now: lr.safe_at)),
    Metric("pending_steps", "Steps the next certbot-dane deploy run would take (publish, claim, release, retire, "
                            "deploy)",
           per_lineage(lambda lr, now: len(lr.pending))),
    Metric("certificate_days_left", "Days until the certificate expires (negative once expired); "
                                    "the textfile keeps the value of its last check",
           per_certificate(lambda view, now: round((view.not_after.timestamp() - now) / 86400, 4))),
    Metric("certificate_not_after_timestamp_seconds", "When the certificate expires, Unix time "
                                                      "(alert on it minus time(): right even if the file is stale)",
           per_certificate(lambda view, now: view.not_after.timestamp())),
    Metric("tlsa_records", "TLSA records the server serves at the name",
           per_server(lambda s: len(s.records))),
    Metric("tlsa_matches_deployed", "1 if a record the server serves at the name accepts the deployed "
                                    "certificate, else 0 (DANE senders asking it fail)",
           per_server(lambda s: float(any(r.accepts_deployed for r in s.records)))),
    Metric("tlsa_stale_records", "Records certbot-dane published that match nothing deployed or staged",
           per_server(lambda s: sum(r.match == "stale" for r in s.records))),
    Metric("tlsa_ttl_seconds", "TTL of the TLSA RRset on the server",
           per_server(lambda s: s.ttl)),
    Metric("tlsa_dnssec_valid", "1 if the TLSA RRset validates against the zone's DNSKEY on the server, else 0",
           per_server(lambda s: float(s.dnssec.status == "valid"))),
    Metric("tlsa_rrsig_expiry_timestamp_seconds", "When the first RRSIG over the TLSA RRset on the server expires, "
                                                  "Unix time",
           per_server(lambda s: s.rrsig_expires)),
    Metric("soa_serial", "The zone's SOA serial on the server",
           per_zone_server(lambda s: s.soa_serial)),
    Metric("sender_secure", "1 if the validating resolver validated its answer for the name (AD bit), else 0 "
                            "(absent: it did not answer)",
           per_sender(lambda answer, lr: None if answer.rcode is None else float(answer.secure))),
    Metric("sender_matches_deployed", "1 if a record the validating resolver answers for the name (what senders "
                                      "get, after caches) accepts the deployed certificate, else 0",
           per_sender(_sender_matches)),
    Metric("endpoint_status", "Nagios state of the TLS check of one address of an endpoint: 0 OK, 1 WARNING, "
                              "2 CRITICAL (it presents a certificate no published record matches)",
           per_endpoint(lambda seen: int(seen.status))),
    Metric("endpoint_matched", "1 if the chain the address presented matched a published TLSA record, else 0",
           per_endpoint(lambda seen: float(seen.matched is not None))),
)


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\"", "\\\"").replace("\n", "\\n")


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return str(int(value)) if float(value).is_integer() and abs(value) < 2**53 else repr(float(value))


def _sample(name: str, labels: Labels, value: float) -> str:
    pairs = ",".join(f'{key}="{_escape_label(text)}"' for key, text in labels)
    return f"{name}{{{pairs}}} {_number(value)}" if pairs else f"{name} {_number(value)}"


def _family(name: str, help_: str, kind: str, samples: Iterable[Sample]) -> list[str]:
    """HELP, TYPE and the samples of one family; nothing when it has no sample."""
    lines = [_sample(name, labels, value) for labels, value in samples if value is not None]
    if not lines:
        return []
    return [f"# HELP {name} {_escape_help(help_)}", f"# TYPE {name} {kind}", *lines]


def _head(up: bool, now: float) -> list[str]:
    return [*_family(f"{PREFIX}up", "1 if the check could run; 0 if it could not (bad configuration, an unreadable "
                                    "state file, a DNS server that does not answer: see the command's stderr)",
                     "gauge", [((), float(up))]),
            *_family(f"{PREFIX}last_check_timestamp_seconds", "When the check ran, Unix time", "gauge",
                     [((), now)])]


def prometheus(rep: Report) -> str:
    """The report as Prometheus text exposition (format 0.0.4), no timestamps, no final newline."""
    lines = _head(True, rep.checked_at)
    for metric in METRICS:
        lines += _family(PREFIX + metric.name, metric.help, metric.type, metric.samples(rep))
    return "\n".join(lines)


def prometheus_unknown(now: float) -> str:
    """The exposition when the check could not run (status UNKNOWN): `certbot_dane_up 0`, nothing per lineage."""
    return "\n".join(_head(False, now))
