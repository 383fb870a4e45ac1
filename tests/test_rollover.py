"""Rollover decisions: pure, table-driven, no servers (ROLLOVER.md steps and invariants I1-I4)."""

from __future__ import annotations

import dataclasses

import pytest

from certbot_dane import plan, rollover
from certbot_dane.config import Endpoint
from certbot_dane.records import Answer, NoAnswer
from certbot_dane.rollover import LineageState, Published, Staged, Version

N1, N2 = "_25._tcp.mx.example.org.", "_465._tcp.mx.example.org."
NAMES = (N1, N2)
OLD, NEW, NEWER = (Version(fp, (f"3 0 1 {fp * 4}",)) for fp in ("aa", "bb", "cc"))
FOREIGN = "2 1 1 " + "ee" * 32
A, B = Endpoint("127.0.0.1", 53), Endpoint("127.0.0.2", 53)


def answer(*values: str, ttl: int = 60) -> Answer:
    return Answer("NOERROR", frozenset(values), ttl if values else None)


def ours(version: Version, at: float = 0.0) -> tuple[Published, ...]:
    return tuple(Published(n, v, at) for n in NAMES for v in version.records)


def staged_state(served_at: float | None = None) -> LineageState:
    staged = Staged(NEW.fingerprint, NEW.records, 100.0, served_at, 60, names=NAMES)
    return LineageState("mx", deployed=OLD, staged=staged,
                        published=ours(OLD) + ours(NEW))


# -- stage -----------------------------------------------------------------------------------
def test_bootstrap_when_never_deployed_and_no_rrset_exists():
    st = rollover.stage(LineageState("mx"), NEW, {N1: answer(), N2: answer()}, 100.0)
    assert st.staged and st.staged.no_wait == rollover.BOOTSTRAP


def test_no_bootstrap_when_any_name_has_tlsa_records():
    st = rollover.stage(LineageState("mx"), NEW, {N1: answer(FOREIGN), N2: answer()}, 100.0)
    assert st.staged and st.staged.no_wait is None and st.staged.old_ttl == 60


def test_renewal_is_staged_with_the_old_ttl_and_no_clock_yet():
    st = rollover.stage(LineageState("mx", deployed=OLD), NEW, {N1: answer(*OLD.records, ttl=300),
                                                                N2: answer(*OLD.records)}, 100.0)
    assert st.deployed == OLD
    assert st.staged == Staged(NEW.fingerprint, NEW.records, 100.0, None, 300, None, (N1, N2))


def test_same_certificate_again_changes_nothing():
    st = LineageState("mx", deployed=OLD)
    assert rollover.stage(st, OLD, {N1: answer(*OLD.records)}, 5.0) is st
    st2 = staged_state()
    assert rollover.stage(st2, NEW, {N1: answer(*OLD.records)}, 5.0) is st2


def test_renewed_again_before_deploy_replaces_staged_and_restarts_the_clock():
    st = rollover.stage(staged_state(served_at=150.0), NEWER, {N1: answer(*OLD.records, *NEW.records)}, 400.0)
    assert st.staged and st.staged.fingerprint == NEWER.fingerprint and st.staged.served_at is None
    assert {value for _, value in plan.to_retire([plan.Intent("mx", NAMES, st)], {})} == set(NEW.records)


def test_reused_key_with_selector_1_needs_no_wait():
    spki = Version("aa", ("3 1 1 " + "11" * 32,))
    st = rollover.stage(LineageState("mx", deployed=spki), Version("bb", spki.records),
                        {N1: answer(*spki.records)}, 1.0)
    assert st.staged and st.staged.no_wait and "same key" in st.staged.no_wait


# -- publish ---------------------------------------------------------------------------------
def test_publish_adds_only_missing_records_with_the_rrset_ttl():
    st = staged_state()
    intent = plan.Intent("mx", NAMES, st, {N1: 3600, N2: 3600})
    changes = plan.publish([intent], {N1: answer(*OLD.records, FOREIGN, ttl=300), N2: answer()}, {}, "i1", 5.0)
    assert sorted((r.name, r.value, r.ttl) for r in changes.add if r.rdtype == "TLSA") == sorted([
        (N1, NEW.records[0], 300), (N1, OLD.records[0], 300), (N2, OLD.records[0], 3600),
        (N2, NEW.records[0], 3600)])  # OLD at N1 is ours but never claimed: claimed with its record


