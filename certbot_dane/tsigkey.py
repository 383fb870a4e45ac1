"""TSIG keys: parse BIND key files as `tsig-keygen` writes them and check algorithm and secret."""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass, field

import dns.name
import dns.tsig

#: Every TSIG algorithm dnspython signs with, by the name BIND's key files use.
ALGORITHMS: dict[str, dns.name.Name] = {
    "hmac-md5" if alg == dns.tsig.HMAC_MD5 else str(alg).rstrip(".").lower(): alg
    for alg in (
        dns.tsig.HMAC_SHA256,
        dns.tsig.HMAC_SHA384,
        dns.tsig.HMAC_SHA512,
        dns.tsig.HMAC_SHA224,
        dns.tsig.HMAC_SHA1,
        dns.tsig.HMAC_MD5,
        dns.tsig.HMAC_SHA256_128,
        dns.tsig.HMAC_SHA384_192,
        dns.tsig.HMAC_SHA512_256,
    )
}
DEFAULT_ALGORITHM = "hmac-sha256"

_KEY_RE = re.compile(r'key\s+"?([^"\s{]+)"?\s*\{(.*?)\}\s*;', re.S)
_ALG_RE = re.compile(r"algorithm\s+\"?([A-Za-z0-9.-]+)\"?\s*;")
_SECRET_RE = re.compile(r'secret\s+"([^"]*)"\s*;')
_COMMENT_OR_STRING_RE = re.compile(r'"[^"]*"|/\*.*?\*/|//[^\n]*|#[^\n]*', re.S)


@dataclass(frozen=True)
class TsigKey:
    """A TSIG key; the secret never appears in repr() or in any message."""

    name: str
    algorithm: str
    secret: bytes = field(repr=False)

    def keyring(self) -> dict[dns.name.Name, dns.tsig.Key]:
        """The dnspython keyring holding just this key."""
        key = dns.tsig.Key(self.name, self.secret, ALGORITHMS[self.algorithm])
        return {key.name: key}


def canonical_algorithm(algorithm: str) -> str:
    """BIND's name for an algorithm name as written in a config or key file."""
    name = algorithm.lower().rstrip(".")
    return "hmac-md5" if name == "hmac-md5.sig-alg.reg.int" else name


def check_algorithm(algorithm: str) -> str | None:
    """Return a problem description for an algorithm name, or None when dnspython supports it."""
    if canonical_algorithm(algorithm) in ALGORITHMS:
        return None
    return f"unknown TSIG algorithm {algorithm!r} (supported: {', '.join(ALGORITHMS)})"


def decode_secret(secret: str) -> bytes:
    """Decode a base64 TSIG secret; ValueError (naming no part of the secret) if it is not base64."""
    try:
        raw = base64.b64decode(secret.replace(" ", ""), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("the TSIG secret is not valid base64") from None
    if not raw:
        raise ValueError("the TSIG secret is empty")
    return raw


def parse_key_file(text: str, wanted_name: str | None = None) -> tuple[str, str, str]:
    """Return (name, algorithm, base64 secret) of the key in a BIND key file.

    With several keys in the file, `wanted_name` picks one. Raises ValueError describing the
    problem without quoting the secret.
    """
    # comments go, quoted strings stay whole: a base64 secret may well contain "//"
    text = _COMMENT_OR_STRING_RE.sub(lambda m: m.group(0) if m.group(0).startswith('"') else "", text)
    keys = {}
    for match in _KEY_RE.finditer(text):
        body = match.group(2)
        alg = _ALG_RE.search(body)
        secret = _SECRET_RE.search(body)
        if secret is None:
            raise ValueError(f"key {match.group(1)!r} has no secret \"...\"; statement")
        keys[match.group(1).rstrip(".").lower()] = (
            match.group(1),
            alg.group(1).lower() if alg else DEFAULT_ALGORITHM,
            secret.group(1),
        )
    if not keys:
        raise ValueError('no key "NAME" { algorithm ...; secret "..."; }; statement found')
    if wanted_name is not None:
        found = keys.get(wanted_name.rstrip(".").lower())
        if found is None:
            raise ValueError(f"no key named {wanted_name!r} (found: {', '.join(k for k, _, _ in keys.values())})")
        return found
    if len(keys) > 1:
        raise ValueError(f"several keys ({', '.join(k for k, _, _ in keys.values())}); set [dns] key_name")
    return next(iter(keys.values()))
