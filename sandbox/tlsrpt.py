"""Real TLSRPT software on loopback: a report made by tlsrpt-reporter and mailed through a real Postfix.

- `ReportMailbox`: Postfix (sandbox.sender.Receiver) as the MX, offering STARTTLS with the certificate
  certbot-dane deploys, and as the report's destination: virtual(8) delivers one address into a Maildir,
  pipe(8) hands another to a command as nobody (`|certbot-dane reports import -`, as a .forward would).
- `dane_session`: what a DANE-validating sender does at that MX (STARTTLS, the presented certificate
  against the TLSA records it holds), and the outcome it reports.
- `Reporter`: tlsrpt-reporter's tlsrpt-collectd (fed one datagram per session in libtlsrpt's wire
  format, as Postfix 3.10's smtp(8) sends through libtlsrpt) and tlsrpt-reportd (which builds the RFC
  8460 report, gzips it and mails it with `sendmail -i -t`, here the mailbox's own Postfix sendmail).

Postfix 3.7 (Debian 12) has no TLSRPT client and Debian 12 ships no libtlsrpt: the sessions are real
STARTTLS handshakes judged by certbot-dane's TLSA matcher, the datagrams are written here.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from certbot_dane import verify
from certbot_dane.config import VerifyTarget
from certbot_dane.errors import VerifyFailed
from certbot_dane.tlsa import served_leaf_matches
from sandbox.sender import Receiver
from sandbox.servers import NOBODY, SandboxError, find_binary

REPORTER_PROGRAMS = ("tlsrpt-collectd", "tlsrpt-reportd", "tlsrpt-fetcher")
"""tlsrpt-reporter's programs (PyPI, the test extra), next to this Python."""

POLICY_TYPES = {"tlsa": 1, "sts": 2, "no-policy-found": 9}  # libtlsrpt's tlsrpt_policy_type_t
RESULT_CODES = {  # libtlsrpt's tlsrpt_failure_t
    "starttls-not-supported": 201, "certificate-host-mismatch": 202, "certificate-not-trusted": 203,
    "certificate-expired": 204, "validation-failure": 205, "sts-policy-fetch-error": 301,
    "sts-policy-invalid": 302, "sts-webpki-invalid": 303, "tlsa-invalid": 304, "dnssec-invalid": 305,
    "dane-required": 306,
}
TIMEOUT = 30.0
_POLL = 0.05


def missing_programs() -> list[str]:
    """tlsrpt-reporter's programs that are not installed next to this Python."""
    return [p for p in REPORTER_PROGRAMS if not (Path(sys.executable).parent / p).exists()]


def wait_until(ready: Callable[[], bool], what: str, timeout: float = TIMEOUT,
               log: Path | None = None) -> None:
    """Poll `ready()` until it holds; SandboxError naming `what` (and the log's end) at the deadline."""
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:]) if log and log.exists() else ""
            raise SandboxError(f"{what}: not after {timeout}s\n{tail}")
        time.sleep(_POLL)


