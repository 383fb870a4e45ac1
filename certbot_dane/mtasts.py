"""MTA-STS (RFC 8461) and TLSRPT (RFC 8460) as values: the policy text, its id, the TXT records, the plan.

Pure, like `plan`. The policy file is rendered from the configuration (and the domain's MX RRset when
no `mx` is configured); its `id` is derived from its text, so that the id changes if and only if the
policy does. `records` plans the `_mta-sts` and `_smtp._tls` TXT changes of one domain, and only a
served policy's id is ever planned (a sender that sees a new id fetches the policy at once: the id
must never run ahead of what the web server serves). `refusal` is the check the applier consults
before a swap: a staged certificate must cover every MX host of this lineage that a policy senders
may hold in enforce mode matches.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from certbot_dane.certificate import covers
from certbot_dane.config import MtaStsSettings
from certbot_dane.records import Answer, Record, Require

STS_LABEL = "_mta-sts"
TLSRPT_LABEL = "_smtp._tls"
POLICY_PATH = "/.well-known/mta-sts.txt"
MAX_POLICY_BYTES = 64 * 1024  # senders read no more (RFC 8461 §3.3 leaves it to them; postfix-mta-sts-resolver)
_TXT_CHUNK = 255  # one character-string of a TXT record


def sts_name(domain: str) -> str:
    """`_mta-sts.DOMAIN.`: where the policy's id is published."""
    return f"{STS_LABEL}.{domain.rstrip('.')}."


def tlsrpt_name(domain: str) -> str:
    """`_smtp._tls.DOMAIN.`: where the reporting address is published."""
    return f"{TLSRPT_LABEL}.{domain.rstrip('.')}."


def policy_host(domain: str) -> str:
    """`mta-sts.DOMAIN`: the host that serves the policy over HTTPS."""
    return f"mta-sts.{domain.rstrip('.')}"


def policy_url(domain: str) -> str:
    """Where senders fetch the policy."""
    return f"https://{policy_host(domain)}{POLICY_PATH}"


@dataclass(frozen=True)
class Policy:
    """An MTA-STS policy (RFC 8461 §3.2): mode, MX patterns, max_age."""

    mode: str
    mx: tuple[str, ...]
    max_age: int

    def text(self) -> str:
        """The policy file, CRLF-terminated lines in the RFC's order."""
        lines = ["version: STSv1", f"mode: {self.mode}", *(f"mx: {p}" for p in self.mx), f"max_age: {self.max_age}"]
        return "".join(f"{line}\r\n" for line in lines)

    @property
    def id(self) -> str:
        """The id published in the TXT record: derived from the text (changes iff the policy does)."""
        return policy_id(self.text())

    def matches(self, host: str) -> bool:
        """Whether a sender holding this policy accepts `host` as an MX (RFC 8461 §4.1)."""
        return any(mx_matches(pattern, host) for pattern in self.mx)


def policy_id(text: str) -> str:
    """1 to 32 alphanumeric characters (RFC 8461 §3.1): the first 128 bits of the text's SHA-256, in hex."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


def mx_matches(pattern: str, host: str) -> bool:
    """RFC 8461 §4.1: `mx1.example.org` matches itself; `*.example.org` one label left of example.org."""
    pattern, host = pattern.lower().rstrip("."), host.lower().rstrip(".")
    if pattern.startswith("*."):
        label, _, rest = host.partition(".")
        return bool(label) and rest == pattern[2:]
    return pattern == host


def parse_policy(text: str) -> Policy:
    """A policy file's fields (LF or CRLF lines); ValueError saying what is wrong, as a sender would reject it."""
    fields: dict[str, list[str]] = {}
    for line in text.replace("\r\n", "\n").split("\n"):
        if not line.strip():
            continue
        key, colon, value = line.partition(":")
        if not colon:
            raise ValueError(f"not a key: value line: {line[:60]!r}")
        fields.setdefault(key.strip(), []).append(value.strip())
    if fields.get("version") != ["STSv1"]:
        raise ValueError("no 'version: STSv1' line")
    mode = (fields.get("mode") or [""])[0]
    if mode not in ("enforce", "testing", "none"):
        raise ValueError(f"mode {mode!r} is not enforce, testing or none")
    try:
        max_age = int((fields.get("max_age") or [""])[0])
    except ValueError:
        raise ValueError("no whole-number max_age") from None
    if not 0 <= max_age <= 31557600:
        raise ValueError(f"max_age {max_age} is out of range")
    mx = tuple(fields.get("mx", ()))
    if mode != "none" and not mx:
        raise ValueError(f"a {mode} policy without mx lines")
    return Policy(mode, mx, max_age)


