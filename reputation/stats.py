"""Daily counts per tenant and sending domain, added up from the event stream; and the
relay's own bounces acted on (the suppression list), as the inbound MX acts on DSNs.

A run reads the events after its position (a WebhookOutbox row named ``reputation``;
delivery/event_stream.py waits for ids not committed yet), adds them to DailyStats rows
and moves the position, in one transaction: two runs at once cannot count an event
twice, because the position moves by a conditional UPDATE before anything is added.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from delivery.event_stream import walk
from delivery.models import Event, EventType, WebhookOutbox
from reputation.bounce_patterns import BounceClass
from reputation.bounce_processing import suppress_after_bounce
from reputation.models import DailyStats

STREAM = "reputation"
EVENT_BATCH = 5000

COUNTED = {
    EventType.ACCEPTED: "accepted",
    EventType.DELIVERED: "delivered",
    EventType.COMPLAINED: "complained",
    EventType.DEFERRED: "deferred",
}
"""Bounces count as hard or soft by their class (reputation/bounce_patterns.py); one
recorded before bounces had a class counts as hard. A DSN after ``delivered`` leaves
both events, so that recipient counts in both columns."""


def count_events(*, deadline: float | None = None) -> set[tuple[int, int]]:
    """Add the events recorded since the last run to the daily counts, batch by batch
    until caught up (or past ``deadline``, a time.monotonic() value); returns the
    (tenant, domain) pairs whose counts moved."""
    touched: set[tuple[int, int]] = set()
    while True:
        moved, more = _count_batch()
        touched |= moved
        if not more or (deadline is not None and time.monotonic() > deadline):
            return touched


def _count_batch() -> tuple[set[tuple[int, int]], bool]:
    now = timezone.now()
    outbox = WebhookOutbox.objects.filter(name=STREAM).first() or _start()
    rows = list(
        Event.objects.filter(pk__gt=outbox.position)
        .order_by("pk")
        .values_list("pk", "tenant_id", "message__domain_id", "type", "created_at", "bounce_class")[
            :EVENT_BATCH
        ]
    )
    read = walk(rows, position=outbox.position, gap_seen_at=outbox.gap_seen_at, now=now)
    counts: dict[tuple[int, int, object], Counter] = defaultdict(Counter)
    bounces = []
    for event_id, tenant_id, domain_id, event_type, created_at, bounce_class in read.rows:
        if event_type == EventType.BOUNCED:
            bounces.append(event_id)
            field = "soft_bounced" if bounce_class == BounceClass.SOFT else "hard_bounced"
        else:
            field = COUNTED.get(event_type)
        if field is not None:
            counts[(tenant_id, domain_id, created_at.date())][field] += 1
    with transaction.atomic():
        moved = WebhookOutbox.objects.filter(pk=outbox.pk, position=outbox.position).update(
            position=read.position, gap_seen_at=read.gap_seen_at, updated_at=now
        )
        if not moved:
            return set(), False  # another run counted these
        for (tenant_id, domain_id, day), fields in counts.items():
            _add(tenant_id, domain_id, day, fields)
        _suppress_after(bounces)
    touched = {(tenant_id, domain_id) for tenant_id, domain_id, _ in counts}
    return touched, len(rows) == EVENT_BATCH and not read.waiting


def _suppress_after(event_ids: list[int]) -> None:
    """The suppression list after each bounce, once (the position moves with it): the
    relay's own 5xx replies here; a DSN's were acted on as it arrived, and acting again
    changes nothing (an address keeps its first entry)."""
    events = Event.objects.filter(pk__in=event_ids).select_related("recipient").order_by("pk")
    for event in events:
        if event.recipient is not None:
            suppress_after_bounce(event=event, address=event.recipient.address)


def _start() -> WebhookOutbox:
    """The position on the first run: before the oldest event there is (ids below it
    were deleted, or never were; none is waited for)."""
    first = Event.objects.order_by("pk").values_list("pk", flat=True).first()
    outbox, _ = WebhookOutbox.objects.get_or_create(
        name=STREAM, defaults={"position": (first or 1) - 1}
    )
    return outbox


def _add(tenant_id: int, domain_id: int, day, fields: Counter) -> None:
    changes = {name: F(name) + count for name, count in fields.items()}
    updated = DailyStats.objects.filter(tenant_id=tenant_id, domain_id=domain_id, day=day).update(
        **changes
    )
    if not updated:
        # Only this run adds (it holds the position), so no one else creates the row.
        DailyStats.objects.create(tenant_id=tenant_id, domain_id=domain_id, day=day, **fields)
