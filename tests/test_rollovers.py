"""Rollover history as values: the applier's lines picked apart, and the windows a lineage's events make."""

from __future__ import annotations

import pytest

from certbot_dane.rollovers import GRACE, Event, Window, from_line, windows

HOSTS = ("mx.example.org",)


@pytest.mark.parametrize("text, kind, detail", [
    ("staged certificate 0123456789abcdef in /var/lib/certbot-dane/staging/mx/0123", "stage", "0123456789abcdef"),
    ("deploy certificate 0123456789abcdef to /etc/certbot-dane/live/mx", "deploy", "0123456789abcdef"),
    ("EMERGENCY deploy before the gate (expires in 1 day): DANE-validating senders ...", "forced", ""),
    ("retire _25._tcp.mx.example.org. TLSA 3 0 1 7b06a8fa..", "retire", "_25._tcp.mx.example.org. TLSA 3"),
    ("publish _25._tcp.mx.example.org. TLSA 3 0 1 7b06a8fa..", None, None),
    ("release _25._tcp.mx.example.org. TLSA 3 0 1 7b.. (still claimed by x)", None, None),
    ("not deploying yet: waiting 2 x TTL", None, None),
    ("certificate 0123456789abcdef is already deployed or staged", None, None),
])
def test_only_the_steps_of_a_rollover_become_events(text: str, kind: str | None, detail: str | None) -> None:
    event = from_line(5.0, "mx", text, HOSTS)
    if kind is None:
        assert event is None
    else:
        assert event == Event(5.0, "mx", kind, HOSTS, detail or "")


def test_an_event_is_read_back_exactly_and_a_torn_line_is_refused() -> None:
    event = Event(1.5, "mx", "deploy", HOSTS, "ab" * 8)
    assert Event.from_json(event.to_json()) == event
    for bad in ({"at": 1, "lineage": "mx"}, {"at": "1", "lineage": "mx", "event": "stage"},
                {"at": 1, "lineage": "mx", "event": "explode"}, {"at": True, "lineage": "mx", "event": "stage"}):
        with pytest.raises(ValueError, match="not a rollover event"):
            Event.from_json(bad)


def ev(at: float, kind: str, detail: str = "", lineage: str = "mx") -> Event:
    return Event(at, lineage, kind, HOSTS, detail)


@pytest.mark.parametrize("events, expected", [
    ([], []),
    # a whole rollover: staged, deployed, retired
    ([ev(100, "stage", "aa"), ev(200, "deploy", "aa"), ev(201, "retire", "r1"), ev(201, "retire", "r2")],
     [Window("mx", HOSTS, "aa", 100, 200, 201)]),
    # staged and still waiting for its gate: in progress, open-ended
    ([ev(100, "stage", "aa")], [Window("mx", HOSTS, "aa", 100, waiting=True)]),
    # a first certificate: staged and deployed at once, nothing to retire
    ([ev(100, "stage", "aa"), ev(100, "deploy", "aa")], [Window("mx", HOSTS, "aa", 100, 100)]),
    # forced before the gate
    ([ev(100, "stage", "aa"), ev(150, "forced"), ev(150, "deploy", "aa"), ev(160, "retire")],
     [Window("mx", HOSTS, "aa", 100, 150, 160, forced=True)]),
    # a newer renewal replaces a staged certificate that never went live
    ([ev(100, "stage", "aa"), ev(300, "stage", "bb"), ev(400, "deploy", "bb")],
     [Window("mx", HOSTS, "aa", 100), Window("mx", HOSTS, "bb", 300, 400)]),
    # a retire with no deploy before it (records of changed params) is no rollover; a deploy with no stage starts one
    ([ev(50, "retire"), ev(100, "deploy", "aa"), ev(110, "retire")], [Window("mx", HOSTS, "aa", None, 100, 110)]),
    # two lineages, interleaved
    ([ev(100, "stage", "aa"), ev(120, "stage", "cc", "rsa"), ev(200, "deploy", "aa"), ev(210, "deploy", "cc", "rsa")],
     [Window("mx", HOSTS, "aa", 100, 200), Window("rsa", HOSTS, "cc", 120, 210)]),
])
def test_events_make_windows(events: list[Event], expected: list[Window]) -> None:
    assert list(windows(reversed(events))) == expected, "order of the log does not matter, time does"


def test_a_window_counts_from_its_first_step_to_the_grace_after_its_last() -> None:
    done = Window("mx", HOSTS, "aa", 100, 200, 300)
    assert (done.start, done.end) == (100, 300 + GRACE)
    assert done.overlaps(0, 100) and done.overlaps(300 + GRACE, 10**6) and done.overlaps(150, 160)
    assert not done.overlaps(0, 99) and not done.overlaps(301 + GRACE, 10**6)
    waiting = Window("mx", HOSTS, "aa", 100, waiting=True)
    assert waiting.end is None and waiting.overlaps(10**9, 10**9 + 1)
    assert done.serves("MX.example.org.") and not done.serves("mx2.example.org")
