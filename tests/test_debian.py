"""The Debian package (`make deb`) installed with apt on this machine and driven by Debian's own certbot.

One test walks the whole life of the package, because installing and removing it is what is tested:
build it with Debian's tools, `apt-get install ./certbot-dane_*.deb`, check what it installed, run
tests/test_compat.py with Debian's python3 and libraries on the installed code, then on
a private sandbox (real named and Pebble) issue with `/usr/bin/certbot run -a dane -i dane`, renew with
Debian's `certbot renew` (authenticator and installer read from the renewal configuration), deploy with
`/usr/bin/certbot-dane deploy` once the gate opens, `status`; the deploy hook way through the packaged
hook; a lineage issued by certbot 5 (this virtualenv), which Debian's certbot skips before the package is
installed and renews after; then `apt-get remove` and `purge`, and nothing of the package is left behind.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sandbox.servers import Sandbox
from tests.conftest import MakeSandbox
from tests.scenario import REPO, Scenario, require_programs

PACKAGE = "certbot-dane"
CERTBOT = "/usr/bin/certbot"
COMMAND = "/usr/bin/certbot-dane"
HOOK = "/usr/share/certbot-dane/hooks/certbot-dane-deploy"
STATE_DIR = Path("/var/lib/certbot-dane")
TTL = 1
LOCK = Path("/run/lock/certbot-dane-test-debian.lock")
SYSTEM_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}
"""What Debian's certbot.timer and certbot-dane.service give their commands: no virtualenv, no pyenv."""

INSTALLED = [
    "/usr/bin/certbot-dane",
    "/usr/lib/python3/dist-packages/certbot_dane/plugin.py",
    "/usr/lib/python3/dist-packages/certbot_dane/compat.py",
    "/usr/lib/python3/dist-packages/certbot_dane-0.1.0.dist-info/entry_points.txt",
    "/usr/share/certbot-dane/certbot-dane.toml.example",
    *(f"/usr/share/certbot-dane/hooks/{hook.name}" for hook in (REPO / "hooks").iterdir()),
    *(f"/lib/systemd/system/{unit.name}" for unit in (REPO / "systemd").glob("certbot-dane.*")),
]
LEFTOVER_GLOBS = [
    ("/usr/lib/python3/dist-packages", "certbot_dane*"),
    ("/usr/share", "certbot-dane"),
    ("/usr/share/doc", "certbot-dane"),
    ("/usr/bin", "certbot-dane*"),
    ("/lib/systemd/system", "certbot-dane*"),
    ("/etc/systemd/system", "**/certbot-dane*"),
    ("/var/lib/systemd", "**/certbot-dane*"),
    ("/var/lib/dpkg/info", "certbot-dane.*"),
    ("/var/lib", "certbot-dane"),
]


