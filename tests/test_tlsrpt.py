"""RFC 8460 reports as values: real-world shapes read exactly, every malformed one refused in one line."""

from __future__ import annotations

import datetime
import gzip
import json
import zlib
from pathlib import Path
from typing import Any

import pytest

from certbot_dane import tlsrpt
from certbot_dane.errors import ReportError
from certbot_dane.tlsrpt import FailureDetail, Policy, Report

DATA = Path(__file__).parent / "data" / "tlsrpt"


def sample(name: str) -> bytes:
    return (DATA / f"{name}.json").read_bytes()


def utc(text: str) -> float:
    return datetime.datetime.fromisoformat(text).replace(tzinfo=datetime.UTC).timestamp()


def test_a_microsoft_shaped_dane_report_is_read_exactly() -> None:
    report = tlsrpt.parse(sample("microsoft"))
    assert report.key == ("Microsoft Corporation", "134082720000000000+example.org")
    assert (report.start_datetime, report.end_datetime) == (utc("2026-11-22T00:00:00"), utc("2026-11-22T23:59:59"))
    first, second = report.policies
    assert first == Policy(
        "tlsa", "example.org",
        ("3 1 1 0C72AC70B745AC19998811B131D662C9AC69DBDBE7CB23E5B514B56664C5D3D6",
         "3 1 1 1F4F4B2A7C53E0F94C0DD36D56BE86E1A6B11E01B5F9C5D3A0B7E3F8C2E1D4A9"),
        ("mx.example.org",), 412, 3,
        (FailureDetail("tlsa-invalid", 2, "2a01:111:f403:c20f::1", "mx.example.org", None, "192.0.2.25"),
         FailureDetail("dnssec-invalid", 1, "2a01:111:f403:c20f::2", "mx.example.org", None, "192.0.2.25",
                       "SERVFAIL")))
    assert (second.mx_host, second.total_successful_session_count, second.failure_details) == (
        ("mx2.example.org",), 17, ())


def test_a_google_shaped_report_without_mx_hosts_and_a_no_policy_found_entry_is_read() -> None:
    report = tlsrpt.parse(sample("google"))
    sts, none = report.policies
    assert (sts.policy_type, sts.policy_domain, sts.mx_host, sts.total_failure_session_count) == (
        "sts", "example.org", (), 1)
    assert sts.failure_details[0].receiving_mx_hostname == "mx2.example.org"
    assert (none.policy_type, none.policy_string, none.failure_details) == ("no-policy-found", (), ())


def test_tlsrpt_reporters_mx_host_list_and_the_rfc_example_are_read() -> None:
    reporter = tlsrpt.parse(sample("tlsrpt-reporter"))
    assert reporter.policies[0].mx_host == ("mx.example.org",), "tlsrpt-reporter writes mx-host as a list"
    rfc = tlsrpt.parse(sample("rfc8460"))
    assert rfc.policies[0].mx_host == ("*.mail.company-y.example",)
    assert [d.failed_session_count for d in rfc.policies[0].failure_details] == [100, 200, 3]
    assert rfc.policies[0].failure_details[1].additional_information.startswith("https://reports.company-x")


def test_gzip_plain_text_and_a_byte_order_mark_give_the_same_report() -> None:
    plain = sample("microsoft")
    expected = tlsrpt.parse(plain)
    assert tlsrpt.parse(gzip.compress(plain)) == expected
    assert tlsrpt.parse(b"\xef\xbb\xbf" + plain) == expected
    assert tlsrpt.parse(plain.decode()) == expected
    half = len(plain) // 2  # gzip(1) reads every member, and ignores trailing zeros
    assert tlsrpt.decompress(gzip.compress(plain[:half]) + gzip.compress(plain[half:]) + b"\0\0") == plain


def test_only_dane_failures_count_as_dane() -> None:
    tlsa = tlsrpt.parse(sample("microsoft")).policies[0]
    sts = tlsrpt.parse(sample("google")).policies[0]
    assert all(tlsa.dane(d) for d in tlsa.failure_details)
    assert not sts.dane(sts.failure_details[0]), "certificate-host-mismatch under MTA-STS is not DANE's"
    assert sts.dane(FailureDetail("dane-required", 1))


def edited(change: Any) -> bytes:
    document = json.loads(sample("microsoft"))
    change(document)
    return json.dumps(document).encode()


def policy(document: dict[str, Any]) -> dict[str, Any]:
    entry: dict[str, Any] = document["policies"][0]
    return entry


