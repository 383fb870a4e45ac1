"""Debian's nginx as an MTA-STS policy host on loopback: its own config, a foreground process, HTTPS on :443.

As an admin runs it for `https://mta-sts.<domain>/.well-known/mta-sts.txt` (RFC 8461 §3.3): one
server block per domain, the certificate and key read once at start (and on `reload`), the policy file
served from the site's root as text/plain. Never the system service: a private prefix, pid file and
logs, the master in the foreground (`daemon off`), workers as nobody.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

from sandbox.servers import NOBODY, SandboxError, ensure_loopback_address, find_binary

NGINX_APT_PACKAGE = "nginx"
"""Debian's nginx (1.22 on Debian 12)."""

START_TIMEOUT = 20.0
_POLL = 0.05


def pick_address(port: int = 443) -> str:
    """A 127.0.43.x address whose TCP `port` is free (concurrent test runs each get their own), on `lo`."""
    for last in range(10, 254):
        address = f"127.0.43.{last}"
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((address, port))
            except OSError:
                continue
        ensure_loopback_address(address)
        return address
    raise SandboxError(f"no 127.0.43.x address with TCP port {port} free")


class Nginx:
    """nginx serving each domain's MTA-STS site from `roots[domain]` on `address`:`port` over HTTPS.

    `certfile` (leaf and chain, PEM) and `keyfile` are what the admin points `ssl_certificate` and
    `ssl_certificate_key` at; one certificate names every `mta-sts.<domain>` host.
    """

    def __init__(self, address: str, certfile: Path, keyfile: Path, roots: Mapping[str, Path], *,
                 port: int = 443) -> None:
        """Describe the server; nothing is written or started before `start()`."""
        self.address, self.port, self.certfile, self.keyfile = address, port, certfile, keyfile
        self.roots = dict(roots)
        self.workdir = Path(tempfile.mkdtemp(prefix="certbot-dane-nginx-"))
        self.workdir.chmod(0o755)
        self.log = self.workdir / "error.log"
        self._process: subprocess.Popen[bytes] | None = None

    @staticmethod
    def missing() -> list[str]:
        """The programs this needs that are not installed."""
        return [name for name in ("nginx", "setpriv") if find_binary(name) is None]

    def start(self) -> Nginx:
        """Write nginx.conf and run the master in the foreground; return once it answers TLS on the port."""
        nginx = find_binary("nginx")
        setpriv = find_binary("setpriv")
        if nginx is None or setpriv is None:
            raise SandboxError(f"nginx or setpriv not found: apt-get install {NGINX_APT_PACKAGE} util-linux")
        ensure_loopback_address(self.address)
        for sub in ("tmp", "logs"):
            (self.workdir / sub).mkdir(exist_ok=True)
        if os.geteuid() == 0:
            os.chown(self.workdir / "tmp", NOBODY, NOBODY)
        config = self.workdir / "nginx.conf"
        config.write_text(self._config(), encoding="utf-8")
        check = subprocess.run([str(nginx), "-t", "-q", "-p", f"{self.workdir}/", "-c", str(config)],
                               capture_output=True, text=True, timeout=30, check=False)
        if check.returncode != 0:
            raise SandboxError(f"nginx -t refused {config}: {(check.stdout + check.stderr).strip()}")
        with (self.workdir / "nginx.out").open("ab") as out:
            self._process = subprocess.Popen(
                [str(setpriv), "--pdeathsig", "TERM", str(nginx), "-p", f"{self.workdir}/", "-c", str(config)],
                cwd=self.workdir, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + START_TIMEOUT
        while not self._listening():
            if self._process.poll() is not None:
                raise SandboxError(f"nginx exited {self._process.returncode}:\n{self._tail()}")
            if time.monotonic() > deadline:
                self.stop()
                raise SandboxError(f"nginx not listening on {self.address}:{self.port} after {START_TIMEOUT}s")
            time.sleep(_POLL)
        return self

    def reload(self) -> None:
        """SIGHUP: read the configuration, certificate and key again (new workers serve new connections)."""
        if self._process is not None:
            self._process.send_signal(signal.SIGHUP)

    def stop(self) -> None:
        """Fast shutdown (SIGTERM) of the master and its workers; idempotent."""
        if self._process is None:
            return
        if self._process.poll() is None:
            self._process.send_signal(signal.SIGTERM)
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._process = None
        deadline = time.monotonic() + 10
        while self._listening() and time.monotonic() < deadline:  # workers exit a moment after the master
            time.sleep(_POLL)

    def __enter__(self) -> Nginx:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.stop()

    def _listening(self) -> bool:
        try:
            with socket.create_connection((self.address, self.port), timeout=1.0):
                return True
        except OSError:
            return False

    def _tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def _config(self) -> str:
        user = "user nobody nogroup;\n" if os.geteuid() == 0 else ""
        temp = "".join(f"    {kind}_temp_path tmp/{kind};\n"
                       for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
        servers = "".join(
            f"    server {{\n"
            f"        listen {self.address}:{self.port} ssl;\n"
            f"        server_name mta-sts.{domain};\n"
            f"        ssl_certificate {self.certfile};\n"
            f"        ssl_certificate_key {self.keyfile};\n"
            f"        root {root};\n"
            f"        location = /.well-known/mta-sts.txt {{ default_type text/plain; try_files $uri =404; }}\n"
            f"        location / {{ return 404; }}\n"
            f"    }}\n"
            for domain, root in sorted(self.roots.items()))
        return (f"{user}daemon off;\nworker_processes 1;\npid {self.workdir}/nginx.pid;\n"
                f"error_log {self.log} notice;\n"
                "events { worker_connections 64; }\n"
                "http {\n"
                f"    access_log {self.workdir}/access.log;\n{temp}"
                "    types { }\n"
                f"{servers}}}\n")
