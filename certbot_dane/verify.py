"""Check what an endpoint serves: connect (STARTTLS where the scheme says so) and fetch its certificate."""

from __future__ import annotations

import socket
import ssl

from certbot_dane.config import VerifyTarget
from certbot_dane.errors import VerifyFailed

TIMEOUT = 15
_STARTTLS = {"smtp", "submission", "imap", "pop3"}


def _line(sock_file: socket.SocketIO | object, target: VerifyTarget) -> str:
    data = sock_file.readline()  # type: ignore[attr-defined]
    if not data:
        raise VerifyFailed(f"{target}: connection closed before STARTTLS")
    return str(data.decode("latin-1")).rstrip("\r\n")


def _starttls(sock: socket.socket, target: VerifyTarget) -> None:
    """Speak the plain-text protocol up to the point where TLS starts."""
    stream = sock.makefile("rb")
    if target.scheme in ("smtp", "submission"):
        while not (line := _line(stream, target))[3:4] == " ":
            pass
        sock.sendall(b"EHLO certbot-dane.invalid\r\n")
        while (line := _line(stream, target))[3:4] == "-":
            pass
        sock.sendall(b"STARTTLS\r\n")
        line = _line(stream, target)
        ok = line.startswith("220")
    elif target.scheme == "imap":
        _line(stream, target)
        sock.sendall(b"a1 STARTTLS\r\n")
        while (line := _line(stream, target)).startswith("*"):
            pass
        ok = line.startswith("a1 OK")
    else:  # pop3
        _line(stream, target)
        sock.sendall(b"STLS\r\n")
        line = _line(stream, target)
        ok = line.startswith("+OK")
    if not ok:
        raise VerifyFailed(f"{target}: STARTTLS refused: {line[:200]}")


def served_certificate(target: VerifyTarget, address: str | None = None) -> bytes:
    """DER of the leaf certificate the endpoint presents (SNI = target host; not validated by PKIX)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # DANE, not the web PKI, decides; we compare with TLSA data
    try:
        with socket.create_connection((address or target.host, target.port), timeout=TIMEOUT) as sock:
            if target.scheme in _STARTTLS:
                _starttls(sock, target)
            with context.wrap_socket(sock, server_hostname=target.host) as tls:
                der = tls.getpeercert(binary_form=True)
    except (OSError, ssl.SSLError) as err:
        raise VerifyFailed(f"{target}: cannot fetch the certificate: {err}") from err
    if not der:
        raise VerifyFailed(f"{target}: the server presented no certificate")
    return der
