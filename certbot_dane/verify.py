"""Check what an endpoint serves: connect (STARTTLS where the scheme says so) and fetch its certificate."""

from __future__ import annotations

import socket
import ssl
import time
from typing import BinaryIO

from certbot_dane.config import VerifyTarget
from certbot_dane.errors import VerifyFailed

TIMEOUT = 15.0
"""Seconds one check may take in all (connect, plain-text dialogue, TLS handshake)."""

STARTTLS_SCHEMES = frozenset({"smtp", "submission", "imap", "pop3"})
"""Schemes that start in plain text and upgrade with STARTTLS (SMTP, IMAP) or STLS (POP3)."""
IMPLICIT_TLS_SCHEMES = frozenset({"submissions", "imaps", "pop3s", "https"})
"""Schemes that speak TLS from the first byte."""

_MAX_LINE = 4096  # longer than any legitimate reply line (RFC 5321 allows 512)
_MAX_LINES = 100  # a greeting/EHLO reply/IMAP untagged lines longer than this is not a server we can talk to


class _Dialogue:
    """The plain-text exchange before TLS: one socket, an overall deadline, errors naming the endpoint."""

    def __init__(self, sock: socket.socket, endpoint: str, deadline: float) -> None:
        self.sock = sock
        self.endpoint = endpoint
        self.deadline = deadline
        self.stream: BinaryIO = sock.makefile("rb")

    def fail(self, text: str) -> VerifyFailed:
        return VerifyFailed(f"{self.endpoint}: {text}")

    def send(self, command: str) -> None:
        self.sock.settimeout(_remaining(self.deadline))
        self.sock.sendall(command.encode("ascii") + b"\r\n")

    def line(self, waiting_for: str) -> str:
        """One reply line without its CRLF; VerifyFailed if the server hangs up or sends garbage."""
        self.sock.settimeout(_remaining(self.deadline))
        data = self.stream.readline(_MAX_LINE)
        if not data:
            raise self.fail(f"the server closed the connection while we waited for {waiting_for}")
        if not data.endswith(b"\n"):
            if len(data) < _MAX_LINE:
                raise self.fail(f"the server closed the connection in mid-line while we waited for {waiting_for}")
            raise self.fail(f"reply line longer than {_MAX_LINE} bytes while we waited for {waiting_for}")
        return data.decode("latin-1").rstrip("\r\n")

    def smtp_reply(self, waiting_for: str) -> tuple[str, str]:
        """An SMTP reply (RFC 5321 §4.2): '250-a', '250-b', '250 c' (or a bare '250') -> ('250', 'a | b | c')."""
        lines = []
        for _ in range(_MAX_LINES):
            line = self.line(waiting_for)
            if len(line) < 3 or not line[:3].isdigit() or line[3:4] not in ("", " ", "-"):
                raise self.fail(f"not an SMTP reply while we waited for {waiting_for}: {line[:200]!r}")
            lines.append(line[4:])
            if line[3:4] != "-":
                return line[:3], " | ".join(lines)
        raise self.fail(f"SMTP reply of more than {_MAX_LINES} lines while we waited for {waiting_for}")

    def smtp(self) -> None:
        code, text = self.smtp_reply("the SMTP greeting")
        if code != "220":
            raise self.fail(f"the server refused the session: {code} {text}"[:300])
        self.send("EHLO certbot-dane.invalid")
        code, text = self.smtp_reply("the EHLO reply")
        if code != "250":
            raise self.fail(f"EHLO refused: {code} {text}"[:300])
        self.send("STARTTLS")
        code, text = self.smtp_reply("the STARTTLS reply")
        if code != "220":
            raise self.fail(f"STARTTLS refused: {code} {text}"[:300])

    def imap(self) -> None:
        greeting = self.line("the IMAP greeting")
        if not greeting.upper().startswith("* OK"):  # * PREAUTH / * BYE: no STARTTLS possible (RFC 9051 §6.2.1)
            raise self.fail(f"unexpected IMAP greeting: {greeting}"[:300])
        self.send("a1 STARTTLS")
        for _ in range(_MAX_LINES):
            line = self.line("the STARTTLS reply")
            if not line.startswith("*"):  # untagged lines (e.g. * CAPABILITY) come before the tagged reply
                break
        else:
            raise self.fail(f"more than {_MAX_LINES} untagged IMAP lines after STARTTLS")
        if not line.upper().startswith("A1 OK"):
            raise self.fail(f"STARTTLS refused: {line}"[:300])

    def pop3(self) -> None:
        greeting = self.line("the POP3 greeting")
        if not greeting.startswith("+OK"):
            raise self.fail(f"unexpected POP3 greeting: {greeting}"[:300])
        self.send("STLS")
        line = self.line("the STLS reply")
        if not line.startswith("+OK"):
            raise self.fail(f"STARTTLS (STLS) refused: {line}"[:300])

    def starttls(self, scheme: str) -> None:
        """Speak the plain-text protocol up to the point where the TLS handshake starts."""
        try:
            if scheme in ("smtp", "submission"):
                self.smtp()
            elif scheme == "imap":
                self.imap()
            else:
                self.pop3()
        finally:
            self.stream.close()  # the server sends nothing more until our ClientHello; drop the buffer


