"""Change plans (pure): publishing with ownership claims, retiring with the last claim, the safety check."""

from __future__ import annotations

import pytest

from certbot_dane import plan
from certbot_dane.config import LineageSettings
from certbot_dane.records import Answer, Record, Require
from certbot_dane.rollover import Gate, LineageState, Published, Staged, UnsafePlan, Version
from certbot_dane.tlsa import TlsaParams

N = "_25._tcp.mx.example.org."
OLD, NEW, HAND = "3 0 1 " + "aa" * 32, "3 0 1 " + "bb" * 32, "3 1 1 aabbccdd"
ME, OTHER = "a1b2", "c3d4"
CLAIM_OLD = plan.claim_name(N, OLD)


def rrset(*values: str, ttl: int | None = 300) -> Answer:
    return Answer("NOERROR", frozenset(values), ttl if values else None)


def intent(st: LineageState) -> plan.Intent:
    return plan.Intent(st.lineage, (N,), st, {N: 60})


DEPLOYED_NEW = LineageState("mx", deployed=Version(NEW[6:], (NEW,)))


def test_claim_names_are_one_label_under_the_owner_and_map_back() -> None:
    assert CLAIM_OLD.endswith("._certbot-dane." + N) and len(CLAIM_OLD.split(".")[0]) == 32
    assert plan.owner_of_claim(CLAIM_OLD) == N and plan.owner_of_claim(N) is None


def test_a_missing_record_is_published_with_our_claim_at_the_rrset_ttl() -> None:
    p = plan.publish([intent(DEPLOYED_NEW)], {N: rrset(OLD)}, {}, ME, 5.0)
    assert set(p.add) == {Record(N, "TLSA", NEW, 300), Record(plan.claim_name(N, NEW), "TXT", '"a1b2 mx"', 300)}
    assert p.ahead["mx"].published == (Published(N, NEW, 5.0, claimed=False),), "ours before it is sent"
    assert p.states["mx"].published == (Published(N, NEW, 5.0, claimed=True),), "claimed once it landed"


def test_a_new_rrset_takes_the_configured_ttl() -> None:
    p = plan.publish([intent(DEPLOYED_NEW)], {N: rrset()}, {}, ME, 5.0)
    assert {r.ttl for r in p.add} == {60}


def test_a_record_another_host_published_is_claimed_and_becomes_ours_too() -> None:
    p = plan.publish([intent(DEPLOYED_NEW)], {N: rrset(NEW)}, {(N, NEW): frozenset({'"c3d4 mx"'})}, ME, 5.0)
    assert p.add == (Record(N, "TLSA", NEW, 300), Record(plan.claim_name(N, NEW), "TXT", '"a1b2 mx"', 300)), \
        "the record goes with the claim: if the other host removed it meanwhile, it is back, claimed"
    assert p.states["mx"].published[0].claimed and "also claimed by c3d4 mx" in p.lines[0][1]


def test_an_unclaimed_record_already_there_is_foreign_and_left_alone() -> None:
    p = plan.publish([intent(DEPLOYED_NEW)], {N: rrset(NEW)}, {}, ME, 5.0)
    assert not p.changes and not p.states


def test_a_record_of_ours_without_a_claim_gets_one() -> None:
    st = LineageState("mx", deployed=Version(NEW[6:], (NEW,)), published=(Published(N, NEW, 1.0),))
    p = plan.publish([intent(st)], {N: rrset(NEW)}, {}, ME, 5.0)
    assert [r.rdtype for r in p.add] == ["TLSA", "TXT"] and p.states["mx"].published[0].claimed


STALE = LineageState("mx", deployed=Version(NEW[6:], (NEW,)),
                     published=(Published(N, OLD, 1.0, True), Published(N, NEW, 2.0, True)))


def test_the_last_claim_goes_with_the_record_under_a_prerequisite() -> None:
    mine = frozenset({'"a1b2 mx"'})
    p = plan.retire([intent(STALE)], {}, {(N, OLD): mine}, ME)
    assert set(p.remove) == {Record(N, "TLSA", OLD), Record(CLAIM_OLD, "TXT", '"a1b2 mx"')}
    assert p.require == (Require(CLAIM_OLD, "TXT", mine),)
    assert [x.value for x in p.states["mx"].published] == [NEW]


