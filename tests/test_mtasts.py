"""The pure MTA-STS core: policy text and id, MX patterns, TXT records, the plan, the swap refusal, the findings."""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest

from certbot_dane import mtasts, mtastsreport
from certbot_dane.config import MtaStsSettings
from certbot_dane.mtasts import Held, Policy
from certbot_dane.mtastsreport import MxSeen, Observation, PolicyServed
from certbot_dane.records import Answer, Record, Require

D = "example.org"
ENFORCE = Policy("enforce", ("mx1.example.org", "*.mx.example.org"), 604800)


def settings(mode: str = "enforce", mx: tuple[str, ...] | None = ("mx1.example.org",), tlsrpt: tuple[str, ...] = (),
             max_age: int = 86400) -> MtaStsSettings:
    return MtaStsSettings(D, mode, mx, max_age, Path("/srv/mta-sts.txt"), tlsrpt)


def txt(*texts: str, ttl: int | None = 300) -> Answer:
    return Answer("NOERROR", frozenset(mtasts.txt_value(t) for t in texts), ttl if texts else None)


NONE = Answer("NXDOMAIN", frozenset())


def test_the_policy_file_is_crlf_lines_in_the_rfc_order_and_parses_back() -> None:
    assert ENFORCE.text() == ("version: STSv1\r\nmode: enforce\r\nmx: mx1.example.org\r\nmx: *.mx.example.org\r\n"
                              "max_age: 604800\r\n")
    assert mtasts.parse_policy(ENFORCE.text()) == ENFORCE
    assert mtasts.parse_policy(ENFORCE.text().replace("\r\n", "\n")) == ENFORCE


@pytest.mark.parametrize("other", [
    Policy("testing", ENFORCE.mx, ENFORCE.max_age),
    Policy("enforce", ENFORCE.mx[:1], ENFORCE.max_age),
    Policy("enforce", ENFORCE.mx, 86400),
    Policy("enforce", tuple(reversed(ENFORCE.mx)), ENFORCE.max_age),
])
def test_the_id_changes_iff_the_policy_does(other: Policy) -> None:
    again = Policy(ENFORCE.mode, tuple(ENFORCE.mx), ENFORCE.max_age)
    assert again.id == ENFORCE.id and other.id != ENFORCE.id
    assert len(ENFORCE.id) == 32 and ENFORCE.id.isalnum()


