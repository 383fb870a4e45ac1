"""DNS-01 challenges: TXT validations published in one UPDATE per zone, then awaited on every server."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from certbot_dane import zone
from certbot_dane.dnsclient import DnsClient
from certbot_dane.errors import DnsError
from certbot_dane.propagation import wait_until_served
from certbot_dane.records import Record

logger = logging.getLogger(__name__)

TXT_TTL = 60


def validation_record(validation_name: str, validation: str) -> Record:
    """The TXT record answering one DNS-01 challenge."""
    return Record.txt(validation_name, validation, TXT_TTL)


def wait(client: DnsClient, records: Sequence[Record]) -> None:
    """Return once every authoritative server of each record's zone serves it."""
    zone_of = {r.name: client.find_zone(r.name) for r in records}
    wait_until_served(lambda r: client.servers(zone_of[r.name]), records, lambda qs: zone.ask(client, qs),
                      client.settings.propagation_timeout)
    logger.info("all authoritative servers serve %d validation record(s)", len(records))


def remove(client: DnsClient, records: Sequence[Record]) -> list[DnsError]:
    """Remove validation records with one UPDATE per zone, each zone on its own; the failures, one per zone.

    A zone that fails (unreachable, REFUSED) keeps no other zone's records in place. Records that
    were never added are harmless to remove: callers write down what they add before adding it.
    """
    failures: dict[str, DnsError] = {}
    by_zone: dict[str, list[Record]] = {}
    for record in records:
        try:
            by_zone.setdefault(client.find_zone(record.name), []).append(record)
        except DnsError as err:
            failures.setdefault(str(err), err)
    for in_zone in by_zone.values():
        try:
            zone.apply(client, remove=in_zone)
        except DnsError as err:
            failures.setdefault(str(err), err)
    return list(failures.values())
