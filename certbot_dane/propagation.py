"""Wait until every authoritative server serves the expected records: polling, never a fixed sleep."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence

from certbot_dane.config import Endpoint
from certbot_dane.errors import PropagationTimeout
from certbot_dane.records import Answer, Record, Reply

logger = logging.getLogger(__name__)

#: One question to one server, (server, name, type), as `zone.ask` takes them.
Question = tuple[Endpoint, str, str]

#: Puts questions to their servers and returns the typed replies (`zone.ask` bound to a client).
Look = Callable[[Sequence[Question]], Mapping[Question, Reply]]

FIRST_PAUSE = 0.05
MAX_PAUSE = 1.0


def _lag(reply: Reply, wanted: set[str]) -> str | None:
    """None when the reply holds all of `wanted`, else what the server answered instead."""
    if not isinstance(reply, Answer):
        return f"no answer ({reply.describe()})"
    return None if wanted <= reply.values else reply.describe()


def wait_until_served(
    servers_for: Callable[[Record], Sequence[Endpoint]],
    records: Sequence[Record],
    look: Look,
    timeout: float,
    clock: Callable[[], float] = time.monotonic,
    pause: Callable[[float], None] = time.sleep,
) -> None:
    """Return once every server in servers_for(record) serves every record (others may be there too).

    Each round asks only what is still missing, all at once. Raises PropagationTimeout after
    `timeout` seconds naming each lagging server, the name, and what it answered instead.
    """
    wanted: dict[Question, set[str]] = {}
    for record in records:
        for server in servers_for(record):
            wanted.setdefault((server, record.name, record.rdtype), set()).add(record.value)
    deadline = clock() + timeout
    delay = FIRST_PAUSE
    while wanted:
        replies = look(list(wanted))
        lagging = {q: seen for q in wanted if (seen := _lag(replies[q], wanted[q])) is not None}
        wanted = {q: values for q, values in wanted.items() if q in lagging}
        if not wanted:
            break
        if clock() >= deadline:
            raise PropagationTimeout(_timeout_message(timeout, lagging))
        logger.debug("still waiting for %s; next check in %.2fs",
                     "; ".join(f"{s} ({n} {t}: {seen})" for (s, n, t), seen in lagging.items()), delay)
        pause(min(delay, max(0.0, deadline - clock())))
        delay = min(delay * 1.5, MAX_PAUSE)


def _timeout_message(timeout: float, lagging: dict[Question, str]) -> str:
    parts = [f"{server} for {name} {rdtype} (answered: {seen})"
             for (server, name, rdtype), seen in sorted(lagging.items(), key=lambda kv: str(kv[0]))]
    return (f"propagation timed out after {timeout:g}s: {len(parts)} still lagging: "
            + "; ".join(parts))
