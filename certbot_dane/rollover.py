"""Rollover decisions (ROLLOVER.md): pure functions from state, observations and time to a plan."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from certbot_dane.config import Endpoint
from certbot_dane.records import Answer, NoAnswer, Reply

#: What each server answered for each TLSA owner name (where the RRset lives, after CNAMEs).
Observation = Mapping[str, Mapping[Endpoint, Reply]]

#: How far a run's clock may lag the latest run's before the run stops counting time (NTP jitter).
CLOCK_SLACK = 2.0

#: The host's boot id and seconds since boot (CLOCK_BOOTTIME): time that no clock setting moves.
Uptime = tuple[str, float]


BOOTSTRAP = "bootstrap: no TLSA RRset exists yet, so no sender can fail"


@dataclass(frozen=True)
class Version:
    """One certificate version: its fingerprint and its TLSA records' rdata texts."""

    fingerprint: str
    records: tuple[str, ...]
    #: its records went through a gate (False: recomputed for new params, never waited for)
    aged: bool = field(default=True, kw_only=True)


@dataclass(frozen=True)
class Staged(Version):
    """The version waiting to go live, and the clock of its gate."""

    staged_at: float = 0.0
    served_at: float | None = None  # when every server first served all its records
    old_ttl: int = 0                # TTL of the RRsets before pre-publishing
    no_wait: str | None = None      # why no wait is needed (records already published and aged)
    names: tuple[str, ...] = ()     # the owner names the clock (and no_wait) were decided for
    served_boot: str = ""           # the boot (id) and time since boot when served_at was taken: within
    served_uptime: float = 0.0      # one boot, a wall clock jumping forward cannot shorten the wait


@dataclass(frozen=True)
class Published:
    """A record certbot-dane itself published (only these may ever be removed)."""

    name: str
    value: str
    at: float
    claimed: bool | None = False  # our ownership claim (plan.py) landed next to it; None: published
    #                                 before claims existed


@dataclass(frozen=True)
class LineageState:
    """Everything certbot-dane remembers about one lineage."""

    lineage: str
    deployed: Version | None = None
    previous: Version | None = None  # replaced by the last swap; kept until reload and verify succeed
    staged: Staged | None = None
    published: tuple[Published, ...] = ()
    unverified: bool = False         # swapped in, services not yet reloaded and verified
    ttl_seen: int = 0                # the longest TLSA TTL served lately (caches may still hold it) ...
    ttl_seen_at: float = 0.0         # ... and when it was last seen served (refreshed once per TTL)
    ttl_dropped: bool = False        # a shorter TTL was noticed: ttl_seen_at is that first notice
    ttl_seen_boot: str = ""          # ttl_seen_at as the boot id and time since boot (see `since`)
    ttl_seen_uptime: float = 0.0
    error: str | None = None         # the last failure, shown by `status`
    clock_high: float = 0.0          # the latest clock reading of any run: a clock behind it counts no time


@dataclass(frozen=True)
class Gate:
    """Whether the staged version may go live now, and if not, why and when."""

    ready: bool
    served_at: float | None
    safe_at: float | None
    reason: str
    lagging: tuple[str, ...] = ()
    staged: Staged | None = None  # the staged version with the clock as this gate left it


class UnsafePlan(AssertionError):
    """A plan broke an invariant; this is a bug in certbot-dane, never applied."""


def wanted_values(state: LineageState) -> tuple[str, ...]:
    """Record values every TLSA name must hold: deployed, not-yet-verified previous, and staged."""
    values: list[str] = []
    for version in (state.deployed, state.previous, state.staged):
        for value in version.records if version else ():
            if value not in values:
                values.append(value)
    return tuple(values)


def stage(state: LineageState, new: Version, on_primary: Mapping[str, Answer] | None, now: float,
          shared_live: bool = False) -> LineageState:
    """The state after certbot produced `new`.

    Unchanged when `new` is already deployed or staged. Otherwise `new` is staged, replacing any
    older staged version, and needs no wait (goes live at once) on bootstrap (nothing ever deployed
    and no name has a TLSA RRset) or when all its records are already live (reused key, selector 1).
    `on_primary` (keyed by owner name, after CNAMEs) None means DNS could not be asked, and an
    answer other than NOERROR/NXDOMAIN means nothing is known: no bootstrap then, the gate decides.
    `shared_live`: another lineage with something deployed shares a TLSA name: no bootstrap either
    (its records may be missing from the RRset only because its own update failed).
    """
    if state.deployed and state.deployed.fingerprint == new.fingerprint:
        return state
    if state.staged and state.staged.fingerprint == new.fingerprint:
        return state
    if on_primary is not None and not all(a.definite for a in on_primary.values()):
        on_primary = None  # SERVFAIL & co. say nothing about the RRset: no bootstrap, the gate decides
    old_ttl = max((a.ttl or 0 for a in (on_primary or {}).values()), default=0)
    live = set(state.deployed.records) if state.deployed else set()
    if (state.deployed is None and on_primary is not None and not shared_live
            and not any(a.values for a in on_primary.values())):
        no_wait: str | None = BOOTSTRAP
    elif set(new.records) <= live and state.deployed is not None and state.deployed.aged:
        no_wait = "its records are already published and aged (same key)"
    else:
        no_wait = None
    names = tuple(sorted(on_primary)) if on_primary is not None else ()
    return replace(state, staged=Staged(new.fingerprint, new.records, now, None, old_ttl, no_wait, names),
                   error=None, clock_high=max(state.clock_high, now))


