"""TLSRPT end to end with real software: a rollover forced before its gate on the real sandbox, DANE sessions
at a real Postfix MX, the report built and mailed by tlsrpt-reporter through Postfix into a Maildir and a
`.forward`-style pipe, then `certbot-dane reports import`, `reports` and `status` (issue 14).

Postfix 3.7 (Debian 12) has no TLSRPT client and Debian 12 has no libtlsrpt: each session is a real STARTTLS
handshake with the MX judged against the TLSA records the sender holds (sandbox.tlsrpt.dane_session), sent to
tlsrpt-collectd as the datagram libtlsrpt would send.
"""

from __future__ import annotations

import datetime
import email
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from certbot_dane import cli, tlsrpt
from certbot_dane.config import load
from sandbox.sender import SENDER_APT_PACKAGES, pick_address, smtp_port
from sandbox.servers import NOBODY, Sandbox, missing_binaries
from sandbox.tlsrpt import Reporter, ReportMailbox, Session, dane_session, missing_programs, wait_until
from tests.scenario import Clock, Scenario, independent_parser, require_programs

pytestmark = pytest.mark.realservers

DAY = 86400.0
HOST = "rpt.example.org"
TLSA_NAME = f"_25._tcp.{HOST}"
ORGANIZATION = "Example Sender Org"
REPO = Path(__file__).resolve().parent.parent
DEBIAN_PYTHON = ["/usr/bin/env", f"PYTHONPATH={REPO}", "/usr/bin/python3", "-m", "certbot_dane.cli"]
"""certbot-dane as the pipe's user (nobody) runs it: on Debian's Python and libraries, as the Debian package
does (this virtualenv's interpreter may live where nobody cannot go)."""


class Shifted(Clock):
    """The injected clock, `back` seconds behind the wall clock: rollovers on the days a report covers."""

    def __init__(self, back: float) -> None:
        super().__init__()
        self.back = back

    def now(self) -> float:
        return super().now() - self.back


