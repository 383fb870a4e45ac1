"""`certbot-dane reports`: import from folders, files and a mail pipe (idempotent, one line per skipped report,
nothing stored lost), the summary, status's findings; parsed numbers cross-checked with parsedmarc."""

from __future__ import annotations

import datetime
import gzip
import io
import json
import mailbox
import os
import subprocess
import sys
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from certbot_dane import cli, config, history, reports, tlsrpt
from certbot_dane.assessment import Severity
from certbot_dane.rollovers import Event
from tests.scenario import independent_parser

DATA = Path(__file__).parent / "data" / "tlsrpt"
SAMPLES = ("microsoft", "google", "rfc8460", "tlsrpt-reporter")
SECRET = "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0MTI="
NOW = datetime.datetime(2026, 11, 23, 6, tzinfo=datetime.UTC).timestamp()  # the morning after the reports' day
ROLLOVER_AT = datetime.datetime(2026, 11, 22, 10, tzinfo=datetime.UTC).timestamp()
BIN = Path(sys.executable).parent


def sample(name: str) -> bytes:
    return (DATA / f"{name}.json").read_bytes()


def message(payload: bytes, *, gz: bool = True) -> bytes:
    """A report as tlsrpt-reporter (and RFC 8460 §5.3) mails it."""
    msg = EmailMessage()
    msg["Subject"], msg["From"], msg["To"] = "Report Domain: example.org", "reports@sender.test", "tlsrpt@example.org"
    msg.set_content("This is an aggregate TLS report")
    msg.add_attachment(gzip.compress(payload) if gz else payload, maintype="application",
                       subtype="tlsrpt+gzip" if gz else "tlsrpt+json", filename="r.json.gz" if gz else "r.json")
    return bytes(msg)


def settings(tmp_path: Path, reports_table: str = "") -> config.Config:
    path = tmp_path / "certbot-dane.toml"
    path.write_text(f'state_dir = "{tmp_path / "state"}"\ndeploy_dir = "{tmp_path / "live"}"\n'
                    f'[dns]\nserver = "127.0.0.1"\nkey_name = "k"\nkey_secret = "{SECRET}"\n'
                    '[lineage."mx.example.org"]\ntlsa = ["_25._tcp.mx.example.org"]\nparams = ["3 1 1"]\n'
                    '[lineage."mx2"]\ntlsa = ["_25._tcp.mx2.example.org"]\nparams = ["3 1 1"]\n'
                    f'[reports]\n{reports_table}\n')
    path.chmod(0o600)
    return config.load(path)


def edited(name: str, **changes: Any) -> bytes:
    document = json.loads(sample(name))
    document.update(changes)
    return json.dumps(document).encode()


@pytest.fixture
def maildir(tmp_path: Path) -> Path:
    """Reports as they pile up in a Maildir: good ones, one twice, and every kind of bad one."""
    box = mailbox.Maildir(tmp_path / "Maildir")
    for data in (message(sample("microsoft")), message(sample("google"), gz=False), message(sample("microsoft")),
                 message(gzip.compress(sample("tlsrpt-reporter"))[:150], gz=False),  # a truncated gzip
                 message(edited("google", **{"report-id": "wrong", "policies": {"x": 1}})),  # wrong schema
                 message(edited("google", **{"report-id": "huge", "padding": "x" * 300_000})),  # over max_size
                 message(sample("rfc8460")),  # from 2016: past the retention
                 b"Subject: lunch?\n\nsee you at noon\n"):
        box.add(data)
    return tmp_path / "Maildir"


def test_a_maildir_is_imported_once_with_one_line_per_skipped_report(tmp_path: Path, maildir: Path) -> None:
    cfg = settings(tmp_path, "max_size = 100000")
    done = reports.import_reports(cfg, [str(maildir)], NOW)
    assert (done.new, done.known, done.pruned) == (2, 1, 0)
    assert len(done.skipped) == 5 and all(line.startswith(f"{maildir}: message ") for line in done.skipped)
    reasons = " | ".join(done.skipped)
    for why in ("truncated gzip", "policies: must be a list, not an object", "over the 100000-byte limit",
                "ended before the 400-day retention period", "not a TLSRPT report"):
        assert why in reasons, reasons
    again = reports.import_reports(cfg, [str(maildir)], NOW)
    assert (again.new, again.known, len(again.skipped)) == (0, 3, 5), "idempotent: known by organisation + report-id"
    assert again.line() == "imported 0 new report(s), 3 already stored, 5 skipped"


