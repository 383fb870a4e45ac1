"""What differs between the supported certbot/acme, dnspython, cryptography and Python releases, in one place.

Third-party imports only, so the pure core may use it. Tested lower bounds (Debian 12): certbot/acme 2.1,
dnspython 2.3, cryptography 38, josepy 1.13.
Each name below says which release made the difference; drop it once that release is the floor.
"""

from __future__ import annotations

import argparse
import datetime
import re
from typing import TYPE_CHECKING

import dns.dnssec
import dns.exception
import dns.message
from cryptography import x509

if TYPE_CHECKING:
    from _typeshed import SupportsWrite
    from certbot.achallenges import AnnotatedChallenge

_PEM_CERTIFICATE = re.compile(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.DOTALL)

ValidationFailure: type[dns.exception.DNSException] = getattr(
    dns.exception, "ValidationFailure", None) or dns.dnssec.ValidationFailure  # type: ignore[attr-defined]
"""What dns.dnssec.validate raises for a signature that does not verify (dns.exception from dnspython 2.4)."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose --help/--version to a reader that went away is no error (Python 3.11.7; Debian 12 has 3.11.2)."""

    def _print_message(self, message: str, file: SupportsWrite[str] | None = None) -> None:
        try:
            super()._print_message(message, file)
        except OSError:
            pass


def load_pem_certificates(pem: bytes) -> list[x509.Certificate]:
    """Every certificate of a PEM bundle, in order; ValueError if there is none (cryptography 39 has one call)."""
    load_many = getattr(x509, "load_pem_x509_certificates", None)
    return list(load_many(pem)) if load_many is not None else _split_pem_certificates(pem)


def _split_pem_certificates(pem: bytes) -> list[x509.Certificate]:
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


def signed_answer(wire: bytes, request: dns.message.Message) -> dns.message.Message:
    """The answer to a request, its TSIG checked; FormError if the request was signed and the answer is not.

    Recent dnspython raises that FormError itself; 2.3 accepts an unsigned answer (even a forged NOERROR).
    """
    answer = dns.message.from_wire(wire, keyring=request.keyring, request_mac=request.mac)
    if request.had_tsig and not answer.had_tsig:
        raise dns.exception.FormError
    return answer