def test_a_record_another_host_still_claims_stays_and_only_our_claim_goes() -> None:
    p = plan.retire([intent(STALE)], {}, {(N, OLD): frozenset({'"a1b2 mx"', '"c3d4 mx"'})}, ME)
    assert p.remove == (Record(CLAIM_OLD, "TXT", '"a1b2 mx"'),) and not p.require
    assert "still claimed by c3d4 mx" in p.lines[0][1]
    assert [x.value for x in p.states["mx"].published] == [NEW]


def test_a_record_published_before_claims_existed_requires_that_none_appeared() -> None:
    legacy = LineageState("mx", deployed=Version(NEW[6:], (NEW,)), published=(Published(N, OLD, 1.0, None),))
    p = plan.retire([intent(legacy)], {}, {(N, OLD): frozenset()}, ME)
    assert p.remove == (Record(N, "TLSA", OLD),) and p.require == (Require(CLAIM_OLD, "TXT", None),)


def test_a_record_whose_claim_never_landed_is_released_not_removed() -> None:
    p = plan.retire([intent(STALE)], {}, {(N, OLD): frozenset()}, ME)
    assert not p.remove and not p.require and "never landed" in p.lines[0][1]
    assert [x.value for x in p.states["mx"].published] == [NEW]


def test_a_staged_record_missing_from_the_primary_restarts_the_gate_when_republished() -> None:
    st = LineageState("mx", deployed=Version(OLD[6:], (OLD,)), staged=Staged(NEW[6:], (NEW,), 1.0, 50.0),
                      published=(Published(N, OLD, 1.0, True), Published(N, NEW, 1.0, True)))
    p = plan.publish([intent(st)], {N: rrset(OLD)}, {}, ME, 60.0)
    assert p.ahead["mx"].staged is not None and p.ahead["mx"].staged.served_at is None


def test_a_record_another_lineage_of_this_host_wants_is_kept_and_stays_ours() -> None:
    p = plan.retire([intent(STALE)], {N: frozenset({OLD})}, {}, ME)
    assert not p.changes and not p.states


@pytest.mark.parametrize("record, why", [
    (Record(N, "TLSA", NEW), "matches a deployed certificate"),
    (Record(N, "TLSA", HAND), "did not publish it"),
    (Record(CLAIM_OLD, "TXT", '"c3d4 mx"'), "not a claim of this host"),
    (Record("x.example.org.", "TXT", '"a1b2 mx"'), "not a claim of this host"),
])
def test_check_refuses_what_must_stay(record: Record, why: str) -> None:
    with pytest.raises(UnsafePlan, match=why):
        plan.Plan(remove=(record,)).check({N: frozenset({NEW})}, {(N, OLD)}, ME)


def test_check_lets_our_stale_record_and_claim_go() -> None:
    plan.Plan(remove=(Record(N, "TLSA", OLD), Record(CLAIM_OLD, "TXT", '"a1b2 mx"'))).check(
        {N: frozenset({NEW})}, {(N, OLD)}, ME)


def test_kept_protects_the_live_records_at_every_name_a_lineage_published_and_keeps_what_it_wants() -> None:
    st = LineageState("mx", deployed=Version(NEW[6:], (NEW,)), staged=Staged("cc" * 32, ("3 0 1 " + "cc" * 32,)),
                      published=(Published("_465._tcp.mx.example.org.", NEW, 1.0, True),))
    keep, protected = plan.kept([((N,), st, (NEW,))])
    assert protected == {N: frozenset({NEW}), "_465._tcp.mx.example.org.": frozenset({NEW})}
    assert keep[N] == frozenset({NEW, "3 0 1 " + "cc" * 32})


# -- swap and reload ---------------------------------------------------------------------------
STAGED_NEW = LineageState("mx", deployed=Version(OLD[6:], (OLD,)), staged=Staged(NEW[6:], (NEW,), 1.0, 2.0, 60))
OPEN, SHUT = Gate(True, 2.0, 122.0, "every server has served the new records for 2 x TTL"), \
    Gate(False, 2.0, 122.0, "waiting 2 x TTL (120s) for caches to expire")


