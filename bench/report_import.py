"""How fast `certbot-dane reports import` reads a Maildir of N gzipped TLSRPT reports, again (all known), and
how fast `reports` summarises them: python bench/report_import.py [N ...] (default 1000 10000)."""

from __future__ import annotations

import gzip
import json
import mailbox
import sys
import tempfile
import time
from email.message import EmailMessage
from pathlib import Path

from certbot_dane import config, reports

DAY = 86400.0
START = 1795392000.0  # 2026-11-23T00:00:00Z


def report(i: int) -> bytes:
    """A Microsoft-shaped daily report of one of 50 senders: two MX hosts, a DANE failure now and then."""
    day = START - (i // 50) * DAY
    failures = [{"result-type": "tlsa-invalid", "sending-mta-ip": "192.0.2.1", "receiving-mx-hostname":
                 "mx.example.org", "failed-session-count": 1}] if i % 7 == 0 else []
    return json.dumps({
        "organization-name": f"Sender {i % 50}", "contact-info": "tlsrpt@sender.example", "report-id": f"r-{i}",
        "date-range": {"start-datetime": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(day)),
                       "end-datetime": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(day + DAY - 1))},
        "policies": [{"policy": {"policy-type": "tlsa", "policy-string": ["3 1 1 " + "ab" * 32],
                                 "policy-domain": "example.org", "mx-host": host},
                      "summary": {"total-successful-session-count": 100 + i % 13,
                                  "total-failure-session-count": len(failures) if host == "mx.example.org" else 0},
                      **({"failure-details": failures} if host == "mx.example.org" else {})}
                     for host in ("mx.example.org", "mx2.example.org")],
    }).encode()


def maildir(path: Path, count: int) -> None:
    box = mailbox.Maildir(path)
    for i in range(count):
        msg = EmailMessage()
        msg["Subject"], msg["From"], msg["To"] = f"Report {i}", "tlsrpt@sender.example", "tlsrpt@example.org"
        msg.set_content("This is an aggregate TLS report")
        msg.add_attachment(gzip.compress(report(i)), maintype="application", subtype="tlsrpt+gzip",
                           filename=f"r{i}.json.gz")
        box.add(msg)


def main(counts: list[int]) -> None:
    for count in counts:
        with tempfile.TemporaryDirectory() as tmp:
            base = Path(tmp)
            (base / "c.toml").write_text(f'state_dir = "{base / "state"}"\n[dns]\nserver = "127.0.0.1"\n'
                                         '[lineage."mx.example.org"]\ntlsa = ["_25._tcp.mx.example.org"]\n'
                                         'params = ["3 1 1"]\n')
            cfg = config.load(base / "c.toml", need_key=False)
            maildir(base / "Maildir", count)
            now = START + DAY
            timings = []
            for _ in range(2):
                began = time.perf_counter()
                done = reports.import_reports(cfg, [str(base / "Maildir")], now)
                timings.append((time.perf_counter() - began, done.line()))
            began = time.perf_counter()
            summary = reports.summary(cfg, 0, now)
            shown = time.perf_counter() - began
            size = cfg.reports.path(cfg.state_dir).stat().st_size
            print(f"{count} reports: import {timings[0][0]:.2f} s ({count / timings[0][0]:.0f}/s; {timings[0][1]}), "
                  f"again {timings[1][0]:.2f} s ({timings[1][1]}), summary {shown:.2f} s "
                  f"({summary.reports} reports), store {size / 1024 / 1024:.1f} MiB")


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [1000, 10000])
