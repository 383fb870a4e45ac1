"""TLSA RRsets across a zone's servers: find where they live, observe them, apply plans one UPDATE per zone."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor

from certbot_dane.config import Endpoint
from certbot_dane.dnsclient import DnsClient
from certbot_dane.errors import DnsError
from certbot_dane.plan import Pair, claim_name, owner_of_claim
from certbot_dane.records import Answer, NoAnswer, Record, Reply, Require, group_by_zone
from certbot_dane.rollover import Observation

#: The longest CNAME chain followed from a TLSA name (RFC 7671 §7 allows chains; loops are errors).
MAX_CNAMES = 8

logger = logging.getLogger(__name__)


def on_primary(client: DnsClient, names: Iterable[str]) -> dict[str, Answer]:
    """The TLSA RRset of each name as the primary (which takes our updates) serves it."""
    return {name: client.query(client.settings.server, name, "TLSA") for name in names}


def owners(client: DnsClient, names: Iterable[str]) -> dict[str, tuple[str, Answer]]:
    """Where each TLSA name's RRset lives (the name itself, or the end of its CNAME chain, RFC 7671 §7),
    and what the primary serves there.

    Asked of the primary, which must also be authoritative for every target (records are published
    there). DnsError naming the chain when it loops, is too long, or a server answers SERVFAIL & co.
    """
    found = {}
    for name in names:
        chain = [name]
        answer = client.query(client.settings.server, name, "TLSA")
        while answer.alias is not None:
            if answer.alias in chain or len(chain) > MAX_CNAMES:
                raise DnsError(f"{name}: CNAME chain {' -> '.join(chain + [answer.alias])} loops or is longer "
                               f"than {MAX_CNAMES}")
            chain.append(answer.alias)
            answer = client.query(client.settings.server, answer.alias, "TLSA")
        if not answer.definite:
            raise DnsError(f"{client.settings.server} answered {answer.rcode} for {' -> '.join(chain)} TLSA: "
                           "cannot tell where its RRset lives (see the server's log)")
        found[name] = (chain[-1], answer)
    return found


def claims(client: DnsClient, pairs: Iterable[Pair]) -> dict[Pair, frozenset[str]]:
    """The ownership claims (TXT values) on each record, as the primary serves them."""
    found = {}
    for owner, value in pairs:
        answer = client.query(client.settings.server, claim_name(owner, value), "TXT")
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
            soa_ttl[zone] = client.query(client.settings.server, zone, "SOA").ttl or 3600
        ttls[name] = soa_ttl[zone]
    return ttls


def observe(client: DnsClient, names: Sequence[str], workers: int = 16) -> Observation:
    """Ask every authoritative server of each name's zone for its TLSA RRset, concurrently.

    A server that does not answer is recorded as a NoAnswer with the reason.
    """
    pairs: list[tuple[str, Endpoint]] = []
    unknown: dict[str, NoAnswer] = {}
    for name in names:
        try:
            pairs += [(name, server) for server in client.servers(client.find_zone(name))]
        except DnsError as err:  # this zone's servers are unknown: its names wait, the others carry on
            unknown[name] = NoAnswer(f"cannot tell which servers to ask: {err}")

    def ask(pair: tuple[str, Endpoint]) -> Reply:
        try:
            return client.query(pair[1], pair[0], "TLSA")
        except DnsError as err:
            return NoAnswer(str(err))

    result: dict[str, dict[Endpoint, Reply]] = {n: {} for n in names}
    for name, why in unknown.items():
        result[name][client.settings.server] = why
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(pairs)))) as pool:
        for (name, server), answer in zip(pairs, pool.map(ask, pairs), strict=True):
            result[name][server] = answer
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
