"""Many lineages at once: self-signed certificates written where certbot would put them.

Used by the batch tests and the deploy benchmark, where issuing hundreds of certificates
through Pebble would measure Pebble rather than certbot-dane.
"""

from __future__ import annotations

import datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def write_certificate(directory: Path, host: str, *, age: datetime.timedelta = datetime.timedelta(hours=1),
                      lifetime: datetime.timedelta = datetime.timedelta(days=90)) -> None:
    """cert.pem, chain.pem, fullchain.pem, privkey.pem of a fresh self-signed certificate for `host`.

    `age` sets how long ago it became valid: a smaller age means a newer certificate.
    """
    directory.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    start = datetime.datetime.now(datetime.UTC) - age
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(start)
            .not_valid_after(start + lifetime)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
            .sign(key, hashes.SHA256()))
    pem = cert.public_bytes(serialization.Encoding.PEM)
    (directory / "cert.pem").write_bytes(pem)
    (directory / "chain.pem").write_bytes(b"")
    (directory / "fullchain.pem").write_bytes(pem)
    (directory / "privkey.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                              serialization.PrivateFormat.PKCS8,
                                                              serialization.NoEncryption()))
    (directory / "privkey.pem").chmod(0o600)


def write_fleet(letsencrypt_dir: Path, hosts: list[str], age: datetime.timedelta) -> None:
    """One certbot-like live/<host>/ directory per host."""
    for host in hosts:
        write_certificate(letsencrypt_dir / "live" / host, host, age=age)