class ReportMailbox(Receiver):
    """Postfix as `hostname` (STARTTLS with `chain_file`) that also delivers report mail for `domain`:
    `maildir_address` into `maildir`, `pipe_address` to `pipe_command` (run as nobody, message on stdin).
    `sendmail_command` submits a message to it as `sendmail -i -t` does."""

    def __init__(self, address: str, chain_file: Path, *, port: int, hostname: str, domain: str,
                 pipe_command: Sequence[str] = ()) -> None:
        super().__init__(address, chain_file, port=port, hostname=hostname)
        self.domain = domain
        self.maildir_address, self.pipe_address = f"tlsrpt@{domain}", f"tlsrpt-pipe@{domain}"
        self.pipe_command = list(pipe_command)
        self.mail = self.workdir / "mail"
        self.maildir = self.mail / "tlsrpt"

    @property
    def sendmail_command(self) -> str:
        """Postfix's sendmail(1) for this instance, as tlsrpt-reportd's `sendmail_script`."""
        return f"{find_binary('sendmail')} -C {self.config_dir} -i -t"

    def start(self) -> None:
        """Make the mail directory (nobody's: virtual(8) delivers as nobody), then start Postfix."""
        self.mail.mkdir(exist_ok=True)
        if os.geteuid() == 0:
            os.chown(self.mail, NOBODY, NOBODY)
        super().start()

    def delivered(self) -> list[Path]:
        """The messages in the Maildir (new/), oldest first."""
        new = self.maildir / "new"
        return sorted(new.iterdir(), key=lambda p: p.stat().st_mtime) if new.is_dir() else []

    def piped(self) -> int:
        """How many messages pipe(8) handed to `pipe_command` and it accepted (exit 0)."""
        log = self.log.read_text(errors="replace") if self.log.exists() else ""
        return log.count("status=sent (delivered via certbotdane service")

    def _main_cf(self) -> str:
        maps = f"inline:{{ {self.maildir_address}=tlsrpt/, {self.pipe_address}=unused/ }}"
        extra = {
            "virtual_mailbox_domains": self.domain,
            "virtual_mailbox_base": self.mail,
            "virtual_mailbox_maps": maps,
            "virtual_uid_maps": f"static:{NOBODY}",
            "virtual_gid_maps": f"static:{NOBODY}",
            "transport_maps": f"inline:{{ {self.pipe_address}=certbotdane: }}",
            "certbotdane_destination_recipient_limit": "1",
            "myorigin": self.hostname,
        }
        return super()._main_cf() + "".join(f"{key} = {value}\n" for key, value in extra.items())

    def _master_cf(self) -> str:
        services = ["pickup unix n - n 60 1 pickup", "virtual unix - n n - - virtual"]
        if self.pipe_command:
            services.append(f"certbotdane unix - n n - - pipe user=nobody argv={' '.join(self.pipe_command)}")
        return super()._master_cf() + "\n".join(services) + "\n"


@dataclass(frozen=True)
class Session:
    """One delivery attempt of a DANE sender: the TLSA records it used and what came of them."""

    tlsa: tuple[str, ...]
    result: str | None  # None: success; else an RFC 8460 result type
    detail: str = ""


def dane_session(address: str, port: int, host: str, tlsa: Sequence[str]) -> Session:
    """STARTTLS with `host`'s MX at `address`:`port`; the leaf it presents against `tlsa` (3 x x records)."""
    try:
        der = verify.served_certificate(VerifyTarget("smtp", host, port), address)
    except VerifyFailed as err:
        return Session(tuple(tlsa), "validation-failure", str(err))
    if served_leaf_matches(der, frozenset(tlsa)):
        return Session(tuple(tlsa), None)
    return Session(tuple(tlsa), "tlsa-invalid", "the certificate presented matches no TLSA record")