# -- gate ------------------------------------------------------------------------------------
def observed(*, a: tuple[str, ...], b: tuple[str, ...] | str, ttl: int = 60):
    def one(values):
        return NoAnswer(values) if isinstance(values, str) else answer(*values, ttl=ttl)
    return {n: {A: one(a), B: one(b)} for n in NAMES}


def test_gate_waits_for_a_lagging_server_and_names_it():
    g = rollover.gate(staged_state(), observed(a=OLD.records + NEW.records, b=OLD.records), 200.0)
    assert not g.ready and g.served_at is None
    assert any("127.0.0.2:53" in lag for lag in g.lagging)


def test_gate_treats_an_unreachable_server_as_lagging():
    g = rollover.gate(staged_state(), observed(a=NEW.records, b="no answer: timeout"), 200.0)
    assert not g.ready and "timeout" in " ".join(g.lagging)


@pytest.mark.parametrize("served_at, now, ttl, ready", [
    (None, 200.0, 60, False),     # clock starts now
    (200.0, 319.0, 60, False),    # 2 x 60 not yet passed
    (200.0, 320.0, 60, True),     # exactly 2 x TTL
    (200.0, 320.0, 90, False),    # a longer new TTL counts
])
def test_gate_opens_two_ttls_after_every_server_serves(served_at, now, ttl, ready):
    g = rollover.gate(staged_state(served_at), observed(a=OLD.records + NEW.records, b=NEW.records, ttl=ttl), now)
    assert g.ready is ready
    assert g.served_at == (served_at if served_at is not None else now)
    assert g.safe_at == g.served_at + 2 * ttl


def test_gate_uses_the_old_ttl_when_it_was_longer():
    st = staged_state(200.0)
    st = st.__class__(**{**st.__dict__, "staged": Staged(NEW.fingerprint, NEW.records, 100.0, 200.0, 600, names=NAMES)})
    g = rollover.gate(st, observed(a=NEW.records, b=NEW.records, ttl=60), 400.0)
    assert not g.ready and g.safe_at == 1400.0


def test_lagging_again_resets_the_clock():
    result = rollover.gate(staged_state(200.0), observed(a=NEW.records, b=OLD.records), 250.0)
    st = rollover.with_gate(staged_state(200.0), result, 250.0)
    assert st.staged and st.staged.served_at is None


# -- swap, verify, retire --------------------------------------------------------------------
def test_nothing_is_retired_until_the_swap_is_verified():
    st = rollover.swapped(staged_state(200.0))
    assert st.deployed == Version(NEW.fingerprint, NEW.records) and st.previous == OLD and st.unverified
    assert plan.to_retire([plan.Intent("mx", NAMES, st)], {}) == set()
    done = rollover.verified(st)
    assert plan.to_retire([plan.Intent("mx", NAMES, done)], {}) == {(n, OLD.records[0]) for n in NAMES}


def test_reconcile_after_a_crash_between_swap_and_state_write():
    st = staged_state(200.0)
    assert rollover.reconcile(st, NEW.fingerprint) == rollover.swapped(st)
    assert rollover.reconcile(st, OLD.fingerprint) is st


def test_no_bootstrap_when_dns_could_not_be_asked():
    st = rollover.stage(LineageState("mx"), NEW, None, 100.0)
    assert st.staged and st.staged.no_wait is None and st.deployed is None


def test_a_ttl_lowered_shortly_before_the_renewal_holds_the_gate_for_the_old_ttl():
    st = rollover.remember_ttl(staged_state(200.0), 3600, 100.0)   # 3600 s served at t=100
    st = rollover.remember_ttl(st, 60, 150.0)                      # then lowered to 60 s, noticed at t=150
    assert (st.ttl_seen, st.ttl_seen_at) == (3600, 150.0), "the longer TTL is remembered from the first notice"
    assert rollover.remember_ttl(st, 60, 200.0) is st, "later runs do not move it"
    g = rollover.gate(st, observed(a=NEW.records, b=NEW.records, ttl=60), 400.0)
    assert not g.ready and g.safe_at == 150.0 + 7200 and "3600s" in g.reason
    assert rollover.gate(st, observed(a=NEW.records, b=NEW.records, ttl=60), 7350.0).ready


