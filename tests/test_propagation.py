"""The propagation wait loop, driven by a scripted clock (the real-server path is in test_plugin)."""

from __future__ import annotations

import pytest

from certbot_dane.config import Endpoint
from certbot_dane.errors import PropagationTimeout, ServerUnreachable
from certbot_dane.propagation import wait_until_served
from certbot_dane.records import Answer, Record

A, B = Endpoint("127.0.0.1", 53), Endpoint("127.0.0.2", 53)
REC = Record.txt("_acme-challenge.mx.example.org", "token")


class Clock:
    """Time that advances only when the loop pauses."""

    def __init__(self) -> None:
        self.now = 0.0
        self.pauses: list[float] = []

    def __call__(self) -> float:
        return self.now

    def pause(self, seconds: float) -> None:
        self.pauses.append(seconds)
        self.now += seconds


def served_after(schedule: dict[Endpoint, float], clock: Clock, extra: frozenset[str] = frozenset()):
    def ask(server: Endpoint, name: str, rdtype: str) -> Answer:
        if schedule[server] is None:
            raise ServerUnreachable(f"{server}: no answer within 1s")
        if clock.now >= schedule[server]:
            return Answer("NOERROR", frozenset({REC.value}) | extra, 60)
        return Answer("NXDOMAIN", frozenset())
    return ask


def test_returns_as_soon_as_every_server_serves_the_record():
    clock = Clock()
    wait_until_served(lambda r: (A, B), [REC], served_after({A: 0, B: 2.0}, clock), 30, clock, clock.pause)
    assert 2.0 <= clock.now < 3.5  # waited for B, not a fixed period


def test_no_pause_when_already_served():
    clock = Clock()
    wait_until_served(lambda r: (A,), [REC], served_after({A: 0}, clock), 30, clock, clock.pause)
    assert clock.pauses == []


def test_other_values_at_the_name_do_not_matter():
    clock = Clock()
    ask = served_after({A: 0}, clock, frozenset({'"other"'}))
    wait_until_served(lambda r: (A,), [REC], ask, 30, clock, clock.pause)
    assert clock.pauses == []


def test_pauses_grow_but_stay_short():
    clock = Clock()
    wait_until_served(lambda r: (A,), [REC], served_after({A: 20}, clock), 30, clock, clock.pause)
    assert clock.pauses[0] < 0.1 and max(clock.pauses) <= 1.0


def test_timeout_names_the_lagging_server_and_what_it_answered():
    clock = Clock()
    with pytest.raises(PropagationTimeout) as info:
        wait_until_served(lambda r: (A, B), [REC], served_after({A: 0, B: 99}, clock), 5, clock, clock.pause)
    message = str(info.value)
    assert "timed out after 5s" in message
    assert "127.0.0.2:53 for _acme-challenge.mx.example.org. TXT (answered: NXDOMAIN)" in message
    assert "127.0.0.1:53" not in message


def test_unreachable_server_counts_as_lagging_and_is_named():
    clock = Clock()
    with pytest.raises(PropagationTimeout, match=r"127.0.0.2:53 .*no answer"):
        wait_until_served(lambda r: (A, B), [REC], served_after({A: 0, B: None}, clock), 3, clock, clock.pause)
