"""A threaded TLS test endpoint on loopback: SMTP/IMAP/POP3 STARTTLS or implicit TLS, reloadable like a service.

Stdlib only, so that `python sandbox/tlsendpoint.py reload HOST:PORT` (the endpoint's `reload_command`, run by
certbot-dane's reload step in end-to-end tests) works without the project on sys.path.
"""

from __future__ import annotations

import argparse
import contextlib
import selectors
import shlex
import socket
import ssl
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Literal

PROTOCOLS = {"smtp": "smtp", "submission": "smtp", "imap": "imap", "pop3": "pop3",
             "submissions": "tls", "imaps": "tls", "pop3s": "tls", "https": "tls"}
"""Verify scheme -> what the endpoint speaks before TLS ("tls": nothing, implicit TLS)."""

Fault = Literal["refuse-starttls", "hang-up", "silent"]
"""refuse-starttls: SMTP 454 / IMAP NO / POP3 -ERR to STARTTLS; hang-up: close right after accept;
silent: accept and never say anything (the client times out)."""

GREETINGS = {"smtp": ("220-mx.sandbox.test ESMTP certbot-dane test endpoint", "220 mx.sandbox.test ready"),
             "imap": ("* OK [CAPABILITY IMAP4rev1 STARTTLS LOGINDISABLED] sandbox IMAP ready",),
             "pop3": ("+OK sandbox POP3 ready",), "tls": ()}
"""What each protocol says first; SMTP's is multi-line on purpose (220-... then 220 ...)."""


class TlsEndpointError(Exception):
    """The endpoint could not start, or could not (re)load its certificate and key."""