def gate(state: LineageState, observed: Observation, now: float, uptime: Uptime | None = None,
         min_wait: float = 0.0) -> Gate:
    """RFC 7671 §8.1: every server serves the staged records, then 2 x max(old TTL, new TTL) passes.

    `min_wait` (the lineage's configured minimum) covers TTLs the gate cannot know: one raised and
    lowered again while no run saw it (host down, timer stopped).

    The clock belongs to the owner names it was started for (`Staged.names`): when the names
    observed now differ (a name added to the lineage, a CNAME re-pointed), it starts again, and a
    no-wait decision taken for other names no longer holds. A run whose clock is behind the latest
    run's starts no clock and opens no gate (`clock_high`). With `uptime` (the boot id and seconds
    since boot, which no clock setting moves), the time waited is counted in uptime, and a reboot
    restarts the clock: a wall clock set back or forward can then neither shorten nor stall a wait.
    """
    staged = state.staged
    if staged is None:
        return Gate(False, None, None, "nothing staged")
    names = tuple(sorted(observed))
    if staged.names != names:
        staged = replace(staged, names=names, served_at=None, no_wait=None)
    others = {v for answers in observed.values() for a in answers.values() if isinstance(a, Answer)
              for v in a.values} - set(staged.records)
    if staged.no_wait == BOOTSTRAP and (others or min_wait):
        # an RRset appeared since: the bootstrap decision is stale; or a configured minimum wait applies
        # to first certificates too (an RRset deleted less than a TTL ago may still be cached)
        staged = replace(staged, no_wait=None)
    boot = uptime[0] if uptime is not None else ""
    if boot and staged.served_at is not None and staged.served_boot != boot:
        staged = replace(staged, served_at=None)  # counted in another boot's uptime (or none): start again
    if not boot and now + CLOCK_SLACK < state.clock_high:
        return Gate(False, staged.served_at, None, f"this host's clock is {state.clock_high - now:.0f}s behind "
                    "the latest run's: not counting time until it catches up", staged=staged)
    if staged.no_wait:
        return Gate(True, staged.served_at, now, f"no wait: {staged.no_wait}", staged=staged)
    lagging, ttls = [], [staged.old_ttl]
    for name, answers in sorted(observed.items()):
        for server, answer in sorted(answers.items(), key=lambda kv: str(kv[0])):
            if isinstance(answer, NoAnswer):
                lagging.append(f"{server} for {name}: no answer: {answer.reason}")
            elif not answer.definite:
                lagging.append(f"{server} for {name}: answered {answer.rcode} (unknown, not 'no records')")
            elif not set(staged.records) <= answer.values:
                lagging.append(f"{server} for {name}: serves {answer.describe()}")
            else:
                ttls.append(answer.ttl or 0)
    if lagging:
        return Gate(False, None, None, f"waiting for {len(lagging)} server answer(s) to include the new records",
                    tuple(lagging), replace(staged, served_at=None))
    if staged.served_at is None:
        staged = replace(staged, served_at=now, served_boot=boot, served_uptime=uptime[1] if uptime else 0.0)
    served_at = staged.served_at
    assert served_at is not None
    waited = uptime[1] - staged.served_uptime if uptime is not None and boot else now - served_at
    # (a caller without the host's uptime, like `status` on another host, counts the wall clock)
    needed = max(2 * max(ttls), min_wait)
    # the moment for humans: on the wall clock from served_at, unless the wall clock jumped since
    safe_at = served_at + needed if abs(now - served_at - waited) <= CLOCK_SLACK else now + needed - waited
    # an RRset cached before the TTL was lowered may outlive the gate computed from today's TTL
    lowered = 0.0
    if state.ttl_seen > max(ttls):
        lowered = now + 2 * state.ttl_seen - since(state.ttl_seen_at, state.ttl_seen_boot, state.ttl_seen_uptime,
                                                   now, uptime, state.clock_high)
    if waited < needed:
        why = f"2 x TTL ({2 * max(ttls)}s)" if needed == 2 * max(ttls) else f"the configured min_wait ({needed:g}s)"
        return Gate(False, served_at, max(safe_at, lowered), f"waiting {why} for caches to expire", staged=staged)
    if now < lowered:
        return Gate(False, served_at, lowered, f"the TTL was {state.ttl_seen}s until lately: waiting 2 x that "
                                               "for caches holding the old RRset to expire", staged=staged)
    return Gate(True, served_at, max(safe_at, lowered), "every server has served the new records for 2 x TTL",
                staged=staged)