class Reporter:
    """tlsrpt-collectd and tlsrpt-reportd of one sending organisation, in `workdir`."""

    def __init__(self, workdir: Path, *, organization: str, contact: str, sendmail_command: str) -> None:
        self.workdir, self.organization, self.contact = workdir, organization, contact
        self.sendmail_command = sendmail_command
        self.socket = workdir / "collectd.socket"
        self.collectd_db = workdir / "collectd.sqlite"
        self.config = workdir / "tlsrpt.cfg"
        self.sent = 0
        self._collectd: subprocess.Popen[bytes] | None = None
        self._reportd: subprocess.Popen[bytes] | None = None

    def _program(self, name: str) -> str:
        path = Path(sys.executable).parent / name
        if not path.exists():
            raise SandboxError(f"{name} not found next to {sys.executable}: pip install -e '.[test]' (tlsrpt-reporter)")
        return str(path)

    def start(self) -> None:
        """Write the configuration and start tlsrpt-collectd on its socket."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        w = self.workdir
        self.config.write_text(
            "[tlsrpt_collectd]\n"
            f"storage = sqlite://{self.collectd_db}\nsocketname = {self.socket}\n"
            f"logfilename = {w / 'collectd.log'}\nlog_level = info\nsockettimeout = 1\n"
            "[tlsrpt_fetcher]\n"
            f"storage = sqlite://{self.collectd_db}\nlogfilename = {w / 'fetcher.log'}\nlog_level = info\n"
            "[tlsrpt_reportd]\n"
            f"organization_name = {self.organization}\ncontact_info = {self.contact}\n"
            f"sender_address = {self.contact}\ndbname = {w / 'reportd.sqlite'}\n"
            f"logfilename = {w / 'reportd.log'}\nlog_level = info\n"
            f"fetchers = {self._program('tlsrpt-fetcher')} --config_file {self.config}\n"
            f"sendmail_script = {self.sendmail_command}\n"
            "interval_main_loop = 1\nspread_out_delivery = 1\nmin_wait_domainlist = 0\nmax_wait_domainlist = 1\n"
            "min_wait_domaindetails = 0\nmax_wait_domaindetails = 1\n",
            encoding="utf-8")
        self._collectd = self._run("tlsrpt-collectd", "collectd.out")
        wait_until(lambda: self.socket.exists(), "tlsrpt-collectd's socket", log=w / "collectd.log")

    def _run(self, name: str, out: str) -> subprocess.Popen[bytes]:
        with (self.workdir / out).open("ab") as handle:
            return subprocess.Popen([self._program(name), "--config_file", str(self.config)], cwd=self.workdir,
                                    stdin=subprocess.DEVNULL, stdout=handle, stderr=subprocess.STDOUT)

    def report(self, session: Session, *, domain: str, record: str, mx_host: str, receiving_ip: str,
               sending_ip: str = "127.0.0.1") -> None:
        """One delivery request's outcome, as libtlsrpt sends it to collectd (one datagram, its key order)."""
        failures = []
        if session.result is not None:
            failures.append({"c": RESULT_CODES[session.result], "s": sending_ip, "n": mx_host, "r": receiving_ip,
                             **({"a": session.detail} if session.detail else {})})
        policy: dict[str, object] = {"policy-type": POLICY_TYPES["tlsa"], "policy-domain": domain,
                                     "policy-string": list(session.tlsa), "mx-host": [mx_host]}
        if failures:
            policy["failure-details"] = failures
        policy.update({"t": len(failures), "f": int(session.result is not None)})
        datagram = json.dumps({"d": domain, "pr": record, "policies": [policy]}).encode()
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.sendto(datagram, str(self.socket))
        self.sent += 1

    def _counted(self) -> int:
        try:
            with sqlite3.connect(f"file:{self.collectd_db}?mode=ro", uri=True) as db:
                return int(db.execute("SELECT coalesce(sum(cntrtotal), 0) FROM finalresults").fetchone()[0])
        except sqlite3.Error:
            return -1

    def close_day(self) -> None:
        """Once collectd holds every session, end its day (SIGUSR2: its development roll-over makes today's
        sessions yesterday's), so that reportd reports on them now rather than after midnight UTC."""
        assert self._collectd is not None
        wait_until(lambda: self._counted() == self.sent, f"tlsrpt-collectd counting {self.sent} session(s)",
                   log=self.workdir / "collectd.log")
        self._collectd.send_signal(signal.SIGUSR2)
        wait_until(lambda: self._counted() == 0, "tlsrpt-collectd's day roll-over", log=self.workdir / "collectd.log")

    def send_reports(self, delivered: Callable[[], bool]) -> None:
        """Run tlsrpt-reportd until `delivered()` (it fetches, aggregates, renders, gzips and mails), then stop it."""
        self._reportd = self._run("tlsrpt-reportd", "reportd.out")
        try:
            wait_until(delivered, "tlsrpt-reportd's report delivered", log=self.workdir / "reportd.log")
        finally:
            self._stop("_reportd")

    def _stop(self, attribute: str) -> None:
        process = getattr(self, attribute)
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        setattr(self, attribute, None)

    def stop(self) -> None:
        """Stop both daemons; idempotent."""
        self._stop("_reportd")
        self._stop("_collectd")