class TlsEndpoint:
    """Serve `certfile` (PEM chain, leaf first) and `keyfile` on host:<free port> for one verify scheme.

    Like a real service it reads the files when started and on `reload()` only, resolving any symlink
    (e.g. <deploy_dir>/<lineage>/) at that moment; connections accepted later get what was last loaded.
    """

    def __init__(self, scheme: str, certfile: Path | str, keyfile: Path | str, *, host: str = "127.0.0.1",
                 fault: Fault | None = None, greeting: Sequence[str] | None = None,
                 io_timeout: float = 10.0, port: int = 0) -> None:
        """`port` 0: a free port (see `port`); another: that one (several addresses of one host, one port)."""
        if scheme not in PROTOCOLS:
            raise ValueError(f"unknown scheme {scheme!r}; one of {', '.join(PROTOCOLS)}")
        self.scheme = scheme
        self.protocol = PROTOCOLS[scheme]
        self.certfile = Path(certfile)
        self.keyfile = Path(keyfile)
        self.host = host
        self.fault = fault
        self.greeting = tuple(GREETINGS[self.protocol] if greeting is None else greeting)
        self.io_timeout = io_timeout
        self._port = port
        self.sni: list[str | None] = []
        """The server name each TLS handshake carried (None: no SNI), in order."""
        self.commands: list[str] = []
        """Every plain-text line clients sent (EHLO ..., a1 STARTTLS, STLS, ...)."""
        self.errors: list[str] = []
        """Server-side failures of single connections (e.g. a client that aborted the handshake)."""
        self.reloads = 0
        self._lock = threading.Lock()
        self._context: ssl.SSLContext | None = None
        self._listener: socket.socket | None = None
        self._control: socket.socket | None = None
        self._wake_r, self._wake_w = socket.socketpair()
        self._acceptor: threading.Thread | None = None
        self._workers: list[threading.Thread] = []
        self._open: set[socket.socket] = set()
        self._stopping = False

    @classmethod
    def for_lineage(cls, scheme: str, deploy_dir: Path, lineage: str, *, host: str = "127.0.0.1",
                    fault: Fault | None = None, io_timeout: float = 10.0) -> TlsEndpoint:
        """An endpoint set up like a service that reads <deploy_dir>/<lineage>/fullchain.pem and privkey.pem."""
        live = Path(deploy_dir) / lineage
        return cls(scheme, live / "fullchain.pem", live / "privkey.pem", host=host, fault=fault,
                   io_timeout=io_timeout)

    # -- lifecycle ---------------------------------------------------------------------------------
    def start(self) -> TlsEndpoint:
        """Load the certificate, bind and listen (so clients can connect once this returns), serve in a thread."""
        self._context = self._load()
        try:
            self._listener = self._listen(self._port)
            self._control = self._listen()
        except OSError as err:
            self.stop()
            raise TlsEndpointError(f"cannot listen on {self.host}: {err}") from err
        self._acceptor = threading.Thread(target=self._accept_loop, name=f"tlsendpoint-{self.port}", daemon=True)
        self._acceptor.start()
        return self

    def stop(self) -> None:
        """Stop accepting, cut open connections, and join every thread; safe to call twice."""
        with self._lock:
            self._stopping = True
            open_now = list(self._open)
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")
        if self._acceptor is not None:
            self._acceptor.join()
        for conn in open_now:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        for worker in list(self._workers):
            worker.join()
        for sock in (self._listener, self._control, self._wake_r, self._wake_w):
            if sock is not None:
                sock.close()

    def __enter__(self) -> TlsEndpoint:
        return self.start() if self._listener is None else self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.stop()

    def reload(self) -> None:
        """Re-read the certificate and key from disk for new connections; on failure keep the old ones."""
        context = self._load()
        with self._lock:
            self._context = context
            self.reloads += 1

    # -- what tests and configurations need ----------------------------------------------------------
    @property
    def port(self) -> int:
        """The TCP port clients connect to."""
        if self._listener is None:
            raise TlsEndpointError("the endpoint is not started")
        return int(self._listener.getsockname()[1])

    @property
    def url(self) -> str:
        """`scheme://host:port`, as a certbot-dane `verify` entry."""
        return f"{self.scheme}://{self.host}:{self.port}"

    @property
    def reload_command(self) -> str:
        """A shell-quoted command that makes this endpoint reload and exits 0 once it has (1 on failure)."""
        if self._control is None:
            raise TlsEndpointError("the endpoint is not started")
        control = f"{self.host}:{self._control.getsockname()[1]}"
        return shlex.join([sys.executable, str(Path(__file__).resolve()), "reload", control])

    # -- internals ----------------------------------------------------------------------------------
    def _load(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        try:
            context.load_cert_chain(self.certfile, self.keyfile)
        except (OSError, ssl.SSLError) as err:
            raise TlsEndpointError(f"cannot load {self.certfile} and {self.keyfile}: {err}") from err
        context.sni_callback = self._saw_sni
        return context

    def _saw_sni(self, _conn: ssl.SSLObject | ssl.SSLSocket, server_name: str | None, _ctx: ssl.SSLContext) -> None:
        with self._lock:
            self.sni.append(server_name)

    def _listen(self, port: int = 0) -> socket.socket:
        sock = socket.socket(socket.AF_INET6 if ":" in self.host else socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, port))
            sock.listen(16)
        except OSError:
            sock.close()
            raise
        return sock

    def _accept_loop(self) -> None:
        assert self._listener is not None and self._control is not None
        with selectors.DefaultSelector() as selector:
            selector.register(self._listener, selectors.EVENT_READ, (self._listener, self._serve))
            selector.register(self._control, selectors.EVENT_READ, (self._control, self._serve_control))
            selector.register(self._wake_r, selectors.EVENT_READ, None)
            while True:
                for key, _ in selector.select():
                    if key.data is None:
                        return
                    listener, serve = key.data
                    try:
                        conn, _ = listener.accept()
                    except OSError:  # the client gave up between select() and accept()
                        continue
                    with self._lock:
                        if self._stopping:
                            conn.close()
                            return
                        self._open.add(conn)
                    worker = threading.Thread(target=self._run, args=(serve, conn), daemon=True)
                    self._workers.append(worker)
                    worker.start()

    def _run(self, serve: Callable[[socket.socket], None], conn: socket.socket) -> None:
        try:
            conn.settimeout(self.io_timeout)
            serve(conn)
        except (OSError, EOFError) as err:
            with self._lock:
                self.errors.append(f"{type(err).__name__}: {err}")
        finally:
            with self._lock:
                self._open.discard(conn)
            conn.close()

    def _serve_control(self, conn: socket.socket) -> None:
        stream = conn.makefile("rb", buffering=0)
        if stream.readline(100).strip() != b"reload":
            conn.sendall(b"error: unknown request\n")
            return
        try:
            self.reload()
        except TlsEndpointError as err:
            conn.sendall(f"error: {err}\n".encode())
            return
        conn.sendall(b"ok\n")

    def _serve(self, conn: socket.socket) -> None:
        if self.fault == "hang-up":
            return
        # unbuffered: read the plain-text dialogue byte by byte, so nothing of the ClientHello is consumed
        stream = conn.makefile("rb", buffering=0)
        if self.fault == "silent":
            while stream.read(4096):
                pass
            return
        for line in self.greeting:
            _say(conn, line)
        if self.protocol == "tls" or self._dialogue(conn, stream):
            self._handshake(conn)

    def _dialogue(self, conn: socket.socket, stream: socket.SocketIO) -> bool:
        """Answer plain-text commands until the client asks for TLS (True) or leaves (False)."""
        while line := stream.readline(1024):
            text = line.decode("latin-1").rstrip("\r\n")
            with self._lock:
                self.commands.append(text)
            replies, start_tls = _answer(self.protocol, text, refuse=self.fault == "refuse-starttls")
            for reply in replies:
                _say(conn, reply)
            if start_tls is not None:
                return start_tls
        return False

    def _handshake(self, conn: socket.socket) -> None:
        with self._lock:
            context = self._context
        assert context is not None
        with context.wrap_socket(conn, server_side=True, do_handshake_on_connect=False) as tls:
            with self._lock:
                self._open.add(tls)  # so that stop() can cut a stalled handshake too
            try:
                tls.do_handshake()
                while tls.recv(4096):  # until the client closes (it only wanted the certificate)
                    pass
            finally:
                with self._lock:
                    self._open.discard(tls)


