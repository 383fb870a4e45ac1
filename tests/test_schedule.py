"""schedule.next_wake: the next moment anything can change, from a run's gates, states and failures (pure)."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from certbot_dane.rollover import Gate, LineageState, Published, Staged
from certbot_dane.schedule import (
    CLOCK_BEHIND,
    CONVERGE,
    POLL_FIRST,
    POLL_MAX,
    RETRY_FIRST,
    RETRY_MAX,
    SOON,
    next_wake,
    poll_delay,
    retry_delay,
)

NOW = 1_800_000_000.0
NEW = "3 0 1 " + "ab" * 32


def staged(published_ago: float | None = 0.0) -> LineageState:
    """A lineage with a staged version whose record was published `published_ago` seconds before NOW."""
    version = Staged("f" * 64, (NEW,), staged_at=NOW - 3600)
    published = () if published_ago is None else (Published("_25._tcp.mx.example.org.", NEW, NOW - published_ago),)
    return LineageState("mx.example.org", staged=version, published=published)


def waiting_for_ttl(safe_at: float) -> Gate:
    return Gate(False, NOW - 1, safe_at, "waiting 2 x TTL (600s) for caches to expire")


def lagging() -> Gate:
    return Gate(False, None, None, "waiting for 1 server answer(s) to include the new records",
                ("127.0.0.2:53 for _25._tcp.mx.example.org.: no answer: timeout",))


def test_nothing_pending_leaves_the_convergence_check_to_the_timer() -> None:
    wake = next_wake({}, (), NOW)
    assert (wake.at, wake.reason, wake.failures, wake.early, wake.steady) == \
        (NOW + CONVERGE, "convergence check", 0, False, True)


def test_a_certificate_waiting_out_the_ttls_wakes_at_its_safe_moment() -> None:
    wake = next_wake({"mx": (staged(), waiting_for_ttl(NOW + 597.5))}, (), NOW)
    assert (wake.at, wake.reason, wake.early, wake.steady) == (NOW + 597.5, "mx: safe moment", True, False)


def test_the_earliest_safe_moment_of_several_lineages_wins() -> None:
    wake = next_wake({"late": (staged(), waiting_for_ttl(NOW + 600)), "soon": (staged(), waiting_for_ttl(NOW + 40)),
                      "later": (staged(), waiting_for_ttl(NOW + 900))}, (), NOW)
    assert (wake.at, wake.reason) == (NOW + 40, "soon: safe moment")


def test_a_safe_moment_past_on_the_wall_clock_but_not_on_the_uptime_clock_is_not_a_busy_loop() -> None:
    """The gate counts uptime; its moment for humans is on the wall clock, which may be a second ahead."""
    wake = next_wake({"mx": (staged(), waiting_for_ttl(NOW - 0.5))}, (), NOW)
    assert wake.at == NOW + SOON and wake.early


def test_a_safe_moment_beyond_the_convergence_check_is_left_to_it() -> None:
    """min_wait of a day: the timer's run comes first and decides again."""
    wake = next_wake({"mx": (staged(), waiting_for_ttl(NOW + 86400))}, (), NOW)
    assert (wake.at, wake.reason, wake.early) == (NOW + CONVERGE, "convergence check", False)


@pytest.mark.parametrize(("published_ago", "delay"), [
    (0.0, POLL_FIRST),      # the hook just published: a NOTIFY and a transfer take a second or two
    (2.0, POLL_FIRST),
    (40.0, 10.0),           # a quarter of the time lagged so far
    (1000.0, 250.0),
    (86400.0, POLL_MAX),    # a server down for a day: every 10 minutes
    (None, POLL_FIRST),     # nothing published yet (a failed UPDATE): as if just published
])
def test_a_lagging_server_is_polled_after_a_share_of_the_time_it_has_lagged(published_ago: float | None,
                                                                            delay: float) -> None:
    wake = next_wake({"mx": (staged(published_ago), lagging())}, (), NOW)
    assert wake.at == NOW + delay and wake.reason == "mx: 1 server answer(s) lag the staged records" and wake.early


