"""The verifier against real TLS endpoints on loopback: STARTTLS dialogues, implicit TLS, SNI, failures, reload."""

from __future__ import annotations

import datetime
import hashlib
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from certbot_dane import services
from certbot_dane.config import VerifyTarget
from certbot_dane.errors import ReloadFailed, VerifyFailed
from certbot_dane.tlsa import TlsaParams, record_for, served_leaf_matches
from certbot_dane.verify import served_certificate
from sandbox.tlsendpoint import PROTOCOLS, Fault, TlsEndpoint, TlsEndpointError

HOST = "mx.example.test"  # never resolved: every connection goes to ADDRESS, HOST is only the SNI
ADDRESS = "127.0.0.1"
SCHEMES = sorted(PROTOCOLS)
STARTTLS_SCHEMES = ["imap", "pop3", "smtp", "submission"]


@dataclass(frozen=True)
class TestCert:
    """A self-signed certificate and its key as PEM files, and the certificate's DER."""

    __test__ = False
    fullchain: Path
    privkey: Path
    der: bytes

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256(self.der).hexdigest()

    def tlsa(self, params: str) -> str:
        """The usage-3 TLSA rdata text for this certificate, e.g. '3 1 1 ab12...'."""
        chain = [x509.load_der_x509_certificate(self.der)]
        return record_for(TlsaParams.from_text(params), chain).to_text()


def make_cert(directory: Path, kind: str, name: str = HOST) -> TestCert:
    """A self-signed certificate for `name` with an RSA-2048 or ECDSA P-256 key, written as PEM files."""
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey = (
        rsa.generate_private_key(public_exponent=65537, key_size=2048) if kind == "rsa"
        else ec.generate_private_key(ec.SECP256R1()))
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=90))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
            .sign(key, hashes.SHA256()))
    directory.mkdir(parents=True, exist_ok=True)
    fullchain, privkey = directory / "fullchain.pem", directory / "privkey.pem"
    fullchain.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    privkey.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    privkey.chmod(0o600)
    return TestCert(fullchain, privkey, cert.public_bytes(serialization.Encoding.DER))


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, TestCert]:
    """An RSA and an ECDSA certificate for HOST, and an unrelated one ("other")."""
    base = tmp_path_factory.mktemp("certs")
    return {kind: make_cert(base / kind, kind.removeprefix("other-")) for kind in ("rsa", "ecdsa", "other-rsa")}


def serve(scheme: str, cert: TestCert, *, fault: Fault | None = None, greeting: list[str] | None = None) -> TlsEndpoint:
    return TlsEndpoint(scheme, cert.fullchain, cert.privkey, fault=fault, greeting=greeting)


def target(scheme: str, endpoint: TlsEndpoint | int) -> VerifyTarget:
    return VerifyTarget(scheme, HOST, endpoint if isinstance(endpoint, int) else endpoint.port)


@pytest.mark.parametrize("kind", ["rsa", "ecdsa"])
@pytest.mark.parametrize("scheme", SCHEMES)
def test_fetches_exactly_the_served_certificate_and_it_matches_only_its_own_records(
        scheme: str, kind: str, certs: dict[str, TestCert]) -> None:
    cert, other = certs[kind], certs["other-rsa"]
    with serve(scheme, cert) as endpoint:
        der = served_certificate(target(scheme, endpoint), ADDRESS)

    assert hashlib.sha256(der).hexdigest() == cert.fingerprint
    assert served_leaf_matches(der, {cert.tlsa("3 0 1")})
    assert served_leaf_matches(der, {cert.tlsa("3 1 1")})
    assert served_leaf_matches(der, {other.tlsa("3 0 1"), other.tlsa("3 1 1"), cert.tlsa("3 1 2")})
    assert not served_leaf_matches(der, {other.tlsa("3 0 1"), other.tlsa("3 1 1")})
    assert endpoint.sni == [HOST]
    assert endpoint.errors == []


