"""Fixtures that run real `named` and Pebble on loopback (see shared/TESTBED.md)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from sandbox.servers import APT_PACKAGES, Sandbox, missing_binaries

REAL_SERVER_FIXTURES = frozenset({"sandbox", "make_sandbox"})
"""Fixtures that start real servers: tests using them get the `realservers` marker."""

MakeSandbox = Callable[..., Sandbox]
"""`make_sandbox(*, secondary=False, pebble=True) -> Sandbox`, started."""


def pytest_configure(config: pytest.Config) -> None:
    """Register the `realservers` marker."""
    config.addinivalue_line("markers", "realservers: runs real named/Pebble processes on 127.0.0.0/8")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that uses a real-server fixture, so `-m 'not realservers'` works."""
    for item in items:
        if REAL_SERVER_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.realservers)


def require_real_servers() -> None:
    """Skip (or, in CI, fail loudly) when a server binary is missing."""
    missing = missing_binaries()
    if not missing:
        return
    message = f"real-server tests: missing {', '.join(missing)}; apt-get install {APT_PACKAGES}"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    """One primary, a lagging secondary and Pebble for the whole session; use unique names."""
    require_real_servers()
    with Sandbox(tmp_path_factory.mktemp("sandbox"), secondary=True, pebble=True) as started:
        yield started


@pytest.fixture
def make_sandbox(tmp_path: Path) -> Iterator[MakeSandbox]:
    """A factory of private, started sandboxes for tests that stop or break servers."""
    require_real_servers()
    started: list[Sandbox] = []

    def make(*, secondary: bool = False, pebble: bool = True) -> Sandbox:
        box = Sandbox(tmp_path / f"sandbox{len(started)}", secondary=secondary, pebble=pebble)
        started.append(box)
        box.start()
        return box

    yield make
    for box in started:
        box.stop()
