"""A Debian 12 root booted by systemd-nspawn: a real systemd as PID 1, on the host's loopback, for the units' tests.

The root is built once with mmdebstrap from Debian's archive and cached, keyed by what goes into it (suite,
packages, mirrors, the customisation script): `image()`. Each `Machine` boots it with `--volatile=overlay`
(every write goes to a tmpfs over the cached root, which stays pristine), shares the host's network (no
`--private-network`: the sandbox's named and Pebble on 127.0.0.1 are reachable, and whatever listens in the
machine listens on the host's loopback), and sees this repository and the virtualenv's Python read-only at
their host paths, so `certbot-dane` in the machine is the code under test.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import TracebackType

REPO = Path(__file__).resolve().parent.parent

SUITE = "bookworm"
PACKAGES = ("systemd", "systemd-sysv", "dbus", "postfix", "python3", "libssl3", "libffi8", "libsqlite3-0",
            "procps", "openssl")
"""What the machine holds beyond minbase: systemd as init, Postfix (the service reloaded), the shared libraries
the host's Python needs (python3 brings the rest; Debian's own python3 serves a .venv made from it)."""
MIRRORS = ("deb http://deb.debian.org/debian bookworm main",
           "deb http://deb.debian.org/debian bookworm-updates main",
           "deb http://deb.debian.org/debian-security bookworm-security main")
CUSTOMIZE = r"""
set -eu
root="$1"
# The machine shares the host's network: nothing may start at boot that talks to it or listens on it.
rm -f "$root"/etc/systemd/system/timers.target.wants/*           # apt-daily, e2scrub, fstrim, ...
rm -f "$root"/etc/systemd/system/multi-user.target.wants/postfix.service
printf '# no resolver: everything in the tests is on 127.0.0.0/8\n' > "$root/etc/resolv.conf"
printf 'certbot-dane-test\n' > "$root/etc/hostname"
"""
"""Run by mmdebstrap on the finished root ($1)."""

HOST_PROGRAMS = ("systemd-nspawn", "mmdebstrap", "nsenter")
APT_PACKAGES = "systemd-container mmdebstrap util-linux"
CACHE_ENV = "CERTBOT_DANE_IMAGE_CACHE"
DEFAULT_CACHE = Path("/var/cache/certbot-dane-tests")
BUILD_TIMEOUT = 900.0
BOOT_TIMEOUT = 60.0
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class MachineError(Exception):
    """The root could not be built, or the machine did not boot or stop."""


def missing_programs() -> list[str]:
    """Host programs this module needs that are not installed."""
    return [name for name in HOST_PROGRAMS if shutil.which(name) is None]


def image_key() -> str:
    """What the cached root is made of, hashed: a change to any of it builds a new root."""
    text = "\n".join([SUITE, *PACKAGES, *MIRRORS, CUSTOMIZE])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def image(cache: Path | None = None) -> Path:
    """The cached root for this key, built now (about a minute, once) if it is missing.

    Built in a temporary directory next to it and renamed into place, under a lock: a build killed half-way
    or running in another process never leaves a half-made root under the final name.
    """
    cache = cache or Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE)
    root = cache / f"debian-{SUITE}-{image_key()}"
    if (root / "usr" / "lib" / "systemd" / "systemd").exists():
        return root
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / "build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (root / "usr" / "lib" / "systemd" / "systemd").exists():
            return root
        work = Path(tempfile.mkdtemp(prefix=f".{root.name}.", dir=cache))
        script = work / "customize.sh"
        script.write_text(CUSTOMIZE)
        target = work / "root"
        command = ["mmdebstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}",
                   f"--customize-hook=sh {script} \"$1\"", SUITE, str(target), *MIRRORS]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=BUILD_TIMEOUT, check=False)
            if done.returncode != 0:
                raise MachineError(f"mmdebstrap exited {done.returncode}:\n{done.stderr[-3000:]}")
            target.rename(root)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return root


def host_python_binds() -> list[Path]:
    """What the machine must see for this process's Python to run there: the repository (with .venv) and,
    when the interpreter is not Debian's own under /usr, its installation (pyenv, a build in /opt)."""
    binds = [REPO]
    base = Path(sys.base_prefix).resolve()
    if base != Path("/usr") and REPO not in base.parents and base != REPO:
        binds.append(base)
    return binds


class Machine:
    """One boot of the root; a context manager. `run` executes a command in it (nsenter), as root."""

    def __init__(self, root: Path, log: Path, *, binds: Sequence[Path] = (), name: str = "certbot-dane-test") -> None:
        self.root, self.log, self.name, self.binds = root, log, name, list(binds)
        self.process: subprocess.Popen[bytes] | None = None
        self.leader = 0

    def start(self) -> None:
        """Boot, and return once systemd says the boot finished (running or degraded)."""
        command = ["systemd-nspawn", "--quiet", "--boot", f"--directory={self.root}", "--volatile=overlay",
                   "--register=no", "--keep-unit", "--link-journal=no", "--console=passive", "--resolv-conf=off",
                   "--timezone=off", f"--machine={self.name}",
                   *[f"--bind-ro={path}" for path in self.binds]]
        with open(self.log, "ab") as out:
            self.process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                            start_new_session=True)
        deadline = time.monotonic() + BOOT_TIMEOUT
        while not self.leader:
            self._check_alive(deadline)
            self.leader = self._find_leader()
            time.sleep(0.05)
        while True:
            self._check_alive(deadline)
            done = self.run(["systemctl", "is-system-running", "--wait"], timeout=max(1.0, deadline - time.monotonic()))
            if done.stdout.strip() in ("running", "degraded"):
                return
            time.sleep(0.1)  # PID 1's socket is not there yet: ask again (bounded by the deadline)

    def _check_alive(self, deadline: float) -> None:
        assert self.process is not None
        if self.process.poll() is not None:
            raise MachineError(f"systemd-nspawn exited {self.process.returncode}:\n{self.log_tail()}")
        if time.monotonic() > deadline:
            raise MachineError(f"the machine did not boot within {BOOT_TIMEOUT:.0f} s:\n{self.log_tail()}")

    def _find_leader(self) -> int:
        """The machine's PID 1 (seen from the host): the child of systemd-nspawn that is pid 1 in its namespace."""
        assert self.process is not None
        with contextlib.suppress(OSError):
            for child in Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children").read_text().split():
                for line in Path(f"/proc/{child}/status").read_text().splitlines():
                    if line.startswith("NSpid:") and line.split()[-1] == "1" and len(line.split()) > 2:
                        return int(child)
        return 0

    def log_tail(self, lines: int = 40) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def run(self, args: Sequence[str], *, input: str | None = None, timeout: float = 120.0, check: bool = False,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """Run a command in the machine's namespaces (mount, pid, uts, ipc, cgroup; the host's network), as root."""
        environment = {"PATH": PATH, "LANG": "C.UTF-8", "HOME": "/root", **(env or {})}
        command = ["nsenter", f"--target={self.leader}", "--mount", "--uts", "--ipc", "--pid", "--cgroup",
                   "--", "env", "-i", *[f"{k}={v}" for k, v in environment.items()], *args]
        done = subprocess.run(command, input=input, capture_output=True, text=True, timeout=timeout, check=False)
        if check and done.returncode != 0:
            raise MachineError(f"{' '.join(args)} exited {done.returncode}: {(done.stdout + done.stderr)[-2000:]}")
        return done

    def write(self, path: str, text: str, mode: int = 0o644) -> None:
        """Write a file in the machine (parents created)."""
        self.run(["sh", "-c", 'mkdir -p "$(dirname "$1")" && cat > "$1" && chmod "$2" "$1"', "sh", path,
                  f"{mode:o}"], input=text, check=True)

    def stop(self) -> None:
        """Power off (SIGTERM to systemd-nspawn asks PID 1 to), killing it after a grace period."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)

    def __enter__(self) -> Machine:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.stop()


@contextlib.contextmanager
def booted(workdir: Path, name: str = "certbot-dane-test") -> Iterator[Machine]:
    """A booted machine of the cached root, with this repository and its Python visible read-only."""
    with Machine(image(), workdir / f"{name}.log", binds=host_python_binds(), name=name) as machine:
        yield machine


if __name__ == "__main__":  # scripts/test.sh: build the cached root before the tests (network only here)
    print(f"nspawn root: {image()}")
