"""The propagation wait loop, driven by a scripted clock (the real-server path is in test_plugin)."""

from __future__ import annotations

import pytest

from certbot_dane.config import Endpoint
from certbot_dane.errors import PropagationTimeout
from certbot_dane.propagation import wait_until_served
from certbot_dane.records import Answer, NoAnswer, Record, Reply

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


def served_after(schedule: dict[Endpoint, float | None], clock: Clock, extra: frozenset[str] = frozenset()):
    """A `look` over servers that start serving REC at the given times (None: never answer)."""
    def one(server: Endpoint) -> Reply:
        if schedule[server] is None:
            return NoAnswer(f"{server}: no answer within 1s")
        if clock.now >= schedule[server]:
            return Answer("NOERROR", frozenset({REC.value}) | extra, 60)
        return Answer("NXDOMAIN", frozenset())

    def look(questions):
        return {q: one(q[0]) for q in questions}
    return look


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


def test_an_error_rcode_is_lagging_and_named():
    clock = Clock()

    def look(questions):
        return {q: Answer("SERVFAIL", frozenset()) if q[0] == B else Answer("NOERROR", frozenset({REC.value}))
                for q in questions}
    with pytest.raises(PropagationTimeout, match=r"127.0.0.2:53 .*\(answered: SERVFAIL\)"):
        wait_until_served(lambda r: (A, B), [REC], look, 2, clock, clock.pause)


def test_each_round_asks_only_the_servers_still_lagging():
    clock = Clock()
    asked: list[set[Endpoint]] = []
    served = served_after({A: 0, B: 2.0}, clock)

    def look(questions):
        asked.append({q[0] for q in questions})
        return served(questions)
    wait_until_served(lambda r: (A, B), [REC], look, 30, clock, clock.pause)
    assert asked[0] == {A, B} and all(round_ == {B} for round_ in asked[1:]) and len(asked) > 1
