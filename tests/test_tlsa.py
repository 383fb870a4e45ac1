"""TLSA association data, compared with what openssl computes independently."""

from __future__ import annotations

import datetime
import hashlib
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from certbot_dane.tlsa import TlsaParams, TlsaRecord, load_chain, record_for, records_for


def _make_cert(key, subject: str, issuer_key=None, issuer: str | None = None) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    return (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer or subject)]))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .sign(issuer_key or key, hashes.SHA256()))


@pytest.fixture(scope="module", params=["rsa", "ecdsa"])
def chain(request, tmp_path_factory) -> tuple[list[x509.Certificate], Path]:
    if request.param == "rsa":
        ca_key, leaf_key = rsa.generate_private_key(65537, 2048), rsa.generate_private_key(65537, 2048)
    else:
        ca_key, leaf_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP384R1())
    ca = _make_cert(ca_key, "Test CA")
    leaf = _make_cert(leaf_key, "mx.example.org", ca_key, "Test CA")
    path = tmp_path_factory.mktemp(request.param) / "fullchain.pem"
    path.write_bytes(b"".join(c.public_bytes(serialization.Encoding.PEM) for c in (leaf, ca)))
    return [leaf, ca], path


def _openssl(args: list[str], stdin: bytes) -> bytes:
    return subprocess.run(["openssl", *args], input=stdin, capture_output=True, check=True).stdout


def _expected(params: str, cert: x509.Certificate) -> str:
    """usage/selector/mtype computed with openssl and hashlib, independently of certbot_dane."""
    usage, selector, mtype = params.split()
    pem = cert.public_bytes(serialization.Encoding.PEM)
    if selector == "0":
        data = _openssl(["x509", "-outform", "DER"], pem)
    else:
        pubkey = _openssl(["x509", "-noout", "-pubkey"], pem)
        data = _openssl(["pkey", "-pubin", "-outform", "DER"], pubkey)
    digest = hashlib.sha256(data) if mtype == "1" else hashlib.sha512(data)
    return f"{params} {digest.hexdigest()}"


@pytest.mark.parametrize("params", ["3 0 1", "3 1 1", "3 0 2", "3 1 2", "2 0 1", "2 1 1", "2 0 2", "2 1 2"])
def test_record_matches_openssl(chain, params):
    certs, _ = chain
    target = certs[0] if params.startswith("3") else certs[1]
    assert record_for(TlsaParams.from_text(params), certs).to_text() == _expected(params, target)


def test_fullchain_pem_loads_leaf_first_and_computes_every_configured_record(chain):
    certs, path = chain
    loaded = load_chain(path.read_bytes())
    params = (TlsaParams(3, 0, 1), TlsaParams(2, 1, 1))
    assert [r.to_text() for r in records_for(params, loaded)] == [
        _expected("3 0 1", certs[0]), _expected("2 1 1", certs[1])]


def test_usage_2_without_issuer_in_chain_is_refused(chain):
    certs, _ = chain
    with pytest.raises(ValueError, match="issuing CA"):
        record_for(TlsaParams(2, 0, 1), certs[:1])


@pytest.mark.parametrize("text, problem", [
    ("3 0", "usage selector mtype"), ("1 0 1", "usage must be 2"), ("3 2 1", "selector"),
    ("3 0 0", "matching type"), ("x y z", "usage selector mtype")])
def test_bad_params_are_rejected_with_the_reason(text, problem):
    with pytest.raises(ValueError, match=problem):
        TlsaParams.from_text(text)


def test_record_text_round_trips_and_abbreviates():
    record = TlsaRecord.from_text("3 0 1 ABCDEF0123 4567")
    assert record.to_text() == "3 0 1 abcdef01234567"
    assert record.abbreviated() == "3 0 1 abcdef01.."