def test_a_bad_import_never_loses_what_is_stored_and_old_reports_are_pruned(tmp_path: Path) -> None:
    cfg = settings(tmp_path, "retention_days = 30")
    (tmp_path / "ms.json").write_bytes(sample("microsoft"))
    (tmp_path / "broken.json.gz").write_bytes(b"\x1f\x8b\x08\x00garbage")
    assert reports.import_reports(cfg, [str(tmp_path / "ms.json")], NOW).new == 1
    done = reports.import_reports(cfg, [str(tmp_path / "broken.json.gz")], NOW)
    assert done.skipped == [f"{tmp_path / 'broken.json.gz'}: skipped: truncated gzip: the compressed data ends early"]
    assert reports.summary(cfg, 0, NOW).reports == 1
    later = NOW + 40 * 86400
    assert reports.import_reports(cfg, [], later).pruned == 1
    assert reports.summary(cfg, 0, later).reports == 0


def test_the_summary_lines_up_failures_with_the_recorded_rollovers(tmp_path: Path) -> None:
    cfg = settings(tmp_path)
    for kind in ("stage", "deploy", "retire"):
        history.append(cfg.state_dir, Event(ROLLOVER_AT + 60 * ("stage", "deploy", "retire").index(kind),
                                            "mx.example.org", kind, ("mx.example.org",), "ab" * 8))
    (tmp_path / "ms.json.gz").write_bytes(gzip.compress(sample("microsoft")))
    reports.import_reports(cfg, [str(tmp_path / "ms.json.gz")], NOW)
    summary = reports.summary(cfg, NOW - 30 * 86400, NOW, "example.org")
    assert [f.rollovers[0].lineage for f in summary.failures] == ["mx.example.org"] * 2
    assert [(r.window.lineage, r.sessions, r.dane_failures) for r in summary.rollovers] == [("mx.example.org", 415, 3)]


def test_status_findings_warn_per_lineage_of_its_hosts_and_say_when_the_store_is_unreadable(tmp_path: Path) -> None:
    cfg = settings(tmp_path)
    lineages = list(cfg.lineages.values())
    assert reports.status_findings(cfg, lineages, NOW) == {"mx.example.org": (), "mx2": ()}, "no store yet"
    (tmp_path / "ms.json").write_bytes(sample("microsoft"))
    reports.import_reports(cfg, [str(tmp_path / "ms.json")], NOW)
    found = reports.status_findings(cfg, lineages, NOW)
    assert {(f.severity, f.code) for f in found["mx.example.org"]} == {(Severity.WARNING, "tlsrpt-dane-failure")}
    assert found["mx2"] == (), "Microsoft reported no failure at mx2.example.org"
    history.append(cfg.state_dir, Event(ROLLOVER_AT, "mx.example.org", "stage", ("mx.example.org",), "ab" * 8))
    found = reports.status_findings(cfg, lineages, NOW)
    assert {(f.severity, f.code) for f in found["mx.example.org"]} == {(Severity.CRITICAL, "tlsrpt-rollover-failure")}
    assert reports.status_findings(cfg, lineages, NOW + 8 * 86400) == {"mx.example.org": (), "mx2": ()}, \
        "[reports] status_days: 7"
    cfg.reports.path(cfg.state_dir).write_bytes(b"garbage" * 1000)
    broken = reports.status_findings(cfg, lineages, NOW)
    assert [f.code for f in broken["mx2"]] == ["tlsrpt-unreadable"] and "not a certbot-dane report store" in \
        broken["mx2"][0].text


def run_cli(args: list[str], stdin: bytes = b"") -> tuple[int, str, str]:
    """`certbot-dane ARGS` in this process, stdin and stdout as a pipe would give them."""
    out, err = io.StringIO(), io.StringIO()
    old = sys.stdin, sys.stdout, sys.stderr
    sys.stdin = io.TextIOWrapper(io.BytesIO(stdin))
    sys.stdout, sys.stderr = out, err
    try:
        code = cli.main(args)
    finally:
        sys.stdin, sys.stdout, sys.stderr = old
    return code, out.getvalue(), err.getvalue()