def test_remembered_ttl_is_refreshed_once_per_ttl_and_forgotten_when_expired():
    st = rollover.remember_ttl(LineageState("mx"), 60, 0.0)
    assert (st.ttl_seen, st.ttl_seen_at) == (60, 0.0)
    assert rollover.remember_ttl(st, 60, 30.0) is st                # steady: nothing to write
    assert rollover.remember_ttl(st, 60, 60.0).ttl_seen_at == 60.0  # refreshed once per TTL
    assert rollover.remember_ttl(st, 300, 10.0).ttl_seen == 300     # a longer TTL at once
    assert rollover.remember_ttl(st, 5, 130.0).ttl_seen == 5        # 2 x 60 s later it is forgotten


def test_the_remembered_ttl_does_not_delay_a_normal_gate():
    st = rollover.remember_ttl(staged_state(200.0), 60, 250.0)      # refreshed after the clock started
    assert rollover.gate(st, observed(a=NEW.records, b=NEW.records, ttl=60), 320.0).ready


def test_a_bootstrap_decision_is_dropped_when_an_rrset_appeared_before_the_swap():
    st = rollover.stage(LineageState("mx"), NEW, {N1: answer(), N2: answer()}, 100.0)
    assert rollover.gate(st, observed(a=NEW.records, b=NEW.records), 101.0).ready
    g = rollover.gate(st, observed(a=(*NEW.records, FOREIGN), b=(*NEW.records, FOREIGN)), 101.0)
    assert not g.ready and g.safe_at == 101.0 + 120


# -- clocks ------------------------------------------------------------------------------------
def test_without_a_boot_id_a_run_whose_clock_is_behind_the_latest_counts_no_time():
    st = dataclasses.replace(staged_state(None), clock_high=10_000.0)
    g = rollover.gate(st, observed(a=NEW.records, b=NEW.records), 6_400.0)
    assert not g.ready and g.staged.served_at is None and "behind" in g.reason


def test_time_since_boot_counts_the_wait_whatever_the_wall_clock_says():
    started = rollover.gate(staged_state(None), observed(a=NEW.records, b=NEW.records), 1_000.0, ("b1", 50.0))
    st = rollover.with_gate(staged_state(None), started, 1_000.0)
    ahead = rollover.gate(st, observed(a=NEW.records, b=NEW.records), 90_000.0, ("b1", 100.0))
    assert not ahead.ready and ahead.safe_at == 90_070.0      # 50 s of 120 s waited, whatever the wall clock
    assert rollover.gate(st, observed(a=NEW.records, b=NEW.records), 0.0, ("b1", 170.0)).ready


def test_a_reboot_restarts_the_clock():
    started = rollover.gate(staged_state(None), observed(a=NEW.records, b=NEW.records), 1_000.0, ("b1", 50.0))
    st = rollover.with_gate(staged_state(None), started, 1_000.0)
    after = rollover.gate(st, observed(a=NEW.records, b=NEW.records), 5_000.0, ("b2", 10.0))
    assert not after.ready and after.served_at == 5_000.0


def test_the_clock_restarts_when_the_owner_names_change():
    st = staged_state(200.0)
    more = {**observed(a=NEW.records, b=NEW.records), "_587._tcp.mx.example.org.": {A: answer(*NEW.records)}}
    g = rollover.gate(st, more, 10_000.0)
    assert not g.ready and g.served_at == 10_000.0 and "_587._tcp.mx.example.org." in g.staged.names


def test_servfail_is_no_bootstrap():
    st = rollover.stage(LineageState("mx"), NEW, {N1: Answer("SERVFAIL", frozenset()), N2: answer()}, 100.0)
    assert st.staged is not None and st.staged.no_wait is None
