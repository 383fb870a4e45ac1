"""DNSSEC verdicts on authoritative answers (dns.dnssec): pure functions of RRsets, no I/O."""

from __future__ import annotations

from dataclasses import dataclass

import dns.dnssec
import dns.name
import dns.rdatatype
import dns.rrset

from certbot_dane import compat

VALID = "valid"        # signed, and the signature verifies against the zone's DNSKEY RRset
UNSIGNED = "unsigned"  # the zone has no DNSKEY RRset: DANE protects nothing there
BOGUS = "bogus"        # signed zone, but a signature is missing, expired or does not verify
NONE = "none"          # signed zone, no RRset at the name (nothing to validate; NSEC proofs not checked)


@dataclass(frozen=True)
class SignedAnswer:
    """One server's answer to a query with the DO bit: the RRset and the RRSIGs covering it (None if absent)."""

    rcode: str
    authoritative: bool
    rrset: dns.rrset.RRset | None
    sigs: dns.rrset.RRset | None

    @property
    def signer(self) -> str | None:
        """The zone that signed the RRset (the RRSIG signer name, lower case), if it is signed."""
        if not self.sigs:
            return None
        return str(next(iter(self.sigs)).signer.to_text().lower())


@dataclass(frozen=True)
class Verdict:
    """What a validating resolver would make of one answer, and why."""

    status: str
    reason: str = ""


def check_zone(zone: str, dnskey: dns.rrset.RRset | None, sigs: dns.rrset.RRset | None, now: float) -> Verdict:
    """Whether the zone is signed: its DNSKEY RRset exists and is signed by one of its own keys.

    The DS in the parent zone is not checked (the chain of trust above the zone is out of scope).
    """
    if dnskey is None:
        return Verdict(UNSIGNED, f"zone {zone} has no DNSKEY RRset")
    return _validate(zone, dnskey, sigs, dnskey, now)


def check_rrset(zone: str, rrset: dns.rrset.RRset | None, sigs: dns.rrset.RRset | None,
                dnskey: dns.rrset.RRset | None, now: float) -> Verdict:
    """Whether an RRset validates against the zone's DNSKEY RRset (as served by the same server)."""
    if dnskey is None:
        return Verdict(UNSIGNED, f"zone {zone} has no DNSKEY RRset")
    if rrset is None:
        return Verdict(NONE, "no RRset to validate")
    return _validate(zone, rrset, sigs, dnskey, now)


def _validate(zone: str, rrset: dns.rrset.RRset, sigs: dns.rrset.RRset | None, dnskey: dns.rrset.RRset,
              now: float) -> Verdict:
    what = f"{rrset.name} {dns.rdatatype.to_text(rrset.rdtype)}"
    if sigs is None:
        return Verdict(BOGUS, f"no RRSIG over {what} although zone {zone} is signed")
    try:
        dns.dnssec.validate(rrset, sigs, {dns.name.from_text(zone): dnskey}, now=now)
    except compat.ValidationFailure as err:
        return Verdict(BOGUS, f"RRSIG over {what} does not validate against the DNSKEY of {zone}: {err}")
    return Verdict(VALID)


def worst(verdicts: list[Verdict]) -> str:
    """One word for several verdicts: bogus beats unsigned beats valid; none only if nothing else."""
    found = {v.status for v in verdicts}
    for status in (BOGUS, UNSIGNED, VALID):
        if status in found:
            return status
    return NONE
