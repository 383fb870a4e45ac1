"""`certbot-dane reports` output: the text says per rollover how many sessions and DANE failures; JSON is stable."""

from __future__ import annotations

import datetime
import json
from pathlib import Path

from certbot_dane import tlsrpt
from certbot_dane.rollovers import Window
from certbot_dane.tlsrptformat import SCHEMA_VERSION, to_json, to_text
from certbot_dane.tlsrptsummary import DAY, summarise

DATA = Path(__file__).parent / "data" / "tlsrpt"
DAY_START = datetime.datetime(2026, 11, 22, tzinfo=datetime.UTC).timestamp()
REPORTS = [tlsrpt.parse((DATA / f"{name}.json").read_bytes()) for name in ("microsoft", "google")]
ROLLOVER = Window("mx.example.org", ("mx.example.org",), "ab" * 32, DAY_START + 3600, DAY_START + 4000,
                  DAY_START + 4100, forced=True)
QUIET = Window("mx2", ("mx2.example.org",), "cd" * 32, DAY_START + 7200, DAY_START + 7300, DAY_START + 7400)
SUMMARY = summarise(REPORTS, [ROLLOVER, QUIET], DAY_START - DAY, DAY_START + 2 * DAY)


def test_the_text_gives_totals_rows_failures_and_rollovers() -> None:
    text = to_text(SUMMARY)
    lines = text.splitlines()
    assert lines[0] == ("TLSRPT 2026-11-21T00:00:00Z .. 2026-11-24T00:00:00Z: 2 report(s) from 2 organisation(s), "
                        "1674 session(s), 4 failed, 3 DANE failure(s)")
    assert "example.org  tlsa  mx mx.example.org" in lines
    assert "  sessions  412 successful, 3 failed (1 report(s))" in lines
    assert "  failures  tlsa-invalid 2, dnssec-invalid 1" in lines
    assert any(line.startswith("  2026-11-22  Microsoft Corporation: 2 tlsa-invalid at mx.example.org (tlsa policy): "
                               "during the rollover of mx.example.org (certificate abababababababab.. staged ")
               for line in lines), text
    assert "  2026-11-22  Microsoft Corporation: 1 dnssec-invalid (SERVFAIL) at mx.example.org" in text
    assert "deployed 2026-11-22T01:06:40Z before the gate (--force-before-gate), retired " in text
    assert any(line.startswith("  mx2  certificate cdcdcdcdcdcdcdcd..") and line.endswith(
        ": 1226 session(s) from 2 organisation(s) in 2 report(s), 0 DANE failure(s)") for line in lines), text


def test_no_reports_says_how_to_import_them() -> None:
    text = to_text(summarise([], [], 0, DAY))
    assert "0 report(s)" in text and "certbot-dane reports import PATH" in text


def test_the_json_document_is_versioned_and_carries_every_number() -> None:
    doc = json.loads(json.dumps(to_json(SUMMARY)))
    assert doc["schema_version"] == SCHEMA_VERSION == 1
    assert (doc["reports"], doc["organizations"]) == (2, ["Google Inc.", "Microsoft Corporation"])
    row = next(p for p in doc["policies"] if p["mx_host"] == "mx.example.org")
    assert row == {"policy_domain": "example.org", "policy_type": "tlsa", "mx_host": "mx.example.org", "reports": 1,
                   "successful_sessions": 412, "failed_sessions": 3,
                   "failures": {"tlsa-invalid": 2, "dnssec-invalid": 1},
                   "organizations": [{"organization": "Microsoft Corporation", "sessions": 415, "failed_sessions": 3,
                                      "failures": {"tlsa-invalid": 2, "dnssec-invalid": 1}}]}
    failure = doc["dane_failures"][1]
    assert (failure["result_type"], failure["failed_sessions"], failure["mx_host"], failure["start"]) == (
        "tlsa-invalid", 2, "mx.example.org", "2026-11-22T00:00:00Z")
    assert failure["rollovers"] == [{"lineage": "mx.example.org", "hosts": ["mx.example.org"],
                                     "certificate": "ab" * 32, "staged": "2026-11-22T01:00:00Z",
                                     "deployed": "2026-11-22T01:06:40Z", "retired": "2026-11-22T01:08:20Z",
                                     "forced": True, "in_progress": False}]
    assert [(r["lineage"], r["sessions"], r["dane_failures"]) for r in doc["rollovers"]] == [
        ("mx.example.org", 1624, 3), ("mx2", 1226, 0)]
