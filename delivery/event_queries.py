"""Reading a tenant's events: filters, a stable cursor, and a chunked walk for exports.

Events are read in the order (created_at, id). The event_tenant_time index, (tenant,
created_at, id), serves the tenant, the time range and that order, so a page or an
export chunk is one index range scan that starts where the previous one stopped (keyset
pagination): no OFFSET, and a page costs the same at the end of a long history as at its
start. An event written while a client walks the pages is stamped now, so it sorts after
every event already seen and is met once, on a later page, never twice. One race is
left: an event is stamped just before its transaction commits, so one that commits a
moment late (the accept path's group commit) can sort behind a cursor that a reader
following the newest events has passed already. Nothing here writes, and nothing is
added to the write path.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

from django.db.models import Q, QuerySet

from delivery.models import Event, EventType

EXPORT_CHUNK = 500
"""Events read per query while an export streams: memory stays flat whatever the range."""


class InvalidCursor(ValueError):
    """A cursor this module did not make (or one mangled on the way back)."""


@dataclass(frozen=True)
class Position:
    """Where a walk stands: just after the event with this (created_at, id)."""

    created_at: datetime
    id: int

    @classmethod
    def of(cls, event: Event) -> Position:
        return cls(created_at=event.created_at, id=event.pk)

    def encode(self) -> str:
        """An opaque token for the client; decode() reads it back."""
        stamp = self.created_at.astimezone(UTC).isoformat(timespec="microseconds")
        return base64.urlsafe_b64encode(f"{stamp}|{self.id}".encode()).decode().rstrip("=")

    @classmethod
    def decode(cls, token: str) -> Position:
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
            stamp, _, pk = raw.partition("|")
            created_at = datetime.fromisoformat(stamp)
            position = cls(created_at=created_at, id=int(pk))
        except (binascii.Error, UnicodeDecodeError, ValueError):
            raise InvalidCursor("This cursor is not one the API gave out.") from None
        if created_at.tzinfo is None or not 0 < position.id < 2**63:
            raise InvalidCursor("This cursor is not one the API gave out.")
        return position


@dataclass(frozen=True)
class EventFilter:
    """What a client asked for; every field left at None matches all events."""

    types: frozenset[EventType] | None = None
    queue_id: str | None = None
    recipient_address: str | None = None
    recipient_id: int | None = None
    domain: str | None = None  # the sending domain, ASCII (normalize_domain)
    since: datetime | None = None  # inclusive
    until: datetime | None = None  # exclusive

    def apply(self, events: QuerySet[Event]) -> QuerySet[Event]:
        if self.types:
            events = events.filter(type__in=sorted(self.types))
        if self.queue_id is not None:
            events = events.filter(message__queue_id=self.queue_id)
        if self.recipient_id is not None:
            events = events.filter(recipient_id=self.recipient_id)
        if self.recipient_address is not None:
            events = events.filter(recipient__address__iexact=self.recipient_address)
        if self.domain is not None:
            events = events.filter(message__domain__name=self.domain)
        if self.since is not None:
            events = events.filter(created_at__gte=self.since)
        if self.until is not None:
            events = events.filter(created_at__lt=self.until)
        return events


def after(events: QuerySet[Event], position: Position | None) -> QuerySet[Event]:
    """The events that sort after ``position``, in walking order."""
    if position is not None:
        # The plain lower bound lets the created_at index start the scan at the position;
        # the OR then only sorts out the events that share its timestamp.
        events = events.filter(created_at__gte=position.created_at).filter(
            Q(created_at__gt=position.created_at) | Q(id__gt=position.id)
        )
    return events.order_by("created_at", "id")


@dataclass
class Page:
    events: list[Event]
    more: bool  # whether events after this page exist (as of this read)
    position: Position | None  # after the page's last event; the one given when empty


def page(events: QuerySet[Event], *, position: Position | None, limit: int) -> Page:
    """Up to ``limit`` events after ``position``."""
    rows = list(after(events, position)[: limit + 1])
    more = len(rows) > limit
    rows = rows[:limit]
    return Page(events=rows, more=more, position=Position.of(rows[-1]) if rows else position)


def walk(events: QuerySet[Event], *, chunk: int = EXPORT_CHUNK) -> Iterator[list[Event]]:
    """All of ``events`` in walking order, ``chunk`` at a time, one query per chunk."""
    position = None
    while True:
        rows = list(after(events, position)[:chunk])
        if rows:
            yield rows
        if len(rows) < chunk:
            return
        position = Position.of(rows[-1])