@pytest.mark.parametrize(("scheme", "dialogue"), [
    ("smtp", ["EHLO certbot-dane.invalid", "STARTTLS"]),
    ("submission", ["EHLO certbot-dane.invalid", "STARTTLS"]),
    ("imap", ["a1 STARTTLS"]),
    ("pop3", ["STLS"]),
    ("imaps", []),
])
def test_speaks_the_scheme_s_plain_text_dialogue_before_tls(
        scheme: str, dialogue: list[str], certs: dict[str, TestCert]) -> None:
    with serve(scheme, certs["ecdsa"]) as endpoint:
        served_certificate(target(scheme, endpoint), ADDRESS)
    assert endpoint.commands == dialogue


@pytest.mark.parametrize(("scheme", "reply"), [
    ("smtp", "454 4.7.0 TLS not available due to temporary reason"),
    ("submission", "454 4.7.0 TLS not available due to temporary reason"),
    ("imap", "a1 NO [UNAVAILABLE] STARTTLS is not available now"),
    ("pop3", "-ERR TLS not available now"),
])
def test_refused_starttls_names_the_endpoint_and_the_server_s_reply(
        scheme: str, reply: str, certs: dict[str, TestCert]) -> None:
    with serve(scheme, certs["rsa"], fault="refuse-starttls") as endpoint:
        where = target(scheme, endpoint)
        with pytest.raises(VerifyFailed) as caught:
            served_certificate(where, ADDRESS)
    message = str(caught.value)
    assert str(where) in message and ADDRESS in message
    assert "STARTTLS" in message and reply in message
    assert endpoint.sni == []  # no handshake was attempted


@pytest.mark.parametrize("scheme", ["smtp", "imaps"])
def test_nothing_listening_names_the_endpoint(scheme: str) -> None:
    with socket.socket() as bound:  # bound but not listening: connections are refused, and the port stays ours
        bound.bind((ADDRESS, 0))
        where = target(scheme, bound.getsockname()[1])
        with pytest.raises(VerifyFailed) as caught:
            served_certificate(where, ADDRESS)
    assert str(where) in str(caught.value)
    assert "refused" in str(caught.value).lower()


@pytest.mark.parametrize(("scheme", "cause"), [
    ("smtp", "closed the connection while we waited for the SMTP greeting"),
    ("imap", "closed the connection while we waited for the IMAP greeting"),
    ("pop3", "closed the connection while we waited for the POP3 greeting"),
    ("pop3s", "cannot fetch the certificate"),
])
def test_server_that_hangs_up_names_the_endpoint_and_the_step(
        scheme: str, cause: str, certs: dict[str, TestCert]) -> None:
    with serve(scheme, certs["rsa"], fault="hang-up") as endpoint:
        where = target(scheme, endpoint)
        with pytest.raises(VerifyFailed) as caught:
            served_certificate(where, ADDRESS)
    assert str(where) in str(caught.value)
    assert cause in str(caught.value)


@pytest.mark.parametrize("scheme", ["smtp", "https"])
def test_silent_server_gives_a_timeout_failure_not_a_hang(scheme: str, certs: dict[str, TestCert]) -> None:
    with serve(scheme, certs["rsa"], fault="silent") as endpoint:
        where = target(scheme, endpoint)
        with pytest.raises(VerifyFailed) as caught:
            served_certificate(where, ADDRESS, timeout=0.3)
    assert str(where) in str(caught.value)
    assert "no answer within 0.3 s" in str(caught.value)


@pytest.mark.parametrize(("scheme", "greeting", "ok_or_cause"), [
    ("smtp", ["220-first line", "220-second line", "220 last line"], None),
    ("smtp", ["220-mx.example.test ESMTP", "220"], None),  # RFC 5321: the text after the code is optional
    ("smtp", ["554 5.3.2 mx.example.test no SMTP service here"], "the server refused the session: 554 5.3.2"),
    ("smtp", ["SSH-2.0-OpenSSH_9.2"], "not an SMTP reply while we waited for the SMTP greeting"),
    ("imap", ["* PREAUTH already logged in"], "unexpected IMAP greeting: * PREAUTH"),
    ("imap", ["* BYE too many connections"], "unexpected IMAP greeting: * BYE"),
    ("pop3", ["-ERR go away"], "unexpected POP3 greeting: -ERR go away"),
])
def test_greetings(scheme: str, greeting: list[str], ok_or_cause: str | None, certs: dict[str, TestCert]) -> None:
    with serve(scheme, certs["ecdsa"], greeting=greeting) as endpoint:
        where = target(scheme, endpoint)
        if ok_or_cause is None:
            assert served_certificate(where, ADDRESS) == certs["ecdsa"].der
            return
        with pytest.raises(VerifyFailed) as caught:
            served_certificate(where, ADDRESS)
    assert str(where) in str(caught.value)
    assert ok_or_cause in str(caught.value)


