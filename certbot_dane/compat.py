"""What differs between the supported certbot/acme, dnspython and cryptography releases, in one place.

Third-party imports only, so the pure core may use it. Tested lower bounds (Debian 12): certbot/acme 2.1,
dnspython 2.3, cryptography 38, josepy 1.13.
Each name below says which release made the difference; drop it once that release is the floor.
"""

from __future__ import annotations

import datetime
import re
from typing import TYPE_CHECKING

import dns.dnssec
import dns.exception
from cryptography import x509

if TYPE_CHECKING:
    from certbot.achallenges import AnnotatedChallenge

_PEM_CERTIFICATE = re.compile(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.DOTALL)

ValidationFailure: type[dns.exception.DNSException] = getattr(
    dns.exception, "ValidationFailure", None) or dns.dnssec.ValidationFailure  # type: ignore[attr-defined]
"""What dns.dnssec.validate raises for a signature that does not verify (dns.exception from dnspython 2.4)."""


def load_pem_certificates(pem: bytes) -> list[x509.Certificate]:
    """Every certificate of a PEM bundle, in order; ValueError if there is none (cryptography 39 has one call)."""
    load_many = getattr(x509, "load_pem_x509_certificates", None)
    if load_many is not None:
        return list(load_many(pem))
    blocks = _PEM_CERTIFICATE.findall(pem)
    if not blocks:
        raise ValueError("Unable to load PEM file: no certificate found")
    return [x509.load_pem_x509_certificate(block) for block in blocks]


def not_valid_before(cert: x509.Certificate) -> datetime.datetime:
    """The start of validity, timezone-aware UTC (cryptography 42 has `not_valid_before_utc`)."""
    aware = getattr(cert, "not_valid_before_utc", None)
    return aware if isinstance(aware, datetime.datetime) else _utc(cert.not_valid_before)


def not_valid_after(cert: x509.Certificate) -> datetime.datetime:
    """The end of validity, timezone-aware UTC (cryptography 42 has `not_valid_after_utc`)."""
    aware = getattr(cert, "not_valid_after_utc", None)
    return aware if isinstance(aware, datetime.datetime) else _utc(cert.not_valid_after)


def _utc(naive: datetime.datetime) -> datetime.datetime:
    return naive.replace(tzinfo=datetime.UTC)


def challenge_domain(achall: AnnotatedChallenge) -> str:
    """The domain name a challenge is for (`identifier.value` from certbot 5.3, `domain` before, deprecated after)."""
    identifier = getattr(achall, "identifier", None)
    return str(identifier.value) if identifier is not None else str(achall.domain)