def since(at: float, boot: str, up: float, now: float, uptime: Uptime | None, clock_high: float = 0.0) -> float:
    """Seconds since a moment noted as wall time `at` and (`boot`, `up`) time since boot.

    Within one boot, time since boot: no setting of the wall clock moves it. Across a reboot, the
    time since this boot, which is less than the truth (never more). Without a boot id, the wall
    clock, counting nothing while it is behind the latest run's (`clock_high`).
    """
    if uptime is not None and uptime[0]:
        return uptime[1] - up if boot == uptime[0] else uptime[1]
    return 0.0 if now + CLOCK_SLACK < clock_high else now - at


def remember_ttl(state: LineageState, ttl: int, now: float, uptime: Uptime | None = None) -> LineageState:
    """Remember the longest TTL served lately, so that lowering the TTL cannot shorten the gate.

    Refreshed when a TTL at least as long is seen and the memory is older than that TTL (so a
    steady run writes nothing); forgotten once every cache must have dropped it. Its age is counted
    like the gate's wait (`since`), so a run with a wrong wall clock cannot make it expire.
    """
    age = since(state.ttl_seen_at, state.ttl_seen_boot, state.ttl_seen_uptime, now, uptime, state.clock_high)

    def noted(seen: int, dropped: bool) -> LineageState:
        return replace(state, ttl_seen=seen, ttl_dropped=dropped, ttl_seen_at=now,
                       ttl_seen_boot=uptime[0] if uptime else "", ttl_seen_uptime=uptime[1] if uptime else 0.0)

    if age >= 2 * state.ttl_seen:  # anything remembered has expired everywhere
        return noted(ttl, False) if ttl else state
    if ttl > state.ttl_seen or (ttl == state.ttl_seen and age >= ttl):
        return noted(ttl, False)
    if ttl < state.ttl_seen and not state.ttl_dropped:
        # the longer TTL may have been served until just now: count its caches from this first notice
        return noted(state.ttl_seen, True)
    return state


def with_gate(state: LineageState, result: Gate, now: float) -> LineageState:
    """State with the gate's clock recorded (a lagging server or a change of names resets it)."""
    high = max(state.clock_high, now)
    if state.staged is None or result.staged is None:
        return state if high == state.clock_high else replace(state, clock_high=high)
    return replace(state, staged=result.staged, clock_high=high)


def swapped(state: LineageState) -> LineageState:
    """State after the staged version went live: the old one stays wanted until verified."""
    assert state.staged is not None
    live = Version(state.staged.fingerprint, state.staged.records, aged=True)
    return replace(state, previous=state.deployed, deployed=live, staged=None, unverified=True)


def reconcile(state: LineageState, on_disk: str | None) -> LineageState:
    """Bring the state in line with the certificate actually deployed (a crash after the swap)."""
    if state.staged and on_disk == state.staged.fingerprint:
        return swapped(state)
    return state


def refresh(state: LineageState, deployed: tuple[str, ...] | None, staged: tuple[str, ...] | None) -> LineageState:
    """State whose versions carry the records their certificates on disk give with today's params.

    `deployed`/`staged`: the records computed now (None: that version is not on disk, kept as it is).
    The configuration may have changed (params) and a state file may have been edited: what goes
    live, and what may never be removed, is what the certificate on disk needs. A staged version
    whose records changed starts its gate again.
    """
    if state.deployed is not None and deployed is not None and deployed != state.deployed.records:
        state = replace(state, deployed=replace(state.deployed, records=deployed, aged=False))
    if state.staged is not None and staged is not None and staged != state.staged.records:
        state = replace(state, staged=replace(state.staged, records=staged, served_at=None, no_wait=None))
    return state


def verified(state: LineageState) -> LineageState:
    """State after the services were reloaded and verified: the previous version is no longer wanted."""
    return replace(state, previous=None, unverified=False, error=None)