def cli_run(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    old = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = out, err
    try:
        code = cli.main(list(args))
    finally:
        sys.stdout, sys.stderr = old
    return code, out.getvalue(), err.getvalue()


def test_a_forced_rollover_shows_up_in_a_real_tlsrpt_report_in_reports_and_in_status(
        sandbox: Sandbox, tmp_path: Path, public_tmp: Path) -> None:
    require_programs(missing_binaries(("postfix", "postconf", "sendmail", "setpriv")), SENDER_APT_PACKAGES)
    require_programs(missing_programs(), "pip install -e '.[test]' (tlsrpt-reporter)")
    debian = subprocess.run(["/usr/bin/python3", "-c", "import dns.message, cryptography.x509"], capture_output=True)
    require_programs([] if debian.returncode == 0 else ["/usr/bin/python3 with dnspython and cryptography"],
                     "python3-dnspython python3-cryptography")
    today = datetime.datetime.now(datetime.UTC).replace(hour=0, minute=0, second=0, microsecond=0).timestamp()
    yesterday = today - DAY  # the day tlsrpt-reportd reports on

    # the pipe's own small configuration and store, nobody's (as a .forward runs as its user)
    pipe_state = public_tmp / "pipe-state"
    pipe_state.mkdir(mode=0o700)
    os.chown(pipe_state, NOBODY, NOBODY)
    pipe_config = public_tmp / "pipe.toml"
    pipe_config.write_text(f'state_dir = "{pipe_state}"\n[dns]\nserver = "127.0.0.1"\n')
    address = pick_address((25,))
    mailbox = ReportMailbox(address, tmp_path / "live" / HOST / "combined.pem", port=smtp_port(address),
                            hostname=HOST, domain="example.org",
                            pipe_command=[*DEBIAN_PYTHON, "-c", str(pipe_config), "reports", "import", "-"])
    postfix = shutil.which("postfix", path="/usr/sbin:/usr/bin:" + os.environ.get("PATH", ""))
    reload = (f"sh -c '{postfix} -c {mailbox.config_dir} status >/dev/null 2>&1 || exit 0; "
              f"exec {postfix} -c {mailbox.config_dir} reload'")  # nothing to reload before Postfix starts
    # the first certificate two days ago at noon, the renewal yesterday at noon
    s = Scenario(sandbox, tmp_path, HOST, [TLSA_NAME], params=("3 1 1",), reload=[reload],
                 clock=Shifted(datetime.datetime.now(datetime.UTC).timestamp() - (yesterday - DAY + 12 * 3600)))
    reporter = Reporter(tmp_path / "reporter", organization=ORGANIZATION, contact="tlsrpt-noreply@sender.test",
                        sendmail_command=mailbox.sendmail_command)
    record = f"v=TLSRPTv1; rua=mailto:{mailbox.maildir_address},mailto:{mailbox.pipe_address}"
    port = mailbox.port

    def sender(tlsa: set[str] | None = None) -> Session:
        """One delivery by a DANE sender: the TLSA RRset it holds (default: the primary's, now), the MX's answer."""
        session = dane_session(address, port, HOST, sorted(tlsa if tlsa is not None else s.tlsa_on(TLSA_NAME)))
        reporter.report(session, domain="example.org", record=record, mx_host=HOST, receiving_ip=address)
        return session

    try:
        old = s.bootstrapped(age=datetime.timedelta(days=3))
        mailbox.start()
        reporter.start()
        assert [sender().result for _ in range(3)] == [None] * 3
        cached = s.tlsa_on(TLSA_NAME)  # what a sender's resolver holds from now on (a cache ignoring the TTL)

        s.clock.advance(DAY)
        new = s.records(s.deliver(age=datetime.timedelta(days=2)))
        s.wait_until_served(TLSA_NAME, old | new)
        assert [sender().result for _ in range(2)] == [None] * 2, "staged: both records published, old one served"
        ran = s.deploy(force=True)
        assert ran.returncode == 0 and "EMERGENCY deploy before the gate" in ran.stdout, ran
        s.wait_until_exactly(TLSA_NAME, new)
        wait_until(lambda: dane_session(address, port, HOST, sorted(new)).result is None,
                   "Postfix presenting the new certificate after its reload", log=mailbox.log)
        assert [sender().result for _ in range(2)] == [None] * 2, "senders asking now get the new record"
        assert [sender(cached).result for _ in range(3)] == ["tlsa-invalid"] * 3, "the cached old RRset fails"

        reporter.close_day()
        reporter.send_reports(lambda: len(mailbox.delivered()) >= 1 and mailbox.piped() >= 1)
    finally:
        reporter.stop()
        mailbox.stop()

    # the Maildir holds tlsrpt-reportd's message; certbot-dane imports it, once
    code, out, err = cli_run("-c", str(s.config), "reports", "import", str(mailbox.maildir))
    assert (code, out, err) == (0, "imported 1 new report(s), 0 already stored, 0 skipped\n", "")
    assert cli_run("-c", str(s.config), "reports", "import", str(mailbox.maildir))[1] == \
        "imported 0 new report(s), 1 already stored, 0 skipped\n"

    code, out, _ = cli_run("-c", str(s.config), "reports", "--json", "--since", "3d")
    doc = json.loads(out)
    assert (code, doc["reports"], doc["organizations"]) == (0, 1, [ORGANIZATION])
    (row,) = doc["policies"]
    assert (row["policy_type"], row["mx_host"], row["successful_sessions"], row["failed_sessions"],
            row["failures"]) == ("tlsa", HOST, 7, 3, {"tlsa-invalid": 3})
    (failure,) = doc["dane_failures"]
    assert (failure["organization"], failure["result_type"], failure["failed_sessions"], failure["mx_host"],
            failure["start"]) == (ORGANIZATION, "tlsa-invalid", 3, HOST, f"{datetime.date.fromtimestamp(yesterday)}T"
                                                                          "00:00:00Z")
    (during,) = failure["rollovers"]
    assert during["forced"] and during["retired"] and during["certificate"].startswith(
        s.state()["deployed"]["fingerprint"][:16])
    first, renewal = doc["rollovers"]
    assert (first["sessions"], first["dane_failures"]) == (0, 0), "two days ago: no report covers it"
    assert (renewal["reports"], renewal["sessions"], renewal["organizations"], renewal["dane_failures"]) == (
        1, 10, [ORGANIZATION], 3)
    code, text, _ = cli_run("-c", str(s.config), "reports", "--since", "3d")
    assert f"{HOST}  certificate {renewal['certificate'][:16]}.. staged " in text
    assert ": 10 session(s) from 1 organisation(s) in 1 report(s), 3 DANE failure(s)" in text

    # status (at the injected clock's time): CRITICAL, naming the organisation, the period and the result type
    _, status = s.status()
    found = {f["code"]: f for f in status["lineages"][0]["findings"]}
    assert found["tlsrpt-rollover-failure"]["severity"] == "CRITICAL"
    text = found["tlsrpt-rollover-failure"]["text"]
    for part in (ORGANIZATION, "3 tlsa-invalid failure(s)", HOST, str(datetime.date.fromtimestamp(yesterday)),
                 "before the gate (--force-before-gate)"):
        assert part in text, text

    # the pipe got the same report into its own store, as nobody
    code, out, _ = cli_run("-c", str(pipe_config), "reports", "--json", "--since", "3d")
    assert (code, json.loads(out)["reports"]) == (0, 1)
    assert (pipe_state / "tlsrpt.sqlite3").stat().st_uid == NOBODY

    # parsedmarc, an independent parser, reads the same numbers from the same message
    message = mailbox.delivered()[0].read_bytes()
    theirs = independent_parser().parse_report_email(message, offline=True)["report"]
    ours = next(tlsrpt.parse(bytes(part.get_payload(decode=True))) for part in email.message_from_bytes(message).walk()
                if part.get_content_type() == "application/tlsrpt+gzip")
    assert (theirs["organization_name"], theirs["report_id"]) == ours.key
    assert sorted((p["successful_session_count"], p["failed_session_count"], tuple(p["policy_strings"]))
                  for p in theirs["policies"]) == sorted(
        (p.total_successful_session_count, p.total_failure_session_count, p.policy_string) for p in ours.policies)
    mailbox.remove()
    assert load(s.config).reports.path(s.tmp / "state").exists()