def test_an_open_gate_swaps_the_staged_version_in_unverified() -> None:
    swap = plan.swap(STAGED_NEW, OPEN)
    assert swap is not None and swap.fingerprint == NEW[6:] and swap.forced is None
    assert swap.state.deployed == Version(NEW[6:], (NEW,)) and swap.state.previous == STAGED_NEW.deployed
    assert swap.state.unverified and swap.state.staged is None
    assert swap.lines == (f"deploy certificate {NEW[6:22]}",)
    swap.check(STAGED_NEW, OPEN)


def test_a_shut_gate_swaps_nothing_unless_forced_and_then_says_so() -> None:
    assert plan.swap(STAGED_NEW, SHUT) is None
    assert plan.swap(LineageState("mx", deployed=STAGED_NEW.deployed), OPEN) is None, "nothing staged"
    forced = plan.swap(STAGED_NEW, SHUT, force=True)
    assert forced is not None and forced.forced == SHUT.reason
    assert forced.lines[0].startswith("EMERGENCY deploy before the gate (waiting 2 x TTL")
    forced.check(STAGED_NEW, SHUT)


def test_swap_check_refuses_a_swap_the_gate_did_not_allow_or_of_another_version() -> None:
    opened = plan.swap(STAGED_NEW, OPEN)
    assert opened is not None
    with pytest.raises(UnsafePlan, match="before the gate opens: waiting 2 x TTL"):
        opened.check(STAGED_NEW, SHUT)
    other = LineageState("mx", staged=Staged("cc" * 32, ("3 0 1 " + "cc" * 32,), 1.0))
    with pytest.raises(UnsafePlan, match="not the staged version"):
        opened.check(other, OPEN)


def lineage(name: str, reload: tuple[str, ...]) -> LineageSettings:
    return LineageSettings(name, (N,), (TlsaParams(3, 0, 1),), reload=reload)


def test_reload_runs_each_command_once_for_every_swapped_lineage_and_keeps_the_live_version() -> None:
    swapped = LineageState("mx", deployed=Version(NEW[6:], (NEW,)), previous=STAGED_NEW.deployed, unverified=True)
    other = LineageState("smtp", deployed=Version(OLD[6:], (OLD,)), unverified=True)
    idle = LineageState("imap", deployed=Version(OLD[6:], (OLD,)))
    on_disk = {"mx": NEW[6:], "smtp": OLD[6:]}
    todo = plan.reload([(lineage("mx", ("postfix reload", "dovecot reload")), swapped),
                        (lineage("smtp", ("postfix reload",)), other), (lineage("imap", ("dovecot reload",)), idle)],
                       on_disk)
    assert todo.commands == (("postfix reload", ("mx", "smtp")), ("dovecot reload", ("mx",)))
    assert todo.needs("smtp") == ["postfix reload"] and todo.needs("imap") == []
    assert todo.keep == {"mx": {NEW[6:]}, "smtp": {OLD[6:]}}
    assert todo.states["mx"].previous is None and not todo.states["mx"].unverified and "imap" not in todo.states
    todo.check({"mx": swapped, "smtp": other}, on_disk)


def test_reload_keeps_the_version_an_admin_put_back_by_hand() -> None:
    swapped = LineageState("mx", deployed=Version(NEW[6:], (NEW,)), previous=Version(OLD[6:], (OLD,)),
                           unverified=True)
    todo = plan.reload([(lineage("mx", ()), swapped)], {"mx": OLD[6:]})
    assert todo.keep == {"mx": {NEW[6:], OLD[6:]}}, "live/ points at the old version: it must not be pruned"
    todo.check({"mx": swapped}, {"mx": OLD[6:]})


def test_reload_check_refuses_to_prune_the_live_or_the_deployed_version() -> None:
    swapped = LineageState("mx", deployed=Version(NEW[6:], (NEW,)), unverified=True)
    todo = plan.reload([(lineage("mx", ()), swapped)], {"mx": NEW[6:]})
    with pytest.raises(UnsafePlan, match="refusing to prune version aaaa"):
        todo.check({"mx": swapped}, {"mx": OLD[6:]})
    with pytest.raises(UnsafePlan, match="nothing was swapped in"):
        todo.check({"mx": LineageState("mx", deployed=Version(NEW[6:], (NEW,)))}, {"mx": NEW[6:]})
