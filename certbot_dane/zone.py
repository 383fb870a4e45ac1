"""TLSA RRsets across a zone's servers: observe them, and apply plans in one UPDATE per zone."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor

from certbot_dane.config import Endpoint
from certbot_dane.dnsclient import DnsClient
from certbot_dane.errors import DnsError
from certbot_dane.records import Answer, Record, group_by_zone
from certbot_dane.rollover import Observation

logger = logging.getLogger(__name__)


def on_primary(client: DnsClient, names: Iterable[str]) -> dict[str, Answer]:
    """The TLSA RRset of each name as the primary (which takes our updates) serves it."""
    return {name: client.query(client.settings.server, name, "TLSA") for name in names}


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

    A server that does not answer is recorded with the reason instead of an Answer.
    """
    pairs: list[tuple[str, Endpoint]] = [(n, s) for n in names for s in client.servers(client.find_zone(n))]

    def ask(pair: tuple[str, Endpoint]) -> Answer | str:
        try:
            return client.query(pair[1], pair[0], "TLSA")
        except DnsError as err:
            return f"no answer: {err}"

    result: dict[str, dict[Endpoint, Answer | str]] = {n: {} for n in names}
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(pairs)))) as pool:
        for (name, server), answer in zip(pairs, pool.map(ask, pairs), strict=True):
            result[name][server] = answer
    return result


def apply(client: DnsClient, add: Sequence[Record] = (), remove: Sequence[Record] = ()) -> None:
    """Send the additions and removals, one UPDATE per zone."""
    zone_of = {r.name: client.find_zone(r.name) for r in (*add, *remove)}
    for change in group_by_zone(zone_of, add, remove):
        client.update(change)
