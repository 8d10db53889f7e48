"""From events to deliveries, read by event id: nothing is added to the paths that write
events (accepting mail, the relay, the queue's hands).

The outbox row keeps a position in the event stream: every event up to it has its
deliveries (one per active endpoint of its tenant that chose its type). A run reads the
events after the position, in id order, and moves the position over them, never past
an id that may still commit (delivery/event_stream.py).

Two runs at once are harmless: a delivery is unique per endpoint and event, and the
position only moves by a conditional UPDATE from the value the run read.
"""

from __future__ import annotations

import time
from collections import defaultdict

from django.db import connection, transaction
from django.utils import timezone

from delivery.event_stream import walk
from delivery.models import Event, WebhookDelivery, WebhookEndpoint, WebhookOutbox

STREAM = "events"
EVENT_BATCH = 1000


def latest_event_id() -> int:
    """The last event id handed out, committed or not (0 before the first): a new
    endpoint gets the events after it, and the next event takes the id after it (unless
    a transaction rolls back), so the outbox sees no gap there."""
    table = Event._meta.db_table
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(
                "SELECT pg_sequence_last_value(pg_get_serial_sequence(%s, 'id'))", [table]
            )
            return cursor.fetchone()[0] or 0
        if connection.vendor == "sqlite":  # AUTOINCREMENT keeps its counter here
            cursor.execute("SELECT seq FROM sqlite_sequence WHERE name = %s", [table])
            row = cursor.fetchone()
            if row is not None:
                return row[0]
    return Event.objects.order_by("-pk").values_list("pk", flat=True).first() or 0


def collect(*, deadline: float | None = None) -> int:
    """Create the deliveries of the events recorded since the last run, batch by batch
    until caught up (or past ``deadline``, a time.monotonic() value); returns how many."""
    created = 0
    while True:
        made, more = _collect_batch(timezone.now())
        created += made
        if not more or (deadline is not None and time.monotonic() > deadline):
            return created


def _outbox() -> WebhookOutbox:
    # Position 0 at first: a run starts at the oldest endpoint's first event anyway.
    outbox, _ = WebhookOutbox.objects.get_or_create(name=STREAM)
    return outbox


def _collect_batch(now) -> tuple[int, bool]:
    outbox = _outbox()
    # The order of these reads matters; each bounds what an endpoint committed after it
    # can want: its first_event_id is at least the last id handed out when it was made.
    top = latest_event_id()
    first_ids = list(
        WebhookEndpoint.objects.filter(active=True).values_list("first_event_id", flat=True)
    )
    if not first_ids:
        # Nobody listens: skip ahead instead of walking events no one will get. An
        # endpoint made from now on starts after ``top``.
        _advance(outbox, position=max(outbox.position, top), gap_seen_at=None, now=now)
        return 0, False
    # No endpoint listed wants an event up to the oldest first_event_id, nor does one
    # made later (its first_event_id is larger still): start after it.
    start = max(outbox.position, min(first_ids))
    rows = list(
        Event.objects.filter(pk__gt=start)
        .order_by("pk")
        .values_list("pk", "tenant_id", "type")[:EVENT_BATCH]
    )
    # Read after the events: an endpoint made since then wants none of them.
    endpoints = list(
        WebhookEndpoint.objects.filter(active=True).values_list(
            "pk", "tenant_id", "event_types", "first_event_id"
        )
    )
    listening: dict[int, list[tuple[int, frozenset[str], int]]] = defaultdict(list)
    for pk, tenant_id, types, first_event_id in endpoints:
        listening[tenant_id].append((pk, frozenset(types), first_event_id))

    read = walk(
        rows,
        position=start,
        gap_seen_at=outbox.gap_seen_at if start == outbox.position else None,
        now=now,
    )
    deliveries: list[WebhookDelivery] = []
    for event_id, tenant_id, event_type in read.rows:
        for endpoint_id, types, first_event_id in listening.get(tenant_id, ()):
            if event_id > first_event_id and event_type in types:
                deliveries.append(
                    WebhookDelivery(
                        endpoint_id=endpoint_id,
                        event_id=event_id,
                        next_attempt_at=now,
                        created_at=now,
                        updated_at=now,
                    )
                )
    with transaction.atomic():
        WebhookDelivery.objects.bulk_create(deliveries, ignore_conflicts=True)
        if not _advance(outbox, position=read.position, gap_seen_at=read.gap_seen_at, now=now):
            return 0, False  # another run moved on from here first; it made the same rows
    return len(deliveries), len(rows) == EVENT_BATCH and not read.waiting


def _advance(outbox: WebhookOutbox, *, position: int, gap_seen_at, now) -> bool:
    return bool(
        WebhookOutbox.objects.filter(pk=outbox.pk, position=outbox.position).update(
            position=position, gap_seen_at=gap_seen_at, updated_at=now
        )
    )
