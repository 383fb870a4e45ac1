"""DNS-01 challenges: TXT validations published in one UPDATE per zone, then awaited on every server."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from certbot_dane.dnsclient import DnsClient
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
    wait_until_served(lambda r: client.servers(zone_of[r.name]), records, client.query,
                      client.settings.propagation_timeout)
    logger.info("all authoritative servers serve %d validation record(s)", len(records))
