"""Fixtures that run real `named`, Knot, PowerDNS and Pebble on loopback (see shared/TESTBED.md)."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from sandbox.servers import (
    KNOT_APT_PACKAGES,
    POWERDNS_APT_PACKAGES,
    PRIMARY_ADDRESS,
    SERVER_KINDS,
    KnotServer,
    PowerDnsServer,
    Sandbox,
    free_port,
    generate_tsig_key,
    missing_binaries,
)
from tests.scenario import MakeSandbox, require_programs, require_real_servers

REAL_SERVER_FIXTURES = frozenset({"sandbox", "make_sandbox", "server_sandbox", "knot", "powerdns", "powerdns_lua"})
"""Fixtures that start real servers: tests using them get the `realservers` marker."""



@pytest.fixture
def public_tmp() -> Iterator[Path]:
    """A work directory other users (`nobody`, the monitoring user, a mail pipe) may enter, unlike
    pytest's tmp_path, which is private to root."""
    path = Path(tempfile.mkdtemp(prefix="certbot-dane-public-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def pytest_configure(config: pytest.Config) -> None:
    """Register the `realservers` marker."""
    config.addinivalue_line("markers", "realservers: runs real named/Pebble processes on 127.0.0.0/8")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that uses a real-server fixture, so `-m 'not realservers'` works."""
    for item in items:
        if REAL_SERVER_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.realservers)


@pytest.fixture(scope="session")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    """One named primary, a lagging secondary and Pebble for the whole session; use unique names."""
    require_real_servers()
    with Sandbox(tmp_path_factory.mktemp("sandbox"), secondary=True, pebble=True) as started:
        yield started


@pytest.fixture(scope="session", params=SERVER_KINDS)
def server_sandbox(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    """The sandbox of each DNS server in turn (BIND, Knot, PowerDNS): the same zones, grants, lagging
    secondary and Pebble on each; the BIND one is the session's `sandbox`. Use unique names."""
    kind: str = request.param
    if kind == "bind":
        yield request.getfixturevalue("sandbox")
        return
    require_real_servers(kind)
    with Sandbox(tmp_path_factory.mktemp(f"sandbox-{kind}"), server=kind, secondary=True, pebble=True) as started:
        yield started


@pytest.fixture
def make_sandbox(tmp_path: Path) -> Iterator[MakeSandbox]:
    """A factory of private, started sandboxes for tests that stop or break servers."""
    started: list[Sandbox] = []

    def make(*, server: str = "bind", secondary: bool = False, pebble: bool = True) -> Sandbox:
        require_real_servers(server)
        box = Sandbox(tmp_path / f"sandbox{len(started)}", server=server, secondary=secondary, pebble=pebble)
        started.append(box)
        box.start()
        return box

    yield make
    for box in started:
        box.close()


@pytest.fixture(scope="session")
def knot(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KnotServer]:
    """A Knot DNS primary serving sandbox.servers.KNOT_ZONES for the whole session.

    `knot.key` may update what each zone grants; `knot.other_keys[0]` (intruder.) is known and
    granted nothing. Use unique names.
    """
    require_programs(missing_binaries(("tsig-keygen",)) + KnotServer.missing(), f"bind9-utils {KNOT_APT_PACKAGES}")
    keys = tmp_path_factory.mktemp("knot-keys")
    workdir = Path(tempfile.mkdtemp(prefix="certbot-dane-knot-"))  # Knot needs searchable parents
    server = KnotServer("knot", PRIMARY_ADDRESS, free_port([PRIMARY_ADDRESS]), workdir,
                        key=generate_tsig_key("certbot-dane.", keys),
                        other_keys=(generate_tsig_key("intruder.", keys),))
    yield from _running(server, workdir)


@pytest.fixture(scope="session")
def powerdns(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PowerDnsServer]:
    """A PowerDNS primary serving sandbox.servers.POWERDNS_ZONES, updates allowed by zone metadata."""
    yield from _powerdns(tmp_path_factory, lua_policy=False)


@pytest.fixture(scope="session")
def powerdns_lua(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PowerDnsServer]:
    """A PowerDNS primary whose lua-dnsupdate-policy-script grants each zone's types (and drops the rest)."""
    yield from _powerdns(tmp_path_factory, lua_policy=True)


def _powerdns(tmp_path_factory: pytest.TempPathFactory, *, lua_policy: bool) -> Iterator[PowerDnsServer]:
    require_programs(missing_binaries(("tsig-keygen",)) + PowerDnsServer.missing(),
                     f"bind9-utils {POWERDNS_APT_PACKAGES}")
    label = "powerdns-lua" if lua_policy else "powerdns"
    keys = tmp_path_factory.mktemp(f"{label}-keys")
    workdir = Path(tempfile.mkdtemp(prefix=f"certbot-dane-{label}-"))  # SQLite needs searchable parents
    server = PowerDnsServer(label, PRIMARY_ADDRESS, free_port([PRIMARY_ADDRESS]), workdir,
                            key=generate_tsig_key("certbot-dane.", keys), lua_policy=lua_policy)
    yield from _running(server, workdir)


S = TypeVar("S", KnotServer, PowerDnsServer)


def _running(server: S, workdir: Path) -> Iterator[S]:
    """Start a server for a fixture; stop it and remove its working directory afterwards."""
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)
