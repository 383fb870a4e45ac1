"""A certificate set (leaf, chain, key) as values: fingerprint, names, validity, TLSA records. No I/O."""

from __future__ import annotations

import datetime
import hashlib
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from certbot_dane import compat
from certbot_dane.tlsa import TlsaParams, TlsaRecord, load_chain, records_for

FILES = ("cert.pem", "chain.pem", "fullchain.pem", "privkey.pem")


@dataclass(frozen=True)
class CertSet:
    """The PEM bytes of one certbot certificate version; `privkey` never appears in repr()."""

    cert: bytes
    chain: bytes
    fullchain: bytes
    privkey: bytes

    def files(self) -> dict[str, bytes]:
        """File name -> content, as certbot names them."""
        return dict(zip(FILES, (self.cert, self.chain, self.fullchain, self.privkey), strict=True))

    def __repr__(self) -> str:
        return f"CertSet(fingerprint={fingerprint(self.cert)[:16]})"


@dataclass(frozen=True)
class CertInfo:
    """What certbot-dane needs to know about a leaf certificate."""

    fingerprint: str
    subject: str
    serial: str
    not_before: datetime.datetime
    not_after: datetime.datetime
    names: tuple[str, ...]

    def days_left(self, now: datetime.datetime) -> float:
        """Days until expiry (negative once expired)."""
        return (self.not_after - now).total_seconds() / 86400


def fingerprint(cert_pem: bytes) -> str:
    """SHA-256 of the leaf certificate's DER, in hex: the identity of a certificate version."""
    return fingerprint_der(load_chain(cert_pem)[0].public_bytes(serialization.Encoding.DER))


def fingerprint_der(der: bytes) -> str:
    """SHA-256 of a DER certificate, in hex (as served in a TLS handshake)."""
    return hashlib.sha256(der).hexdigest()


def info(cert_pem: bytes) -> CertInfo:
    """Describe the first certificate of a PEM bundle."""
    leaf = load_chain(cert_pem)[0]
    try:
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = tuple(n.lower() for n in san.get_values_for_type(x509.DNSName))
    except x509.ExtensionNotFound:
        names = ()
    common = leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return CertInfo(
        fingerprint=fingerprint(cert_pem),
        subject=str(common[0].value) if common else leaf.subject.rfc4514_string(),
        serial=format(leaf.serial_number, "x"),
        not_before=compat.not_valid_before(leaf),
        not_after=compat.not_valid_after(leaf),
        names=names,
    )


def tlsa_records(certs: CertSet, params: tuple[TlsaParams, ...]) -> tuple[TlsaRecord, ...]:
    """The TLSA records of this certificate for the lineage's parameter sets."""
    return records_for(params, load_chain(certs.fullchain))


def covers(names: tuple[str, ...], host: str) -> bool:
    """Whether a certificate for `names` is valid for `host` (one-label wildcards allowed)."""
    host = host.lower().rstrip(".")
    for name in names:
        if name == host or (name.startswith("*.") and host.partition(".")[2] == name[2:]):
            return True
    return False


def problems(certs: CertSet, now: datetime.datetime) -> list[str]:
    """Reasons this certificate set must not be staged: unreadable, key mismatch, not valid now."""
    try:
        leaf = load_chain(certs.cert)[0]
        key = serialization.load_pem_private_key(certs.privkey, password=None)
    except ValueError as err:
        return [f"cannot parse the certificate or key: {err}"]
    found = []
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    if key.public_key().public_bytes(serialization.Encoding.DER, spki) != \
            leaf.public_key().public_bytes(serialization.Encoding.DER, spki):
        found.append("the private key does not match the certificate")
    start, end = compat.not_valid_before(leaf), compat.not_valid_after(leaf)
    if now < start:
        found.append(f"the certificate is not valid before {start:%Y-%m-%d %H:%M} UTC")
    if now >= end:
        found.append(f"the certificate expired on {end:%Y-%m-%d %H:%M} UTC")
    if load_chain(certs.fullchain)[0] != leaf:
        found.append("fullchain.pem does not start with cert.pem")
    return found