MALFORMED = [
    (gzip.compress(sample("microsoft"))[:200], "truncated gzip"),
    (b"\x1f\x8b\x08\x00" + b"\xff" * 40, "corrupt gzip"),
    (b"\x1f\x8b", "truncated gzip"),
    (b"{\"organization-name\": ", "not JSON"),
    (b"", "not JSON"),
    (b"\xff\xfe{}", "not UTF-8"),
    (b"[" * 100000, "not JSON"),
    (b"[1, 2]", "the report: must be a JSON object, not a list"),
    (edited(lambda d: d.pop("report-id")), "report-id: must be a non-empty string, not null"),
    (edited(lambda d: d.update({"report-id": ""})), "report-id: must be a non-empty string, not empty"),
    (edited(lambda d: d.pop("organization-name")), "organization-name: must be a non-empty string"),
    (edited(lambda d: d.pop("date-range")), "date-range: must be a JSON object, not null"),
    (edited(lambda d: d["date-range"].update({"start-datetime": "yesterday"})),
     "date-range.start-datetime: 'yesterday' is not an RFC 3339 date-time"),
    (edited(lambda d: d["date-range"].update({"end-datetime": 1700000000})),
     "date-range.end-datetime: must be an RFC 3339 date-time string, not a number"),
    (edited(lambda d: d["date-range"].update({"end-datetime": "2026-11-21T00:00:00Z"})),
     "end-datetime is before start-datetime"),
    (edited(lambda d: d.update({"policies": {}})), "policies: must be a list, not an object"),
    (edited(lambda d: policy(d)["policy"].update({"policy-type": "dane"})),
     "policies\\[0\\].policy.policy-type: 'dane' is not one of tlsa, sts, no-policy-found"),
    (edited(lambda d: policy(d)["policy"].pop("policy-domain")), "policies\\[0\\].policy.policy-domain"),
    (edited(lambda d: policy(d)["policy"].update({"mx-host": 25})),
     "policies\\[0\\].policy.mx-host: must be a string or a list of strings, not a number"),
    (edited(lambda d: policy(d).pop("summary")), "policies\\[0\\].summary: must be a JSON object, not null"),
    (edited(lambda d: policy(d)["summary"].update({"total-failure-session-count": -1})),
     "total-failure-session-count: must be a non-negative integer, not -1"),
    (edited(lambda d: policy(d)["summary"].update({"total-successful-session-count": "412"})),
     "must be a non-negative integer, not '412'"),
    (edited(lambda d: policy(d)["summary"].update({"total-successful-session-count": True})),
     "must be a non-negative integer, not True"),
    (edited(lambda d: policy(d)["summary"].update({"total-successful-session-count": 4.5})),
     "must be a non-negative integer, not 4.5"),
    (edited(lambda d: policy(d).update({"failure-details": {"result-type": "x"}})),
     "policies\\[0\\].failure-details: must be a list, not an object"),
    (edited(lambda d: policy(d)["failure-details"][1].pop("result-type")),
     "policies\\[0\\].failure-details\\[1\\].result-type: must be a non-empty string"),
    (edited(lambda d: policy(d)["failure-details"][0].update({"failed-session-count": None})),
     "failure-details\\[0\\].failed-session-count: must be a non-negative integer, not None"),
]


@pytest.mark.parametrize("data, why", MALFORMED)
def test_a_malformed_report_is_refused_with_one_line_saying_where(data: bytes, why: str) -> None:
    with pytest.raises(ReportError, match=why) as info:
        tlsrpt.parse(data)
    assert "\n" not in str(info.value) and len(str(info.value)) < 300


def test_a_gzip_bomb_stops_at_the_limit_without_inflating_it() -> None:
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    bomb = b"".join(packer.compress(b"\0" * (1 << 20)) for _ in range(64)) + packer.flush()  # 64 MiB in ~64 KiB
    assert len(bomb) < 100_000
    with pytest.raises(ReportError, match="over the 1048576-byte limit uncompressed"):
        tlsrpt.parse(bomb, limit=1 << 20)
    with pytest.raises(ReportError, match="over the 100-byte limit"):
        tlsrpt.parse(sample("microsoft"), limit=100)


def test_what_the_report_leaves_out_is_empty_not_an_error() -> None:
    bare = {"organization-name": "o", "report-id": 7, "policies": [],
            "date-range": {"start-datetime": "2026-11-22T00:00:00+01:00", "end-datetime": "2026-11-22T01:00:00"}}
    report = tlsrpt.parse(json.dumps(bare))
    assert report == Report("o", "7", "", utc("2026-11-21T23:00:00"), utc("2026-11-22T01:00:00"), ())