@pytest.mark.parametrize(("text", "why"), [
    ("mode: enforce\nmx: a.example\nmax_age: 1\n", "version"),
    ("version: STSv1\nmode: strict\nmx: a.example\nmax_age: 1\n", "mode"),
    ("version: STSv1\nmode: enforce\nmax_age: 1\n", "without mx"),
    ("version: STSv1\nmode: enforce\nmx: a.example\nmax_age: 99999999\n", "out of range"),
    ("version: STSv1\nmode: enforce\nmx: a.example\n", "max_age"),
    ("<html>not found</html>", "key: value"),
])
def test_a_policy_senders_reject_does_not_parse(text: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        mtasts.parse_policy(text)


@pytest.mark.parametrize(("pattern", "host", "matches"), [
    ("mx1.example.org", "mx1.example.org", True),
    ("mx1.example.org", "MX1.Example.Org.", True),
    ("mx1.example.org", "mx2.example.org", False),
    ("*.mx.example.org", "a.mx.example.org", True),
    ("*.mx.example.org", "mx.example.org", False),
    ("*.mx.example.org", "a.b.mx.example.org", False),  # one label only (RFC 8461 §4.1)
])
def test_mx_patterns_match_as_rfc_8461_says(pattern: str, host: str, matches: bool) -> None:
    assert mtasts.mx_matches(pattern, host) is matches


def test_without_mx_the_policy_lists_the_mx_rrset_and_needs_one() -> None:
    assert mtasts.mx_hosts(["20 mx2.example.org.", "10 MX1.example.org.", "0 ."]) == ("mx1.example.org",
                                                                                      "mx2.example.org")
    assert mtasts.intended(settings(mx=None), ("mx1.example.org",)).mx == ("mx1.example.org",)
    with pytest.raises(ValueError, match="no MX RRset"):
        mtasts.intended(settings(mx=None), ())
    assert mtasts.intended(settings(mode="none", mx=None), None).mx == ()


@pytest.mark.parametrize("text", ["v=STSv1; id=abc", 'say "hi" \\ there', "x" * 300])
def test_txt_values_round_trip_through_presentation_form(text: str) -> None:
    value = mtasts.txt_value(text)
    assert mtasts.txt_text(value) == text
    assert all(len(chunk) <= 257 for chunk in value.split('" "'))


def test_the_txt_parser_reads_dnspython_escapes() -> None:
    assert mtasts.txt_text('"v=STSv1;\\032id=1" "23"') == "v=STSv1; id=123"


# -- the plan --------------------------------------------------------------------------------------------
STS, RPT = mtasts.sts_name(D), mtasts.tlsrpt_name(D)
RUA = ("mailto:tlsrpt@example.org",)


def test_first_publication_adds_both_records_only_if_they_are_still_absent() -> None:
    plan = mtasts.records(D, ENFORCE.id, NONE, RUA, NONE, {STS: 60, RPT: 60})
    assert plan.add == (Record(STS, "TXT", f'"v=STSv1; id={ENFORCE.id}"', 60),
                        Record(RPT, "TXT", '"v=TLSRPTv1; rua=mailto:tlsrpt@example.org"', 60))
    assert plan.remove == () and plan.require == (Require(STS, "TXT", None), Require(RPT, "TXT", None))


def test_nothing_changes_when_the_records_say_it_already() -> None:
    plan = mtasts.records(D, ENFORCE.id, txt(f"v=STSv1; id={ENFORCE.id}"), RUA,
                          txt("v=TLSRPTv1; rua=mailto:tlsrpt@example.org"), {})
    assert plan == mtasts.Changes()


def test_a_new_id_replaces_every_sts_record_and_keeps_other_txt_records_under_a_prerequisite() -> None:
    seen = txt("v=STSv1; id=old1", "v=STSv1; id=old2", "google-site-verification=x")
    plan = mtasts.records(D, ENFORCE.id, seen, (), NONE, {})
    assert plan.add == (Record(STS, "TXT", f'"v=STSv1; id={ENFORCE.id}"', 300),)  # the RRset's TTL
    assert {r.value for r in plan.remove} == {'"v=STSv1; id=old1"', '"v=STSv1; id=old2"'}
    assert plan.require == (Require(STS, "TXT", seen.values),)


def test_a_policy_that_is_not_served_leaves_the_id_alone_but_not_the_reporting_address() -> None:
    plan = mtasts.records(D, None, txt("v=STSv1; id=old"), RUA, txt("v=TLSRPTv1; rua=mailto:old@example.org"), {})
    assert [r.name for r in plan.add] == [RPT] and [r.name for r in plan.remove] == [RPT]


# -- the refusal before a swap ------------------------------------------------------------------------------
MX = {D: ("mx1.example.org", "a.mx.example.org")}


@pytest.mark.parametrize(("names", "held", "mx", "refused"), [
    (("mx1.example.org",), [Held(D, ENFORCE)], MX, False),
    (("web.example.org",), [Held(D, ENFORCE)], MX, True),
    (("web.example.org",), [Held(D, Policy("testing", ENFORCE.mx, 1))], MX, False),
    (("web.example.org",), [Held(D, Policy("enforce", ("other.example.org",), 1))], MX, False),
    (("web.example.org",), [Held(D, ENFORCE)], {D: ("mx2.example.org",)}, False),  # mx1 is no MX host
    (("web.example.org",), [Held(D, ENFORCE)], {D: None}, True),  # MX RRset unknown: every matched host counts
    (("web.example.org",), [Held(D, Policy("testing", ENFORCE.mx, 1)), Held(D, ENFORCE, 2000.0)], MX, True),
    (("*.example.org",), [Held(D, ENFORCE)], MX, False),
])
def test_a_certificate_that_no_longer_covers_an_enforced_mx_host_is_refused(
        names: tuple[str, ...], held: list[Held], mx: dict[str, tuple[str, ...] | None], refused: bool) -> None:
    line = mtasts.refusal("ab" * 32, ["mx1.example.org"], names, mtasts.still_held(held, 1000.0), mx)
    assert (line is not None) is refused
    if line:
        assert "\n" not in line and "mx1.example.org" in line and "stay" in line


@pytest.mark.parametrize(("policy", "deployed", "problems"), [
    (ENFORCE, {"mx1.example.org": ("mx1.example.org",)}, []),
    (ENFORCE, {"mx1.example.org": ("web.example.org",)}, ["the certificate deployed for mx1.example.org"]),
    (ENFORCE, {"other.example.org": ("web.example.org",)}, []),  # not an MX host
    (Policy("enforce", ("a.mx.example.org",), 1), {}, ["MX host mx1.example.org is not matched"]),
    (Policy("testing", ("a.mx.example.org",), 1), {"mx1.example.org": ("web.example.org",)}, []),
])
def test_an_enforce_policy_is_published_only_if_senders_would_accept_every_mx_host(
        policy: Policy, deployed: dict[str, tuple[str, ...]], problems: list[str]) -> None:
    found = mtasts.unsafe(policy, ("mx1.example.org", "a.mx.example.org"), deployed)
    assert len(found) == len(problems) and all(p in f for p, f in zip(problems, found, strict=True))


def test_a_replaced_policy_is_held_for_its_max_age_and_then_forgotten() -> None:
    old = Policy("enforce", ("mx1.example.org",), 100)
    held = mtasts.replaced(old.text(), ENFORCE, D, 1000.0)
    assert held == Held(D, old, 1100.0)
    assert mtasts.still_held([held], 1099.0) == (held,) and mtasts.still_held([held], 1100.0) == ()
    assert mtasts.replaced(ENFORCE.text(), ENFORCE, D, 1.0) is None
    assert mtasts.replaced("garbage", ENFORCE, D, 1.0) is None and mtasts.replaced(None, ENFORCE, D, 1.0) is None


# -- status findings --------------------------------------------------------------------------------------
NOW = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC).timestamp()
LATER = datetime.datetime(2027, 1, 1, tzinfo=datetime.UTC)
POLICY = mtasts.intended(settings(), None)