def _remaining(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("timed out")
    return left


def served_certificate(target: VerifyTarget, address: str | None = None, *, timeout: float = TIMEOUT) -> bytes:
    """DER of the leaf certificate the endpoint presents (SNI = target host; not validated by PKIX).

    `address` connects there instead of resolving target.host (SNI is still target.host).
    VerifyFailed names the endpoint and the cause; the whole check takes at most `timeout` seconds.
    """
    return served_chain(target, address, timeout=timeout)[0]


def served_chain(target: VerifyTarget, address: str | None = None, *, timeout: float = TIMEOUT,
                 context: ssl.SSLContext | None = None) -> tuple[bytes, ...]:
    """DER of every certificate the endpoint presents, leaf first, as a DANE client sees them
    (`served_certificate` for the rest).

    `context` validates the chain in the handshake instead (an MTA-STS sender's PKIX check, RFC 8461
    §4.2): VerifyFailed caused by ssl.SSLCertVerificationError when it does not validate.
    """
    endpoint = str(target) if address is None else f"{target} (at {address})"
    if target.scheme not in STARTTLS_SCHEMES | IMPLICIT_TLS_SCHEMES:
        raise VerifyFailed(f"{endpoint}: unknown scheme {target.scheme!r}")
    if context is None:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE  # DANE, not the web PKI, decides; the caller compares with TLSA data
    deadline = time.monotonic() + timeout
    try:
        with socket.create_connection((address or target.host, target.port), timeout=timeout) as sock:
            if target.scheme in STARTTLS_SCHEMES:
                _Dialogue(sock, endpoint, deadline).starttls(target.scheme)
            sock.settimeout(_remaining(deadline))
            with context.wrap_socket(sock, server_hostname=target.host) as tls:
                der = tls.getpeercert(binary_form=True)
                chain = _presented(tls)
    except TimeoutError as err:
        raise VerifyFailed(f"{endpoint}: no answer within {timeout:g} s") from err
    except OSError as err:  # refused, unreachable, reset, TLS handshake failure (ssl.SSLError)
        raise VerifyFailed(f"{endpoint}: cannot fetch the certificate: {err}") from err
    if not der:
        raise VerifyFailed(f"{endpoint}: the server presented no certificate")
    return (der, *chain[1:]) if chain and chain[0] == der else (der,)


def _presented(tls: ssl.SSLSocket) -> list[bytes]:
    """The chain the peer sent, leaf first (public from Python 3.13; CPython's `_sslobj` has it since 3.10)."""
    getter = getattr(tls, "get_unverified_chain", None) or getattr(getattr(tls, "_sslobj", None),
                                                                     "get_unverified_chain", None)
    if getter is None:
        return []
    found = getter() or []
    return [c if isinstance(c, bytes) else c.public_bytes(ssl._ssl.ENCODING_DER)  # type: ignore[attr-defined]
            for c in found]