# -- reload: what the deploy end-to-end tests rely on ----------------------------------------------------------------

@pytest.fixture
def deploy_dir(tmp_path: Path, certs: dict[str, TestCert]) -> Iterator[Path]:
    """<deploy>/.versions/lin/{rsa,ecdsa}/ and <deploy>/lin -> .versions/lin/rsa, as certbot-dane lays it out."""
    deploy = tmp_path / "live"
    for kind in ("rsa", "ecdsa"):
        version = deploy / ".versions" / "lin" / kind
        version.mkdir(parents=True)
        for name in ("fullchain.pem", "privkey.pem"):
            (version / name).write_bytes((certs[kind].fullchain.parent / name).read_bytes())
    os.symlink(Path(".versions") / "lin" / "rsa", deploy / "lin")
    yield deploy


def swap(deploy: Path, version: str) -> None:
    """Point <deploy>/lin at another version in one rename(2), like certbot-dane's swap."""
    tmp = deploy / ".lin.tmp"
    os.symlink(Path(".versions") / "lin" / version, tmp)
    os.replace(tmp, deploy / "lin")


def test_reload_makes_new_connections_get_the_swapped_certificate(
        deploy_dir: Path, certs: dict[str, TestCert]) -> None:
    with TlsEndpoint.for_lineage("smtp", deploy_dir, "lin") as endpoint:
        where = target("smtp", endpoint)
        assert served_certificate(where, ADDRESS) == certs["rsa"].der
        swap(deploy_dir, "ecdsa")
        assert served_certificate(where, ADDRESS) == certs["rsa"].der  # a swap alone changes nothing served
        endpoint.reload()
        assert served_certificate(where, ADDRESS) == certs["ecdsa"].der
    assert endpoint.reloads == 1


def test_reload_command_run_by_the_reload_step_reloads_the_endpoint(
        deploy_dir: Path, certs: dict[str, TestCert]) -> None:
    with TlsEndpoint.for_lineage("imaps", deploy_dir, "lin") as endpoint:
        swap(deploy_dir, "ecdsa")
        services.reload("lin", [endpoint.reload_command])  # returns once the endpoint has reloaded
        assert served_certificate(target("imaps", endpoint), ADDRESS) == certs["ecdsa"].der
    assert endpoint.reloads == 1


def test_reload_of_a_mismatched_pair_fails_and_keeps_serving_the_old_certificate(
        deploy_dir: Path, certs: dict[str, TestCert]) -> None:
    with TlsEndpoint.for_lineage("pop3", deploy_dir, "lin") as endpoint:
        (deploy_dir / ".versions" / "lin" / "ecdsa" / "privkey.pem").write_bytes(certs["rsa"].privkey.read_bytes())
        swap(deploy_dir, "ecdsa")
        with pytest.raises(TlsEndpointError, match="cannot load"):
            endpoint.reload()
        assert served_certificate(target("pop3", endpoint), ADDRESS) == certs["rsa"].der
        with pytest.raises(ReloadFailed, match="exited 1: tlsendpoint: reload failed: .*cannot load"):
            services.reload("lin", [endpoint.reload_command])
    assert endpoint.reloads == 0


def test_an_ipv6_literal_endpoint_is_fetched_and_named_in_brackets(certs: dict[str, TestCert]) -> None:
    cert = certs["ecdsa"]
    with TlsEndpoint("smtp", cert.fullchain, cert.privkey, host="::1") as endpoint:
        der = served_certificate(VerifyTarget("smtp", "::1", endpoint.port))
        port = endpoint.port
    assert hashlib.sha256(der).hexdigest() == cert.fingerprint
    assert endpoint.sni == [None], "no SNI for an address"
    with pytest.raises(VerifyFailed, match=rf"^smtp://\[::1\]:{port}: cannot fetch the certificate"):
        served_certificate(VerifyTarget("smtp", "::1", port))
