"""Wait until every authoritative server serves the expected records: polling, never a fixed sleep."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

from certbot_dane.config import Endpoint
from certbot_dane.errors import DnsError, PropagationTimeout
from certbot_dane.records import Answer, Record

logger = logging.getLogger(__name__)

Ask = Callable[[Endpoint, str, str], Answer]

FIRST_PAUSE = 0.05
MAX_PAUSE = 1.0


def _check(ask: Ask, server: Endpoint, name: str, rdtype: str, wanted: frozenset[str]) -> str | None:
    """None when `server` serves all of `wanted` at name/type, else what it answered instead."""
    try:
        answer = ask(server, name, rdtype)
    except DnsError as err:
        return f"no answer ({err})"
    missing = wanted - answer.values
    return None if not missing else answer.describe()


def wait_until_served(
    servers_for: Callable[[Record], Sequence[Endpoint]],
    records: Sequence[Record],
    ask: Ask,
    timeout: float,
    clock: Callable[[], float] = time.monotonic,
    pause: Callable[[float], None] = time.sleep,
) -> None:
    """Return once every server in servers_for(record) serves every record (others may be there too).

    Raises PropagationTimeout after `timeout` seconds naming each lagging server, the name, and
    what it answered instead.
    """
    wanted: dict[tuple[Endpoint, str, str], set[str]] = {}
    for record in records:
        for server in servers_for(record):
            wanted.setdefault((server, record.name, record.rdtype), set()).add(record.value)
    deadline = clock() + timeout
    delay = FIRST_PAUSE
    lagging: dict[tuple[Endpoint, str, str], str] = {}
    with ThreadPoolExecutor(max_workers=min(16, max(1, len(wanted)))) as pool:
        while wanted:
            keys = list(wanted)
            results = pool.map(lambda k: _check(ask, k[0], k[1], k[2], frozenset(wanted[k])), keys)
            lagging = {key: seen for key, seen in zip(keys, results, strict=True) if seen is not None}
            for key in keys:
                if key not in lagging:
                    del wanted[key]
            if not wanted:
                break
            if clock() >= deadline:
                raise PropagationTimeout(_timeout_message(timeout, lagging))
            logger.debug("still waiting for %s; next check in %.2fs",
                         "; ".join(f"{s} ({n} {t}: {seen})" for (s, n, t), seen in lagging.items()), delay)
            pause(min(delay, max(0.0, deadline - clock())))
            delay = min(delay * 1.5, MAX_PAUSE)


def _timeout_message(timeout: float, lagging: dict[tuple[Endpoint, str, str], str]) -> str:
    parts = [f"{server} for {name} {rdtype} (answered: {seen})"
             for (server, name, rdtype), seen in sorted(lagging.items(), key=lambda kv: str(kv[0]))]
    return (f"propagation timed out after {timeout:g}s: {len(parts)} still lagging: "
            + "; ".join(parts))