def observation(mode: str = "enforce", served: str | None = POLICY.text(), sts: str | None = None,
                mx: tuple[str, ...] = ("mx1.example.org",), seen: tuple[MxSeen, ...] = ()) -> Observation:
    s = settings(mode=mode)
    served_text = served if mode == "enforce" or served is None else mtasts.intended(s, None).text()
    txt_id = mtasts.policy_id(served_text) if served_text else "x"
    return Observation(s, mx, (PolicyServed("127.0.0.9", served_text, None if served_text else "refused", LATER),),
                       txt(sts or f"v=STSv1; id={txt_id}"), NONE, seen)


@pytest.mark.parametrize(("seen", "codes"), [
    (observation(), {}),
    (observation(mx=("mx1.example.org", "mx2.example.org")), {"mx-unmatched": "CRITICAL"}),
    (observation(mode="testing", mx=("mx1.example.org", "mx2.example.org")), {"mx-unmatched": "WARNING"}),
    (observation(served=None), {"policy-unreachable": "CRITICAL"}),
    (observation(served=Policy("enforce", ("old.example.org",), 1).text()),
     {"policy-pending": "WARNING", "mx-unmatched": "CRITICAL"}),
    (observation(served=Policy("enforce", ("mx1.example.org",), 1).text(), sts=f"v=STSv1; id={POLICY.id}"),
     {"policy-pending": "WARNING", "id-ahead": "CRITICAL"}),
    (observation(sts="v=STSv1; id=hand0made"), {"id-stale": "WARNING"}),
    (observation(seen=(MxSeen("mx1.example.org", "127.0.0.8", False, None, "refused"),)),
     {"mx-unreachable": "WARNING"}),
    (observation(seen=(MxSeen("mx1.example.org", "127.0.0.8", False, b"not der", "hostname mismatch"),)),
     {"mx-certificate-invalid": "CRITICAL"}),
])
def test_status_findings_say_what_senders_do(seen: Observation, codes: dict[str, str]) -> None:
    rep = mtastsreport.assess(seen, NOW)
    assert {f.code: f.severity.name for f in rep.findings} == codes
    doc = mtastsreport.to_json(rep, NOW)
    assert doc["status"] == max(codes.values(), key=["OK", "WARNING", "CRITICAL"].index, default="OK")
    assert doc["intended"]["id"] == mtasts.intended(seen.settings, None).id
    assert doc["mx"][0]["host"] == "mx1.example.org"
    assert mtastsreport.to_text(rep, NOW)[1].startswith(f"mta-sts {D}  {doc['status']}")
