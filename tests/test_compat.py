"""certbot_dane.compat gives the same answers on every supported stack, Debian 12's included.

No pytest, no fixtures, nothing from this repository but certbot_dane: tests/test_debian.py also runs
these functions with Debian's /usr/bin/python3 against the installed package (certbot 2.1, dnspython
2.3, cryptography 38), where the fallbacks are the code paths taken.
"""

from __future__ import annotations

import datetime
import io

import dns.dnssec
import dns.exception
import dns.message
import dns.name
import dns.rcode
import dns.rrset
import dns.tsig
import dns.tsigkeyring
import dns.update
from acme import challenges, messages
from certbot import achallenges
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from certbot_dane import compat

START = datetime.datetime(2030, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)


def certificate(name: str, days: int = 90) -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    return (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(START)
            .not_valid_after(START + datetime.timedelta(days=days)).sign(key, hashes.SHA256()))


def pem(*certs: x509.Certificate) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def test_a_pem_bundle_gives_every_certificate_in_order_on_either_path() -> None:
    leaf, issuer = certificate("mx.example.org"), certificate("issuer")
    bundle = pem(leaf, issuer)
    assert compat.load_pem_certificates(bundle) == [leaf, issuer]
    assert compat._split_pem_certificates(bundle) == [leaf, issuer]
    assert compat._split_pem_certificates(b"junk\n" + bundle.replace(b"\n", b"\r\n") + b"trailing\n") == [leaf, issuer]
    for load in (compat.load_pem_certificates, compat._split_pem_certificates):
        for nothing in (b"", b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"):
            try:
                load(nothing)
            except ValueError:
                continue
            raise AssertionError(f"{load.__name__} accepted {nothing!r}")


def test_validity_dates_are_timezone_aware_utc() -> None:
    cert = certificate("mx.example.org", days=3)
    assert compat.not_valid_before(cert) == START and compat.not_valid_before(cert).tzinfo is not None
    assert compat.not_valid_after(cert) == START + datetime.timedelta(days=3)
    assert compat.not_valid_after(cert).utcoffset() == datetime.timedelta(0)


def test_a_signature_that_does_not_verify_raises_validation_failure() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    dnskey = dns.dnssec.make_dnskey(key.public_key(), "ECDSAP256SHA256", flags=257)
    zone = dns.name.from_text("example.org.")
    keys = dns.rrset.from_rdata(zone, 60, dnskey)
    tlsa = dns.rrset.from_text("_25._tcp.mx.example.org.", 60, "IN", "TLSA", "3 0 1 " + "ab" * 32)
    now = START.timestamp()
    sig = dns.rrset.from_rdata(tlsa.name, 60, dns.dnssec.sign(tlsa, key, zone, dnskey, inception=now - 60,
                                                              expiration=now + 60))
    dns.dnssec.validate(tlsa, sig, {zone: keys}, now=now)
    tampered = dns.rrset.from_text("_25._tcp.mx.example.org.", 60, "IN", "TLSA", "3 0 1 " + "cd" * 32)
    try:
        dns.dnssec.validate(tampered, sig, {zone: keys}, now=now)
    except compat.ValidationFailure:
        return
    raise AssertionError("a tampered RRset validated")


def test_an_unsigned_answer_to_a_signed_request_is_a_form_error() -> None:
    keyring = dns.tsigkeyring.from_text({"certbot-dane.": ("hmac-sha256", "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0")})
    request = dns.update.UpdateMessage("example.org.", keyring=keyring, keyname="certbot-dane.",
                                       keyalgorithm=dns.tsig.HMAC_SHA256)
    request.to_wire()  # computes the request MAC the answer is checked against
    signed = dns.message.make_response(request)
    assert compat.signed_answer(signed.to_wire(), request).had_tsig
    unsigned = dns.message.make_response(dns.update.UpdateMessage("example.org.", id=request.id))
    unsigned.set_rcode(dns.rcode.REFUSED)
    try:
        compat.signed_answer(unsigned.to_wire(), request)
    except dns.exception.FormError:
        return
    raise AssertionError("an unsigned answer to a signed request was accepted")


def test_the_domain_of_a_challenge_on_this_certbot() -> None:
    challb = messages.ChallengeBody(chall=challenges.DNS01(token=b"t" * 16), uri="https://acme.test/chall/1",
                                    status=messages.STATUS_PENDING)
    if hasattr(messages, "Identifier") and "identifier" in achallenges.DNS.__slots__:  # certbot 5.3 and later
        achall = achallenges.DNS(challb=challb, identifier=messages.Identifier(typ=messages.IDENTIFIER_FQDN,
                                                                              value="mx.example.org"))
    else:
        achall = achallenges.DNS(challb=challb, domain="mx.example.org")
    assert compat.challenge_domain(achall) == "mx.example.org"


def test_help_or_version_to_a_reader_that_went_away_is_no_error() -> None:
    class Gone(io.StringIO):
        def write(self, text: str) -> int:
            raise BrokenPipeError(32, "Broken pipe")

    parser = compat.ArgumentParser(prog="certbot-dane")
    parser._print_message("certbot-dane 0.1.0\n", Gone())
    parser.print_help(io.StringIO())
