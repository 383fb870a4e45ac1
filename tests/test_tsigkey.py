"""Parsing BIND TSIG key files and checking algorithms and secrets."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from certbot_dane.tsigkey import ALGORITHMS, TsigKey, check_algorithm, decode_secret, parse_key_file

KEYGEN_OUTPUT = '''key "certbot-dane." {
\talgorithm hmac-sha256;
\tsecret "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0MTI=";
};
'''


def test_parses_tsig_keygen_output():
    assert parse_key_file(KEYGEN_OUTPUT) == (
        "certbot-dane.", "hmac-sha256", "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0MTI=")


@pytest.mark.skipif(shutil.which("tsig-keygen") is None, reason="tsig-keygen not installed")
@pytest.mark.parametrize("algorithm", ["hmac-sha256", "hmac-sha512", "hmac-sha1"])
def test_parses_real_tsig_keygen_files(algorithm):
    text = subprocess.run(["tsig-keygen", "-a", algorithm, "k1."], capture_output=True, text=True,
                          check=True).stdout
    name, alg, secret = parse_key_file(text)
    assert (name, alg) == ("k1.", algorithm)
    assert len(decode_secret(secret)) >= 20


def test_picks_the_named_key_among_several_and_ignores_comments():
    text = '# two keys\nkey other { algorithm hmac-sha512; secret "b3RoZXI="; };\n/* c */\n' + KEYGEN_OUTPUT
    assert parse_key_file(text, "certbot-dane")[0] == "certbot-dane."
    with pytest.raises(ValueError, match="several keys"):
        parse_key_file(text)
    with pytest.raises(ValueError, match="no key named 'nope'"):
        parse_key_file(text, "nope")


def test_missing_key_statement_is_an_error():
    with pytest.raises(ValueError, match="no key"):
        parse_key_file("options { };")


def test_bad_secret_message_never_quotes_the_secret():
    with pytest.raises(ValueError) as info:
        decode_secret("not*base64!")
    assert "not*base64" not in str(info.value)


def test_every_dnspython_algorithm_is_accepted_and_unknown_ones_named():
    assert all(check_algorithm(a) is None for a in ALGORITHMS)
    assert check_algorithm("HMAC-SHA256.") is None
    assert "unknown TSIG algorithm 'hmac-sha3'" in (check_algorithm("hmac-sha3") or "")


def test_secret_is_not_in_repr():
    key = TsigKey("k.", "hmac-sha256", b"topsecret")
    assert "topsecret" not in repr(key) and "dG9w" not in repr(key)


def test_a_secret_containing_a_comment_marker_is_read_whole():
    text = ('key "k1." {\n\talgorithm hmac-sha256; // trailing comment\n'
            '\tsecret "aD04xZSQWkpNUQmw6VyiQ367Y0Ld//H9#GUn6x4=";\n};\n')
    assert parse_key_file(text) == ("k1.", "hmac-sha256", "aD04xZSQWkpNUQmw6VyiQ367Y0Ld//H9#GUn6x4=")