def _say(conn: socket.socket, line: str) -> None:
    conn.sendall(line.encode("latin-1") + b"\r\n")


def _answer(protocol: str, line: str, *, refuse: bool) -> tuple[list[str], bool | None]:
    """Replies to one plain-text command, and True to start TLS / False to hang up / None to go on."""
    if protocol == "smtp":
        verb = line.split(" ", 1)[0].upper()
        if verb in ("EHLO", "HELO"):
            return ["250-mx.sandbox.test", "250-PIPELINING", "250-STARTTLS", "250 8BITMIME"], None
        if verb == "STARTTLS":
            if refuse:
                return ["454 4.7.0 TLS not available due to temporary reason"], None
            return ["220 2.0.0 Ready to start TLS"], True
        if verb == "QUIT":
            return ["221 2.0.0 Bye"], False
        return ["502 5.5.2 Error: command not recognized"], None
    if protocol == "imap":
        tag, _, command = line.partition(" ")
        command = command.upper()
        if command == "STARTTLS":
            if refuse:
                return [f"{tag} NO [UNAVAILABLE] STARTTLS is not available now"], None
            return [f"{tag} OK Begin TLS negotiation now"], True
        if command == "CAPABILITY":
            return ["* CAPABILITY IMAP4rev1 STARTTLS LOGINDISABLED", f"{tag} OK CAPABILITY completed"], None
        if command == "LOGOUT":
            return ["* BYE logging out", f"{tag} OK LOGOUT completed"], False
        return [f"{tag} BAD unknown command"], None
    verb = line.upper()  # pop3
    if verb == "STLS":
        if refuse:
            return ["-ERR TLS not available now"], None
        return ["+OK Begin TLS negotiation"], True
    if verb == "CAPA":
        return ["+OK Capability list follows", "STLS", "."], None
    if verb == "QUIT":
        return ["+OK bye"], False
    return ["-ERR unknown command"], None


def request_reload(control: str, timeout: float = 30.0) -> None:
    """Ask the endpoint whose control address is HOST:PORT to reload; TlsEndpointError if it could not."""
    host, _, port = control.rpartition(":")
    with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout) as sock:
        sock.sendall(b"reload\n")
        reply = sock.makefile("rb").readline().decode().strip()
    if reply != "ok":
        raise TlsEndpointError(reply or "the endpoint closed the control connection")


def main(argv: Sequence[str] | None = None) -> int:
    """`tlsendpoint.py reload HOST:PORT`: what an endpoint's `reload_command` runs."""
    parser = argparse.ArgumentParser(description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("reload", help="make a running endpoint re-read its certificate").add_argument("control")
    args = parser.parse_args(argv)
    try:
        request_reload(args.control)
    except (OSError, TlsEndpointError) as err:
        print(f"tlsendpoint: reload failed: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