def intended(settings: MtaStsSettings, mx_rrset: tuple[str, ...] | None) -> Policy:
    """The policy the configuration asks for; without `mx`, the MX hosts of the domain's RRset.

    ValueError when there is no MX pattern to list (no `mx` configured and no MX RRset, or it is unknown).
    """
    mx = settings.mx
    if mx is None:
        if not mx_rrset and settings.mode != "none":
            raise ValueError(f"{settings.domain} has no MX RRset (or it is unknown) and no mx is configured: "
                             "nothing to list in the policy")
        mx = tuple(mx_rrset or ())
    return Policy(settings.mode, mx, settings.max_age)


def mx_hosts(values: Iterable[str]) -> tuple[str, ...]:
    """MX record values (`10 mx1.example.org.`) -> the hosts, by preference then name; `.` (null MX) left out."""
    found = []
    for value in values:
        preference, _, host = value.partition(" ")
        host = host.strip().lower().rstrip(".")
        if host and preference.isdigit():
            found.append((int(preference), host))
    return tuple(dict.fromkeys(host for _, host in sorted(found)))


# -- TXT records -------------------------------------------------------------------------------------
def txt_text(value: str) -> str:
    """A TXT record in presentation form (`"v=STSv1; " "id=1"`, with \\" and \\DDD escapes) -> its text."""
    out: list[str] = []
    i, quoted = 0, False
    while i < len(value):
        c = value[i]
        if c == '"':
            quoted = not quoted
        elif c == "\\" and i + 1 < len(value):
            if value[i + 1:i + 4].isdigit() and len(value[i + 1:i + 4]) == 3:
                out.append(chr(int(value[i + 1:i + 4])))
                i += 3
            else:
                out.append(value[i + 1])
                i += 1
        elif quoted or not c.isspace():
            out.append(c)
        i += 1
    return "".join(out)


def txt_value(text: str) -> str:
    """Text -> a TXT record in presentation form, split into 255-character strings."""
    chunks = [text[i:i + _TXT_CHUNK] for i in range(0, len(text), _TXT_CHUNK)] or [""]
    return " ".join('"' + chunk.replace("\\", "\\\\").replace('"', '\\"') + '"' for chunk in chunks)


def sts_record_text(id_: str) -> str:
    """The `_mta-sts` TXT record's text (RFC 8461 §3.1)."""
    return f"v=STSv1; id={id_}"


def tlsrpt_record_text(rua: Iterable[str]) -> str:
    """The `_smtp._tls` TXT record's text (RFC 8460 §3)."""
    return f"v=TLSRPTv1; rua={','.join(rua)}"


def record_fields(text: str) -> dict[str, str]:
    """`v=STSv1; id=abc` -> {"v": "STSv1", "id": "abc"} (RFC 8461 §3.1, RFC 8460 §3 syntax)."""
    fields: dict[str, str] = {}
    for part in text.split(";"):
        key, equals, value = part.strip().partition("=")
        if equals:
            fields.setdefault(key.strip(), value.strip())
    return fields


def versioned(answer: Answer, version: str) -> list[str]:
    """The TXT values of an RRset whose text starts with `v=<version>` (the others belong to someone else)."""
    return sorted(v for v in answer.values if re.match(rf"v={re.escape(version)}\s*(;|$)", txt_text(v)))


def served_id(answer: Answer) -> str | None:
    """The id senders read from a `_mta-sts` RRset: that of its one STSv1 record (none, or several: None)."""
    found = versioned(answer, "STSv1")
    return record_fields(txt_text(found[0])).get("id") if len(found) == 1 else None


# -- the plan ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Changes:
    """One domain's TXT changes (one UPDATE per zone with the other domains'), and what to report."""

    add: tuple[Record, ...] = ()
    remove: tuple[Record, ...] = ()
    require: tuple[Require, ...] = ()
    lines: tuple[str, ...] = ()