def test_the_lag_counts_from_the_staged_records_publication_not_from_older_records() -> None:
    st = staged(5.0)
    st = replace(st, published=(*st.published, Published("_25._tcp.mx.example.org.", "3 0 1 " + "cd" * 32,
                                                          NOW - 86400)))
    assert next_wake({"mx": (st, lagging())}, (), NOW).at == NOW + 1.25  # a quarter of 5 s, not of a day


@pytest.mark.parametrize(("before", "after", "delay"), [
    (0, 1, RETRY_FIRST), (1, 2, 2 * RETRY_FIRST), (3, 4, 8 * RETRY_FIRST), (6, 7, 640.0), (7, 8, RETRY_MAX),
    (500, 501, RETRY_MAX),
])
def test_a_failed_run_is_retried_after_a_back_off_doubling_with_each_failed_run(before: int, after: int,
                                                                                delay: float) -> None:
    wake = next_wake({}, ["mx.example.org"], NOW, failures_before=before)
    assert (wake.at, wake.failures, wake.early) == (NOW + delay, after, True)
    assert wake.reason == f"retry mx.example.org (failed run {after} in a row)"


def test_a_clean_run_forgets_the_failures() -> None:
    assert next_wake({}, (), NOW, failures_before=5).failures == 0


def test_a_safe_moment_before_the_retry_comes_first() -> None:
    wake = next_wake({"ok": (staged(), waiting_for_ttl(NOW + 3))}, ["broken"], NOW, failures_before=2)
    assert (wake.at, wake.reason, wake.failures) == (NOW + 3, "ok: safe moment", 3)


def test_an_open_gate_left_staged_is_tried_again_at_once() -> None:
    wake = next_wake({"mx": (staged(), Gate(True, NOW - 10, NOW - 1, "every server has served ..."))}, (), NOW)
    assert wake.at == NOW + POLL_FIRST


def test_a_clock_behind_the_latest_run_is_asked_again_in_a_minute() -> None:
    gate = Gate(False, None, None, "this host's clock is 3600s behind the latest run's: not counting time until "
                "it catches up")
    wake = next_wake({"mx": (staged(), gate)}, (), NOW)
    assert wake.at == NOW + CLOCK_BEHIND and "clock" in wake.reason


def test_the_delays_are_bounded() -> None:
    assert [retry_delay(n) for n in (0, 1, 2, 10_000)] == [RETRY_FIRST, RETRY_FIRST, 2 * RETRY_FIRST, RETRY_MAX]
    assert [poll_delay(t) for t in (-50.0, 0.0, 1e9)] == [POLL_FIRST, POLL_FIRST, POLL_MAX]


gates = st.one_of(
    st.floats(-100, 10 * CONVERGE).map(lambda d: waiting_for_ttl(NOW + d)),
    st.just(lagging()),
    st.just(Gate(True, NOW - 10, NOW - 1, "open")),
    st.just(Gate(False, None, None, "clock behind")),
)


@given(st.dictionaries(st.text("abc", min_size=1, max_size=3), st.tuples(st.floats(0, 1e6), gates), max_size=5),
       st.lists(st.text("xyz", min_size=1, max_size=2), max_size=3), st.integers(0, 100))
def test_the_next_run_is_never_later_than_the_convergence_check_nor_a_busy_loop(
        waiting: dict[str, tuple[float, Gate]], failed: list[str], failures_before: int) -> None:
    wake = next_wake({n: (staged(ago), g) for n, (ago, g) in waiting.items()}, failed, NOW, failures_before)
    assert NOW + SOON <= wake.at <= NOW + CONVERGE
    assert wake.early == (wake.at < NOW + CONVERGE)
    assert wake.failures == (failures_before + 1 if failed else 0)
    if failed:
        assert wake.at <= NOW + retry_delay(wake.failures)
    safe = [g.safe_at for _, g in waiting.values() if not g.ready and g.safe_at is not None]
    if safe and not failed:
        assert wake.at <= max(min(safe), NOW + SOON)
