"""When the next deploy run must happen: a pure function of what this run's gates, states and failures say.

Nothing changes between runs unless one of these comes: a staged certificate's safe moment (the gate's
`safe_at`), a lagging server catching up (polled with a back-off that grows with how long it has lagged),
a failed step worth retrying (a back-off that grows with the consecutive failed runs), or drift nobody
announced (a record removed by hand, a renewal whose hook did not run): the convergence check, at most
CONVERGE seconds after every run. A renewal's hook asks for a run at once (see `timer.request`).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass

from certbot_dane.rollover import Gate, LineageState

CONVERGE = 58 * 60.0
"""Seconds from the end of a run to the convergence check: certbot-dane.timer's OnUnitInactiveSec= (58min).
With its AccuracySec= (1min) and a run's duration, drift is repaired within the hour."""

POLL_FIRST = 1.0
"""Seconds between the first polls of a server that does not serve the staged records yet (NOTIFY and a
transfer usually take a second or two: the gate's clock starts within POLL_FIRST of the last one serving)."""
POLL_SHARE = 0.25
"""Later polls come after this share of the time lagged so far: the clock starts at most 25 % late."""
POLL_MAX = 10 * 60.0
"""A server down for hours is polled every 10 minutes."""

RETRY_FIRST = 10.0
"""Seconds before the first retry after a failed run (a reload, a verification, an unreachable primary);
each further consecutive failed run doubles it ..."""
RETRY_MAX = 15 * 60.0
"""... up to 15 minutes."""

CLOCK_BEHIND = 60.0
"""Seconds before asking again when the gate counts no time because this host's clock went back."""

SOON = 0.25
"""No wake-up is armed closer than this: a safe moment already past on the wall clock but not yet on the
uptime clock (they may differ by a second) does not make runs back to back."""


@dataclass(frozen=True)
class Wake:
    """The next moment (wall clock) a run must happen, why, and the back-off's memory."""

    at: float
    reason: str
    failures: int = 0  # consecutive runs that ended with a lineage failed (0 after a clean run)
    early: bool = False  # before the convergence check: arm a timer for it (certbot-dane.timer does the rest)

    @property
    def steady(self) -> bool:
        """Nothing pending and nothing failing: only the convergence check is due."""
        return not self.early and self.failures == 0


def retry_delay(failures: int) -> float:
    """Seconds before the retry after `failures` consecutive failed runs (1 or more)."""
    return min(RETRY_FIRST * 2.0 ** min(max(failures, 1) - 1, 32), RETRY_MAX)


def poll_delay(lagged: float) -> float:
    """Seconds before asking a lagging server again, after it has lagged `lagged` seconds."""
    return min(max(POLL_FIRST, POLL_SHARE * lagged), POLL_MAX)


def published_at(st: LineageState) -> float | None:
    """When the staged version's records were last published (None: nothing staged or not yet published)."""
    if st.staged is None:
        return None
    return max((p.at for p in st.published if p.value in st.staged.records), default=None)


def next_wake(waiting: Mapping[str, tuple[LineageState, Gate]], failed: Collection[str], now: float,
              failures_before: int = 0) -> Wake:
    """The earliest moment anything can change after a run that ended at `now`.

    `waiting`: for each lineage still staged after the run (and not failed), its state and the gate this
    run computed for it; a lagging server is polled after a share of the time since the staged records
    were published. `failed`: the lineages that failed this run (their step is retried after a back-off that
    doubles with every consecutive failed run: `failures_before` is the count before this run).
    """
    failures = failures_before + 1 if failed else 0
    candidates: list[tuple[float, str]] = [(now + CONVERGE, "convergence check")]
    if failed:
        delay = retry_delay(failures)
        candidates.append((now + delay, f"retry {', '.join(sorted(failed))} (failed run {failures} in a row)"))
    for name, (st, result) in sorted(waiting.items()):
        if result.ready:
            candidates.append((now + POLL_FIRST, f"{name}: gate open, not yet deployed"))
        elif result.safe_at is not None:
            candidates.append((result.safe_at, f"{name}: safe moment"))
        elif result.lagging:
            since = published_at(st)
            candidates.append((now + poll_delay(now - since if since is not None else 0.0),
                               f"{name}: {len(result.lagging)} server answer(s) lag the staged records"))
        else:  # no time counted (this host's clock is behind the latest run's)
            candidates.append((now + CLOCK_BEHIND, f"{name}: {result.reason}"))
    at, reason = min(candidates)
    early = at < now + CONVERGE
    return Wake(max(at, now + SOON) if early else at, reason, failures, early)
