"""Where TLSRPT reports arrive: Maildir and mbox folders, single messages, .json/.json.gz files, stdin.

Reads with Python's `mailbox` and `email` only (nothing is moved, flagged or deleted: importing is
idempotent). Yields every report payload found, or one problem line per thing that is not one.
"""

from __future__ import annotations

import email
import mailbox
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from email.message import Message
from pathlib import Path
from typing import BinaryIO

REPORT_TYPES = frozenset({"application/tlsrpt+gzip", "application/tlsrpt+json"})
"""RFC 8460 §5.3: the media types of a report attached to a message."""
LOOSE_TYPES = frozenset({"application/gzip", "application/x-gzip", "application/json", "application/octet-stream"})
"""Types some senders use instead, accepted for an attachment named *.json or *.json.gz."""

_GZIP_MAGIC = b"\x1f\x8b"


@dataclass(frozen=True)
class Payload:
    """A report as found (JSON, maybe gzipped) with where it was found, or why nothing usable was there."""

    source: str
    data: bytes | None = None
    problem: str | None = None


def read(paths: Sequence[str], limit: int, stdin: BinaryIO | None = None) -> Iterator[Payload]:
    """Every report payload in these paths ('-': one message or report on `stdin`), in order."""
    for name in paths:
        if name == "-":
            if stdin is None:
                yield Payload("stdin", problem="no standard input")
                continue
            yield from _bytes("stdin", _bounded(stdin, limit), limit)
            continue
        path = Path(name)
        try:
            if path.is_dir():
                yield from _directory(path, limit)
            else:
                yield from _file(path, limit)
        except OSError as err:
            yield Payload(name, problem=f"cannot read: {err.strerror or err}")


def _bounded(stream: BinaryIO, limit: int) -> bytes | None:
    """At most `limit` bytes of a stream, or None when it holds more (the rest is left unread)."""
    data = stream.read(limit + 1)
    return None if len(data) > limit else data


def _directory(path: Path, limit: int) -> Iterator[Payload]:
    if (path / "cur").is_dir() and (path / "new").is_dir():
        yield from _folder(mailbox.Maildir(path, factory=None, create=False), str(path), limit)
        return
    for entry in sorted(path.iterdir()):
        if entry.is_file() and not entry.name.startswith("."):
            yield from _file(entry, limit)


def _file(path: Path, limit: int) -> Iterator[Payload]:
    with path.open("rb") as handle:
        head = handle.read(5)
        if head == b"From ":  # an mbox: as many messages as it holds, each within the limit
            yield from _folder(mailbox.mbox(path, factory=None, create=False), str(path), limit)
            return
        if os.fstat(handle.fileno()).st_size > limit:
            yield Payload(str(path), problem=f"over the {limit}-byte limit ({os.fstat(handle.fileno()).st_size} "
                                             "bytes)")
            return
        handle.seek(0)
        data = handle.read()
    yield from _bytes(str(path), data, limit)


def _folder(box: mailbox.Maildir | mailbox.mbox, name: str, limit: int) -> Iterator[Payload]:
    for key in sorted(box.iterkeys()):
        source = f"{name}: message {key}"
        try:
            with box.get_file(key) as handle:
                data = _bounded(handle, limit)  # type: ignore[arg-type]
        except (KeyError, OSError) as err:  # delivered or expunged meanwhile
            yield Payload(source, problem=f"cannot read: {err}")
            continue
        yield from _bytes(source, data, limit)


def _bytes(source: str, data: bytes | None, limit: int) -> Iterator[Payload]:
    """A report as it is (gzip or JSON), or the report attachments of one message."""
    if data is None:
        yield Payload(source, problem=f"over the {limit}-byte limit")
        return
    if data.startswith(_GZIP_MAGIC) or data.lstrip().startswith((b"{", b"\xef\xbb\xbf{")):
        yield Payload(source, data)
        return
    yield from attachments(source, email.message_from_bytes(data))  # compat32: 25x faster than policy.default


def attachments(source: str, message: Message) -> Iterator[Payload]:
    """The TLSRPT reports attached to a message (RFC 8460 §5.3), or why there is none."""
    found = False
    for part in message.walk():
        if part.is_multipart():
            continue
        kind = part.get_content_type()
        filename = part.get_filename() or ""
        if kind in REPORT_TYPES or (kind in LOOSE_TYPES and filename.endswith((".json", ".json.gz"))):
            found = True
            payload = part.get_payload(decode=True)
            label = f"{source}, attachment {filename}" if filename else source
            if not isinstance(payload, bytes) or not payload:
                yield Payload(label, problem=f"empty {kind} part")
            else:
                yield Payload(label, payload)
    if not found:
        subject = str(message.get("Subject", "")).strip()[:80]
        yield Payload(source, problem="not a TLSRPT report: no application/tlsrpt+gzip or +json part"
                                      + (f" (subject {subject!r})" if subject else ""))