def test_the_command_imports_and_prints_text_and_json(tmp_path: Path, maildir: Path) -> None:
    cfg = settings(tmp_path, "max_size = 100000")
    code, out, err = run_cli(["-c", str(cfg.path), "reports", "import", str(maildir)])
    assert code == 0 and out == "imported 2 new report(s), 1 already stored, 5 skipped\n"
    assert len(err.splitlines()) == 5 and all(line.startswith(f"certbot-dane: {maildir}: message ")
                                              for line in err.splitlines())
    code, out, _ = run_cli(["-c", str(cfg.path), "reports", "--since", "2026-11-01", "--json"])
    doc = json.loads(out)
    assert code == 0 and (doc["schema_version"], doc["reports"]) == (1, 2)
    code, out, _ = run_cli(["-c", str(cfg.path), "reports", "--since", "2026-11-01", "--domain", "example.org"])
    assert code == 0 and out.startswith("TLSRPT for example.org 2026-11-01T00:00:00Z .. ")


def test_bad_usage_exits_2() -> None:
    with pytest.raises(SystemExit) as info:
        run_cli(["reports", "--since", "last week"])
    assert info.value.code == 2


def test_a_mail_pipe_delivery_is_imported_and_a_store_error_asks_the_mta_to_try_again(tmp_path: Path) -> None:
    """The real command, as Postfix's local(8) runs `|certbot-dane reports import -` for an alias."""
    cfg = settings(tmp_path)
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}

    def pipe(data: bytes, path: Path = cfg.path) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run([str(BIN / "certbot-dane"), "-c", str(path), "reports", "import", "-"], input=data,
                              capture_output=True, env=env, timeout=60)

    delivered = pipe(message(sample("microsoft")))
    assert (delivered.returncode, delivered.stdout) == (0, b"imported 1 new report(s), 0 already stored, 0 skipped\n")
    spam = pipe(b"Subject: buy now\n\ncheap\n")
    assert spam.returncode == 0 and b"stdin: skipped: not a TLSRPT report" in spam.stderr
    (tmp_path / "file").write_text("")
    unwritable = settings(tmp_path, f'database = "{tmp_path / "file" / "x.sqlite3"}"')  # under a file
    failed = pipe(message(sample("google")), unwritable.path)
    assert failed.returncode == 75 and b"cannot create directory" in failed.stderr, failed.stderr


def as_parsedmarc(report: tlsrpt.Report) -> dict[str, Any]:
    """Our values in the shape parsedmarc's SMTP TLS parser gives, for the fields both read."""
    def detail(d: tlsrpt.FailureDetail) -> dict[str, Any]:
        found = {"result_type": d.result_type, "failed_session_count": d.failed_session_count}
        for key in ("sending_mta_ip", "receiving_ip", "receiving_mx_hostname", "receiving_mx_helo",
                    "failure_reason_code"):
            if getattr(d, key):
                found[key] = getattr(d, key)
        return found
    return {"organization_name": report.organization_name, "report_id": report.report_id,
            "policies": [{"policy_domain": p.policy_domain, "policy_type": p.policy_type,
                          "successful_session_count": p.total_successful_session_count,
                          "failed_session_count": p.total_failure_session_count,
                          "failure_details": [detail(d) for d in p.failure_details]} for p in report.policies]}


@pytest.mark.parametrize("name", SAMPLES)
def test_the_numbers_agree_with_parsedmarcs_independent_parser(name: str) -> None:
    parsedmarc = independent_parser()
    theirs = parsedmarc.parse_report_email(message(sample(name)), offline=True)
    assert theirs["report_type"] == "smtp_tls"
    got = theirs["report"]
    expected = as_parsedmarc(tlsrpt.parse(sample(name)))
    assert {k: got[k] for k in ("organization_name", "report_id")} == \
        {k: expected[k] for k in ("organization_name", "report_id")}
    assert [{k: v for k, v in p.items() if k in ("policy_domain", "policy_type", "successful_session_count",
                                                   "failed_session_count")} | {"failure_details": [
        {k: v for k, v in d.items() if k != "additional_info_uri"} for d in p.get("failure_details", [])]}
        for p in got["policies"]] == expected["policies"]
