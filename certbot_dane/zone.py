"""The DNS as certbot-dane sees and changes it: every read goes through `ask` (or `ask_signed`), every
write through `apply`, one UPDATE per zone.

`ask` is the one observation path: the gate (`observe`), DNS-01 propagation (`challenge.wait`) and
`status` all put their questions to it, and get typed replies back: an `Answer` with the server's
rcode (NOERROR and NXDOMAIN say what the name holds; SERVFAIL, REFUSED & co say it is unknown), or a
`NoAnswer` saying why the server could not be asked. Only the callers decide what an unknown means.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from certbot_dane.config import Endpoint
from certbot_dane.dnsclient import DnsClient
from certbot_dane.dnssec import SignedAnswer
from certbot_dane.errors import DnsError
from certbot_dane.plan import Pair, claim_name, owner_of_claim
from certbot_dane.records import Answer, NoAnswer, Record, Reply, Require, group_by_zone
from certbot_dane.rollover import Observation

#: The longest CNAME chain followed from a TLSA name (RFC 7671 §7 allows chains; loops are errors).
MAX_CNAMES = 8

#: Questions in flight at once (threads: they hide network latency; parsing holds the GIL).
WORKERS = 16

#: One question to one server: (server, name, type).
Question = tuple[Endpoint, str, str]

R = TypeVar("R")

logger = logging.getLogger(__name__)


def ask(client: DnsClient, questions: Iterable[Question], workers: int = WORKERS) -> dict[Question, Reply]:
    """Each question's reply from its server, `workers` at a time (1: one after the other)."""
    return _fan_out(client.query, questions, workers)


def ask_signed(client: DnsClient, questions: Iterable[Question],
               workers: int = WORKERS) -> dict[Question, SignedAnswer | NoAnswer]:
    """The same with the DO bit: each answer carries the RRset and the RRSIGs over it, for validation."""
    return _fan_out(client.query_dnssec, questions, workers)


def _fan_out(query: Callable[[Endpoint, str, str], R], questions: Iterable[Question],
             workers: int) -> dict[Question, R | NoAnswer]:
    def attempt(question: Question) -> R | NoAnswer:
        try:
            return query(*question)
        except DnsError as err:
            return NoAnswer(str(err))
    unique = list(dict.fromkeys(questions))
    if workers <= 1 or len(unique) <= 1:
        return {question: attempt(question) for question in unique}
    with ThreadPoolExecutor(max_workers=min(workers, len(unique))) as pool:
        return dict(zip(unique, pool.map(attempt, unique), strict=True))


def resolve(client: DnsClient, questions: Iterable[Question], workers: int = WORKERS) -> dict[Question, Reply]:
    """Each question to a recursive, validating resolver (the server of the question): a sender's view."""
    return _fan_out(client.resolve, questions, workers)


def answered(replies: dict[Question, R | NoAnswer]) -> dict[Question, R]:
    """The replies when every server answered; else DnsError naming each one that did not."""
    missing = [reply.reason for reply in replies.values() if isinstance(reply, NoAnswer)]
    if missing:
        raise DnsError("; ".join(dict.fromkeys(missing)))
    return replies  # type: ignore[return-value]


def from_primary(client: DnsClient, names: Iterable[str], rdtype: str) -> dict[str, Answer]:
    """Each name's RRset of `rdtype` as the primary (which takes our updates) serves it; DnsError if unreachable."""
    server = client.settings.server
    replies = answered(ask(client, [(server, name, rdtype) for name in names]))
    return {name: answer for (_, name, _), answer in replies.items()}


def on_primary(client: DnsClient, names: Iterable[str]) -> dict[str, Answer]:
    """The TLSA RRset of each name as the primary serves it."""
    return from_primary(client, names, "TLSA")


def owners(client: DnsClient, names: Iterable[str]) -> dict[str, tuple[str, Answer]]:
    """Where each TLSA name's RRset lives (the name itself, or the end of its CNAME chain, RFC 7671 §7),
    and what the primary serves there.

    Asked of the primary, which must also be authoritative for every target (records are published
    there). DnsError naming the chain when it loops, is too long, or a server answers SERVFAIL & co.
    """
    found = {}
    first = on_primary(client, names)
    for name, answer in first.items():
        chain = [name]
        while answer.alias is not None:
            if answer.alias in chain or len(chain) > MAX_CNAMES:
                raise DnsError(f"{name}: CNAME chain {' -> '.join(chain + [answer.alias])} loops or is longer "
                               f"than {MAX_CNAMES}")
            chain.append(answer.alias)
            answer = on_primary(client, [answer.alias])[answer.alias]
        if not answer.definite:
            raise DnsError(f"{client.settings.server} answered {answer.rcode} for {' -> '.join(chain)} TLSA: "
                           "cannot tell where its RRset lives (see the server's log)")
        found[name] = (chain[-1], answer)
    return found


def claims(client: DnsClient, pairs: Iterable[Pair]) -> dict[Pair, frozenset[str]]:
    """The ownership claims (TXT values) on each record, as the primary serves them."""
    found = {}
    pairs = list(pairs)
    answers = from_primary(client, [claim_name(owner, value) for owner, value in pairs], "TXT")
    for owner, value in pairs:
        answer = answers[claim_name(owner, value)]
        if not answer.definite:
            raise DnsError(f"{client.settings.server} answered {answer.rcode} for the claims on {owner} TLSA "
                           f"{value[:14]}..: cannot tell whether another host still needs it")
        found[(owner, value)] = answer.values
    return found


def default_ttls(client: DnsClient, names: Iterable[str], configured: int | None) -> dict[str, int]:
    """TTL for a new RRset: the lineage's tlsa_ttl, else the TTL of the zone's SOA record (one query a zone)."""
    if configured is not None:
        return dict.fromkeys(names, configured)
    soa_ttl: dict[str, int] = {}
    ttls = {}
    for name in names:
        zone = client.find_zone(name)
        if zone not in soa_ttl:
            soa_ttl[zone] = from_primary(client, [zone], "SOA")[zone].ttl or 3600
        ttls[name] = soa_ttl[zone]
    return ttls


def observe(client: DnsClient, names: Sequence[str], workers: int = WORKERS) -> Observation:
    """Each name's TLSA RRset as every authoritative server of its zone serves it (for the gate).

    A zone whose servers cannot be found gets one NoAnswer (from the primary) saying why: its names
    wait, the others carry on.
    """
    questions: list[Question] = []
    result: dict[str, dict[Endpoint, Reply]] = {n: {} for n in names}
    for name in names:
        try:
            questions += [(server, name, "TLSA") for server in client.servers(client.find_zone(name))]
        except DnsError as err:
            result[name][client.settings.server] = NoAnswer(f"cannot tell which servers to ask: {err}")
    for (server, name, _), reply in ask(client, questions, workers).items():
        result[name][server] = reply
    return result


def apply(client: DnsClient, add: Sequence[Record] = (), remove: Sequence[Record] = (),
          require: Sequence[Require] = ()) -> None:
    """Send the additions and removals under their prerequisites, one UPDATE per zone.

    A claim lives in the zone of the record it claims (no SOA walk of its own).
    """
    names = [r.name for r in (*add, *remove)] + [r.name for r in require]
    zone_of = {name: client.find_zone(owner_of_claim(name) or name) for name in names}
    for change in group_by_zone(zone_of, add, remove, require):
        client.update(change)
