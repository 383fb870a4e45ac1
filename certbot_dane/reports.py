"""TLSRPT reports read back: import them into the store, summarise them, give `status` its findings.

Each function here joins the adapters (mail reading, the SQLite store, the rollover history) to the
pure core (`tlsrpt`, `rollovers`, `tlsrptsummary`); the CLI (`certbot-dane reports`) and `status` call them.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import BinaryIO

from certbot_dane import history, reportmail, reportstore, rollovers, tlsrpt, tlsrptsummary
from certbot_dane.assessment import Finding, Severity
from certbot_dane.config import Config, LineageSettings
from certbot_dane.errors import ReportError, StateError
from certbot_dane.tlsrptsummary import DAY, Summary

logger = logging.getLogger(__name__)


@dataclass
class Imported:
    """What one import did."""

    new: int = 0
    known: int = 0
    pruned: int = 0
    skipped: list[str] = field(default_factory=list)  # one line each: where, and why

    def line(self) -> str:
        """The one line `reports import` prints."""
        return (f"imported {self.new} new report(s), {self.known} already stored, {len(self.skipped)} skipped"
                + (f"; {self.pruned} older than the retention period deleted" if self.pruned else ""))


def import_reports(config: Config, paths: Sequence[str], now: float, stdin: BinaryIO | None = None) -> Imported:
    """Read every report in `paths` into the store, in one transaction; delete those past the retention.

    A report that cannot be read is skipped with one line; StateError when the store cannot be written
    (then nothing of this import is stored, and nothing stored before is touched).
    """
    settings = config.reports
    done = Imported()
    cutoff = now - settings.retention_days * DAY
    with reportstore.open_store(settings.path(config.state_dir), group=config.monitor_group) as store:
        assert store is not None
        for payload in reportmail.read(paths, settings.max_size, stdin):
            if payload.data is None:
                done.skipped.append(f"{payload.source}: skipped: {payload.problem}")
                continue
            try:
                text = tlsrpt.text(payload.data, settings.max_size)
                report = tlsrpt.parse(text)
            except ReportError as err:
                done.skipped.append(f"{payload.source}: skipped: {err}")
                continue
            if report.end_datetime < cutoff:
                done.skipped.append(f"{payload.source}: skipped: report {report.report_id} of "
                                    f"{report.organization_name} ended before the {settings.retention_days:g}-day "
                                    "retention period")
                continue
            if store.add(report, text, payload.source, now):
                done.new += 1
                logger.info("%s: report %s of %s stored", payload.source, report.report_id, report.organization_name)
            else:
                done.known += 1
        done.pruned = store.prune(cutoff)
    return done


def summary(config: Config, since: float, until: float, domain: str | None = None) -> Summary:
    """`certbot-dane reports`: what the stored reports of [since, until] say, lined up with the rollovers."""
    with reportstore.open_store(config.reports.path(config.state_dir), write=False) as store:
        reports = store.load(since, until) if store is not None else []
    return tlsrptsummary.summarise(reports, rollovers.windows(history.load(config.state_dir)), since, until,
                                   domain)


def status_findings(config: Config, lineages: Sequence[LineageSettings],
                    now: float) -> dict[str, tuple[Finding, ...]]:
    """Per lineage, the DANE failures senders reported at its MX hosts lately (`[reports] status_days`).

    No store yet: no findings. A store or history that cannot be read: one WARNING per lineage.
    """
    since = now - config.reports.status_days * DAY
    try:
        with reportstore.open_store(config.reports.path(config.state_dir), write=False) as store:
            reports = store.load(since) if store is not None else []
        windows = rollovers.windows(history.load(config.state_dir)) if reports else ()
    except StateError as err:
        unreadable = (Finding(Severity.WARNING, "tlsrpt-unreadable", f"TLSRPT reports not checked: {err}"),)
        return {lineage.name: unreadable for lineage in lineages}
    return {lineage.name: tlsrptsummary.findings(reports, windows, lineage.hosts, since) for lineage in lineages}