class DebianScenario(Scenario):
    """A Scenario whose certbot, certbot-dane and deploy hook are the packaged ones, run as the timer would."""

    def run(self, argv: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        # cwd: never the repository, whose certbot_dane/ would shadow the installed one
        return subprocess.run(argv, env={**SYSTEM_ENV, "CERTBOT_DANE_CONFIG": str(self.config), **(env or {})},
                              cwd=self.tmp, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300)

    def certbot(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self.run([CERTBOT, *self.box.certbot_command(*args)[1:]])

    def issue(self, *domains: str) -> subprocess.CompletedProcess[str]:
        if self.way == "installer":
            return super().issue(*domains)
        return self.certbot("certonly", "-a", "dane", "--dane-config", str(self.config), "--cert-name", self.name,
                            "-d", self.name, "--deploy-hook", HOOK)

    def cli(self, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return self.run([COMMAND, "-c", str(self.deploy_config), *args], env)


@pytest.fixture
def machine_lock() -> Iterator[None]:
    """One package test per machine at a time: concurrent `make test` runs would remove each other's install."""
    require_programs([p for p in ("apt-get", "dpkg", "dpkg-query") if shutil.which(p) is None], "apt dpkg")
    if os.geteuid() != 0:
        require_programs(["root (apt-get install)"], "(run as root)")
    LOCK.parent.mkdir(parents=True, exist_ok=True)
    with LOCK.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def apt_get(*args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(["apt-get", "-y", "-q", "-o", "DPkg::Lock::Timeout=300", *args], capture_output=True,
                          text=True, timeout=900, env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    assert done.returncode == 0, f"apt-get {' '.join(args)}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


def package_status() -> str:
    done = subprocess.run(["dpkg-query", "-W", "-f=${db:Status-Abbrev}", PACKAGE], capture_output=True, text=True)
    return done.stdout.strip() if done.returncode == 0 else "not known"


def certbot_plugins(tmp: Path) -> subprocess.CompletedProcess[str]:
    """`/usr/bin/certbot plugins`, its directories under `tmp` (not /etc/letsencrypt, /var/log/letsencrypt)."""
    dirs = [f"--{kind}-dir={tmp / 'certbot-plugins' / kind}" for kind in ("config", "work", "logs")]
    return subprocess.run([CERTBOT, "plugins", *dirs], env=SYSTEM_ENV, cwd=tmp, capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=120)


def leftovers() -> list[str]:
    return sorted(str(p) for base, pattern in LEFTOVER_GLOBS for p in Path(base).glob(pattern))


def wait_for_gate(s: Scenario) -> None:
    staged = s.state()["staged"]
    assert staged["served_at"] is not None, "the gate clock has not started"
    time.sleep(max(0.0, staged["served_at"] + 2 * TTL + 0.05 - time.time()))


def test_the_package_installs_runs_with_debians_certbot_and_purges_without_a_trace(
        machine_lock: None, make_sandbox: MakeSandbox, tmp_path: Path) -> None:
    done = subprocess.run([str(REPO / "scripts" / "deb.sh"), str(tmp_path / "deb")], capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr
    deb = Path(done.stdout.splitlines()[-1])
    if package_status() != "not known":  # left over by an interrupted run: start from nothing
        apt_get("purge", PACKAGE)
    box = make_sandbox()
    apt_get("install", "--no-install-recommends", "certbot")  # the admin's certbot, there before certbot-dane
    from_venv = issue_with_certbot_5_which_debians_certbot_then_skips(box, tmp_path / "venv")
    try:
        apt_get("install", str(deb))
        check_installed_files(tmp_path)
        check_compat_on_debians_stack(tmp_path)
        check_example_config(box, tmp_path)
        run_installer_lineage(box, tmp_path / "installer")
        run_hook_lineage(box, tmp_path / "hook")
        renew_with_debians_certbot(from_venv)
        (STATE_DIR / "instance").write_text("what a real run leaves in the default state_dir\n")
        apt_get("remove", PACKAGE)
        check_removed(tmp_path)
    finally:
        apt_get("purge", PACKAGE)
    assert package_status() == "not known", "dpkg still knows the package after purge"
    assert leftovers() == []


def check_installed_files(tmp: Path) -> None:
    assert package_status() == "ii"
    for path in INSTALLED:
        assert Path(path).is_file(), path
    assert os.access(HOOK, os.X_OK) and Path(HOOK).read_text().startswith("#! /usr/bin/python3")
    assert "ExecStart=/usr/bin/certbot-dane deploy\n" in Path("/lib/systemd/system/certbot-dane.service").read_text()
    assert stat.S_IMODE(STATE_DIR.stat().st_mode) == 0o700 and STATE_DIR.stat().st_uid == 0
    assert not list(Path("/etc/systemd/system").glob("**/certbot-dane*")), "units must not be enabled"
    where = subprocess.run(["/usr/bin/python3", "-c", "import certbot_dane; print(certbot_dane.__file__)"],
                           env=SYSTEM_ENV, cwd="/", capture_output=True, text=True)
    assert where.stdout.strip() == "/usr/lib/python3/dist-packages/certbot_dane/__init__.py", where
    plugins = certbot_plugins(tmp)
    assert plugins.returncode == 0, plugins.stderr
    assert "* dane\n" in plugins.stdout and "Entry point: dane = certbot_dane.plugin:Plugin" in plugins.stdout


def check_compat_on_debians_stack(tmp: Path) -> None:
    """tests/test_compat.py's functions, run by Debian's python3 on the installed package and Debian's libraries."""
    script = (f"import sys; sys.path.append({str(REPO)!r})\n"  # after dist-packages: the installed certbot_dane
              "import certbot_dane, certbot, dns.version, cryptography, tests.test_compat as t\n"
              "assert certbot_dane.__file__.startswith('/usr/lib/python3/dist-packages/'), certbot_dane.__file__\n"
              "names = sorted(n for n in vars(t) if n.startswith('test_'))\n"
              "for n in names: getattr(t, n)()\n"
              "print(len(names), certbot.__version__, dns.version.version, cryptography.__version__)\n")
    done = subprocess.run(["/usr/bin/python3", "-c", script], env=SYSTEM_ENV, cwd=tmp, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    count, *versions = done.stdout.split()
    assert int(count) >= 6, done.stdout
    certbot, dnspython, cryptography = versions
    print(f"Debian's stack: certbot {certbot}, dnspython {dnspython}, cryptography {cryptography}")


def check_example_config(box: Sandbox, tmp: Path) -> None:
    """The shipped example, pointed at the sandbox, passes `certbot-dane check`."""
    text = Path("/usr/share/certbot-dane/certbot-dane.toml.example").read_text()
    for old, new in (('"192.0.2.53"', '"127.0.0.1"'), ("port = 53\n", f"port = {box.port}\n"),
                     ('"/etc/certbot-dane/tsig.key"', f'"{box.key.path}"'),
                     ('"/var/lib/certbot-dane"', f'"{tmp / "example-state"}"'),
                     ('"/etc/certbot-dane/live"', f'"{tmp / "example-live"}"')):
        assert old in text, old
        text = text.replace(old, new)
    config = tmp / "example.toml"
    config.write_text(text)
    config.chmod(0o600)
    done = subprocess.run([COMMAND, "-c", str(config), "check"], env=SYSTEM_ENV, cwd=tmp, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def run_installer_lineage(box: Sandbox, tmp: Path) -> None:
    """Issue, renew through Debian's `certbot renew`, deploy when the gate opens, status."""
    tmp.mkdir()
    name = "deb-installer.example.org"
    s = DebianScenario(box, tmp, name, [f"_25._tcp.{name}"], ttl=TTL)
    done = s.issue()
    assert done.returncode == 0, done.stderr
    first = s.certbot_cert()
    assert s.deployed() == first, "bootstrap: no TLSA RRset existed, so the first certificate goes live at once"
    old = s.records(first)
    s.wait_until_served(s.tlsa[0], old)
    conf = (box.base / "certbot" / "config" / "renewal" / f"{name}.conf").read_text()
    assert "authenticator = dane\n" in conf and "installer = dane\n" in conf and f"dane_config = {s.config}" in conf

    done = s.certbot("renew", "--force-renewal", "--cert-name", name)  # no -a/-i: from the renewal configuration
    assert done.returncode == 0, done.stderr
    second = s.certbot_cert()
    assert second != first and s.staged() == second and s.deployed() == first
    new = s.records(second)
    s.wait_until_served(s.tlsa[0], old | new)

    done = s.cli("deploy")
    assert done.returncode == 0 and "not deploying yet" in done.stdout, done.stdout + done.stderr
    wait_for_gate(s)
    done = s.cli("deploy")
    assert done.returncode == 0, done.stdout + done.stderr
    assert s.deployed() == second and s.ran.read_text().count("reloaded") == 2
    s.box.primary.wait_for(s.tlsa[0], "TLSA", lambda values: len(values) == 1)
    assert s.tlsa_on(s.tlsa[0]) == new

    done = s.cli("status")
    assert done.returncode == 0 and done.stdout.startswith("DANE OK: 1 lineage(s)"), done.stdout + done.stderr
    assert "dnssec    valid" in done.stdout


def run_hook_lineage(box: Sandbox, tmp: Path) -> None:
    """`certonly -a dane --deploy-hook` with the packaged hook: the renewal is staged, not silently lost."""
    tmp.mkdir()
    name = "deb-hook.example.org"
    s = DebianScenario(box, tmp, name, [f"_25._tcp.{name}"], way="hook", ttl=TTL)
    done = s.issue()
    assert done.returncode == 0, done.stderr
    first = s.certbot_cert()
    assert s.deployed() == first
    done = s.certbot("renew", "--force-renewal", "--cert-name", name)
    assert done.returncode == 0, done.stderr
    assert s.staged() == s.certbot_cert() != first, done.stderr
    s.wait_until_served(s.tlsa[0], s.records(first) | s.records(s.certbot_cert()))


def issue_with_certbot_5_which_debians_certbot_then_skips(box: Sandbox, tmp: Path) -> DebianScenario:
    """A lineage issued by certbot 5 (this virtualenv) with `-a dane -i dane`: without the package, Debian's
    certbot cannot load `dane` and skips it at every renewal (the negative control of renew_with_debians_certbot)."""
    tmp.mkdir()
    name = "deb-from-venv.example.org"
    done = Scenario(box, tmp, name, [f"_25._tcp.{name}"], ttl=TTL).issue()
    assert done.returncode == 0, done.stderr
    debian = DebianScenario(box, tmp, name, [f"_25._tcp.{name}"], ttl=TTL)
    done = debian.certbot("renew", "--force-renewal", "--cert-name", name)
    assert done.returncode == 1 and "object has no attribute 'dane_config'. Skipping." in done.stdout + done.stderr, \
        done.stdout + done.stderr
    return debian


def renew_with_debians_certbot(s: DebianScenario) -> None:
    """With the package installed, Debian's `certbot renew` renews that lineage through the plugin."""
    first = s.certbot_cert()
    done = s.certbot("renew", "--force-renewal", "--cert-name", s.name)
    assert done.returncode == 0 and "Skipping" not in done.stdout + done.stderr, done.stdout + done.stderr
    assert s.staged() == s.certbot_cert() != first


def check_removed(tmp: Path) -> None:
    """`apt-get remove`: code, command, hooks and units gone; Debian's certbot still runs; purge takes the rest."""
    assert package_status() == "rc"
    for path in INSTALLED:
        assert not Path(path).exists(), path
    assert not Path("/usr/lib/python3/dist-packages/certbot_dane").exists(), "py3clean leaves no __pycache__"
    plugins = certbot_plugins(tmp)
    assert plugins.returncode == 0 and "* dane\n" not in plugins.stdout, plugins.stdout + plugins.stderr
    assert (STATE_DIR / "instance").exists(), "remove keeps certbot-dane's state; purge removes it"