def records(domain: str, served: str | None, sts: Answer, rua: tuple[str, ...], tlsrpt: Answer,
            ttl: Mapping[str, int]) -> Changes:
    """The `_mta-sts` and `_smtp._tls` changes for one domain.

    `served`: the id of the policy every address of the policy host serves (None: not served, or not
    the intended one: the id is left as it is). Each RRset is replaced only when it differs, records of
    other versions (not `v=STSv1` / `v=TLSRPTv1`) stay, and a prerequisite says the RRset is still what
    was seen (a concurrent change fails the UPDATE instead of racing). `rua` empty: `_smtp._tls` is not ours.
    """
    add: list[Record] = []
    remove: list[Record] = []
    require: list[Require] = []
    lines: list[str] = []
    wanted = [(sts_name(domain), "STSv1", sts_record_text(served) if served else None, sts),
              (tlsrpt_name(domain), "TLSRPTv1", tlsrpt_record_text(rua) if rua else None, tlsrpt)]
    for name, version, text, answer in wanted:
        if text is None:
            continue
        current = versioned(answer, version)
        if [txt_text(v) for v in current] == [text]:
            continue
        value = txt_value(text)
        add.append(Record(name, "TXT", value, answer.ttl or ttl.get(name, 0)))
        remove += [Record(name, "TXT", v) for v in current if v != value]
        require.append(Require(name, "TXT", answer.values or None))
        lines.append(f"publish {name} TXT {text}" + (f" (replacing {', '.join(txt_text(v) for v in current)})"
                                                     if current else ""))
    return Changes(tuple(add), tuple(remove), tuple(require), tuple(lines))


def unsafe(policy: Policy, mx: tuple[str, ...], deployed: Mapping[str, tuple[str, ...]]) -> list[str]:
    """Why senders holding `policy` would refuse a host of the MX RRset `mx` (empty: it is safe to publish).

    Only an enforce policy makes senders refuse (RFC 8461 §5): an MX host it does not match, or one it
    matches whose deployed certificate (`deployed`: host -> the names of the certificate a configured
    lineage deploys for it) does not cover its name. Hosts no lineage serves are not judged here (`status`
    checks what every MX host presents).
    """
    if policy.mode != "enforce":
        return []
    found = [f"MX host {host} is not matched by mx ({', '.join(policy.mx)})" for host in mx if not policy.matches(host)]
    found += [f"the certificate deployed for {host} ({', '.join(names) or 'no names'}) does not cover it"
              for host, names in sorted(deployed.items()) if host in mx and policy.matches(host)
              and not covers(names, host)]
    return found


# -- policies senders may hold, and the check before a swap ------------------------------------------
@dataclass(frozen=True)
class Held:
    """A policy senders may hold for `domain`: the current one (`until` None) or one replaced, cached until then."""

    domain: str
    policy: Policy
    until: float | None = None


def still_held(history: Iterable[Held], now: float) -> tuple[Held, ...]:
    """The replaced policies senders may still have cached (their max_age since they were replaced not over)."""
    return tuple(h for h in history if h.until is None or h.until > now)


def replaced(old_text: str | None, new: Policy, domain: str, now: float) -> Held | None:
    """The policy a file write replaces, as senders may hold it for its max_age from now; None when there
    was none, it cannot be parsed (no sender accepted it either) or it is the same policy."""
    if old_text is None:
        return None
    try:
        old = parse_policy(old_text)
    except ValueError:
        return None
    return None if old == new else Held(domain, old, now + old.max_age)


def refusal(fingerprint: str, hosts: Iterable[str], names: tuple[str, ...], held: Iterable[Held],
            mx: Mapping[str, tuple[str, ...] | None]) -> str | None:
    """Why certificate `fingerprint` for `names` must not go live for a lineage serving `hosts`, or None.

    A sender holding a policy in enforce mode delivers only to an MX host whose certificate is valid
    for its name (RFC 8461 §4.2). `mx`: each domain's MX hosts (None: unknown, so every host a policy
    matches counts as one). One line, naming the first host the certificate does not cover.
    """
    for host in hosts:
        for h in held:
            domain_mx = mx.get(h.domain)
            if h.policy.mode != "enforce" or not h.policy.matches(host):
                continue
            if domain_mx is not None and host.lower().rstrip(".") not in domain_mx:
                continue
            if not covers(names, host):
                when = "now" if h.until is None else "in a policy senders may cache until its max_age runs out"
                return (f"refusing to deploy {fingerprint[:16]}: the staged certificate "
                        f"({', '.join(names) or 'no names'}) does not cover {host}, an MX host of {h.domain} "
                        f"whose MTA-STS policy enforces {when}: senders would refuse it; the staged copy and its "
                        "TLSA records stay")
    return None

