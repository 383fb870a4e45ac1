"""TLSA association data (RFC 6698 §2.1): pure functions of certificates, no I/O."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from certbot_dane import compat

USAGES = {2: "DANE-TA", 3: "DANE-EE"}
SELECTORS = {0: "full certificate", 1: "SubjectPublicKeyInfo"}
MTYPES = {1: "SHA-256", 2: "SHA-512"}


@dataclass(frozen=True, order=True)
class TlsaParams:
    """Usage, selector and matching type of a TLSA record, e.g. 3 0 1."""

    usage: int
    selector: int
    mtype: int

    @classmethod
    def from_text(cls, text: str) -> TlsaParams:
        """Parse "3 0 1"; ValueError naming what is wrong."""
        parts = text.split()
        if len(parts) != 3 or not all(p.isdigit() for p in parts):
            raise ValueError(f"{text!r} is not 'usage selector mtype', e.g. '3 0 1'")
        params = cls(*(int(p) for p in parts))
        if params.usage not in USAGES:
            raise ValueError(f"{text!r}: usage must be 2 (DANE-TA) or 3 (DANE-EE)")
        if params.selector not in SELECTORS:
            raise ValueError(f"{text!r}: selector must be 0 (certificate) or 1 (public key)")
        if params.mtype not in MTYPES:
            raise ValueError(f"{text!r}: matching type must be 1 (SHA-256) or 2 (SHA-512)")
        return params

    def __str__(self) -> str:
        return f"{self.usage} {self.selector} {self.mtype}"


@dataclass(frozen=True, order=True)
class TlsaRecord:
    """One TLSA record's data, with dnspython's field names; `cert` is the association data."""

    usage: int
    selector: int
    mtype: int
    cert: bytes

    @classmethod
    def from_text(cls, text: str) -> TlsaRecord:
        """Parse presentation format, e.g. '3 0 1 ab12...'."""
        usage, selector, mtype, *data = text.split()
        return cls(int(usage), int(selector), int(mtype), bytes.fromhex("".join(data)))

    def to_text(self) -> str:
        """Presentation format, lower-case hex as BIND prints it."""
        return f"{self.usage} {self.selector} {self.mtype} {self.cert.hex()}"

    def abbreviated(self) -> str:
        """Short form for humans: '3 0 1 ab12cd34..'."""
        return f"{self.usage} {self.selector} {self.mtype} {self.cert.hex()[:8]}.."


def association_data(cert: x509.Certificate, selector: int, mtype: int) -> bytes:
    """The bytes a TLSA record with this selector and matching type holds for `cert`."""
    if selector == 0:
        selected = cert.public_bytes(Encoding.DER)
    elif selector == 1:
        selected = cert.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    else:
        raise ValueError(f"unsupported TLSA selector {selector}")
    if mtype == 1:
        return hashlib.sha256(selected).digest()
    if mtype == 2:
        return hashlib.sha512(selected).digest()
    raise ValueError(f"unsupported TLSA matching type {mtype}")


def record_for(params: TlsaParams, chain: list[x509.Certificate]) -> TlsaRecord:
    """The record for `params` given the chain [leaf, issuer, ...].

    Usage 3 pins the leaf; usage 2 pins the CA that issued the leaf (the chain's second entry).
    """
    if params.usage == 3:
        target = chain[0]
    elif params.usage == 2:
        if len(chain) < 2:
            raise ValueError("usage 2 (DANE-TA) needs the issuing CA certificate in the chain")
        target = chain[1]
    else:
        raise ValueError(f"unsupported TLSA usage {params.usage}")
    return TlsaRecord(params.usage, params.selector, params.mtype,
                      association_data(target, params.selector, params.mtype))


def records_for(params: tuple[TlsaParams, ...], chain: list[x509.Certificate]) -> tuple[TlsaRecord, ...]:
    """The records for every parameter set of a lineage, in the configured order."""
    return tuple(record_for(p, chain) for p in params)


def load_chain(pem: bytes) -> list[x509.Certificate]:
    """Parse a PEM bundle (fullchain.pem: leaf first) into certificates."""
    return compat.load_pem_certificates(pem)


def served_leaf_matches(leaf_der: bytes, values: set[str] | frozenset[str]) -> bool:
    """Whether a served leaf certificate matches one of the usage-3 (DANE-EE) records in `values`."""
    leaf = x509.load_der_x509_certificate(leaf_der)
    for value in values:
        record = TlsaRecord.from_text(value)
        if record.usage == 3 and record.selector in SELECTORS and record.mtype in MTYPES \
                and association_data(leaf, record.selector, record.mtype) == record.cert:
            return True
    return False
