"""Retention of the message log: bodies go after SENDMSG_BODY_RETENTION_DAYS, whole
messages (recipients and events with them) after SENDMSG_METADATA_RETENTION_DAYS.

A message that still has a recipient in a state that is not final (queued, deferred,
sending, held) keeps its body and its log whatever its age: the relay may still need
the bytes, and the tenant the record. A removed body leaves the header section in
``raw`` (the log still shows it) and ``body_removed_at`` set; ``size`` stays the size
as accepted.

Work goes in batches of ``batch_size`` messages, one transaction each, so neither the
database's locks nor the worker's memory grow with a backlog; the scheduled run stops
starting batches once its time is up and the next run goes on from there. Running it
twice, or two at once, is harmless: every change is a conditional statement that
checks again what the selection saw.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Exists, OuterRef, QuerySet
from django.db.models.functions import Substr
from django.utils import timezone

from delivery.message_log import HEADER_END, header_section
from delivery.models import FINAL_STATES, Message, Recipient

log = logging.getLogger(__name__)

BATCH_SIZE = 500
HEAD_BYTES = 64 * 1024
"""Bytes read per message to find its header section; a longer one is read whole."""


@dataclass(frozen=True)
class Batch:
    looked_at: int  # fewer than the batch size: nothing is left
    changed: int  # what was still there to change when it came to it


@dataclass
class CleanupResult:
    messages_deleted: int = 0
    bodies_removed: int = 0
    finished: bool = True  # False: stopped at the time limit with work left


def settled(messages: QuerySet[Message]) -> QuerySet[Message]:
    """The messages none of whose recipients is waiting, being sent or held."""
    active = Recipient.objects.filter(message=OuterRef("pk")).exclude(state__in=FINAL_STATES)
    return messages.filter(~Exists(active))


def _oldest(messages: QuerySet[Message], batch_size: int) -> list[int]:
    return list(
        settled(messages).order_by("created_at", "pk").values_list("pk", flat=True)[:batch_size]
    )


def delete_expired_messages(*, before: datetime, batch_size: int = BATCH_SIZE) -> Batch:
    """Delete up to ``batch_size`` settled messages accepted before ``before``, oldest
    first, with their recipients and events."""
    ids = _oldest(Message.objects.filter(created_at__lt=before), batch_size)
    if not ids:
        return Batch(0, 0)
    try:
        with transaction.atomic():
            _, deleted = settled(Message.objects.filter(pk__in=ids)).delete()
    except IntegrityError:
        # On PostgreSQL an event written for one of these messages meanwhile (a late
        # bounce report) fails the batch; it is all still there for the next run.
        log.warning("retention: a batch of %d messages changed while deleting it", len(ids))
        return Batch(0, 0)
    return Batch(len(ids), deleted.get(Message._meta.label, 0))


def remove_old_bodies(*, before: datetime, now: datetime, batch_size: int = BATCH_SIZE) -> Batch:
    """Cut up to ``batch_size`` settled messages accepted before ``before``, oldest first,
    down to their header section."""
    kept = Message.objects.filter(created_at__lt=before, body_removed_at__isnull=True)
    ids = _oldest(kept, batch_size)
    if not ids:
        return Batch(0, 0)
    heads = Message.objects.filter(pk__in=ids).annotate(
        head=Substr("raw", 1, HEAD_BYTES + len(HEADER_END))
    )
    sections: dict[int, bytes] = {}
    for pk, head in heads.values_list("pk", "head"):
        section = header_section(bytes(head))
        if section is None:
            # The whole header section past HEAD_BYTES, or a message without a body.
            raw = bytes(Message.objects.filter(pk=pk).values_list("raw", flat=True).get())
            section = header_section(raw) or raw
        sections[pk] = section
    changed = 0
    with transaction.atomic():
        for pk, section in sections.items():
            changed += settled(Message.objects.filter(pk=pk, body_removed_at__isnull=True)).update(
                raw=section, body_removed_at=now
            )
    return Batch(len(ids), changed)


def clean_up(
    *,
    now: datetime | None = None,
    batch_size: int = BATCH_SIZE,
    time_limit: float | None = None,
) -> CleanupResult:
    """Apply both retention periods (a period of 0 days keeps everything).

    Expired messages go first (no point cutting the body of a message about to go).
    With ``time_limit`` (seconds), no batch is started after it has passed.
    """
    now = now or timezone.now()
    deadline = time.monotonic() + time_limit if time_limit is not None else None
    result = CleanupResult()

    def out_of_time() -> bool:
        if deadline is not None and time.monotonic() >= deadline:
            result.finished = False
            return True
        return False

    metadata_days = settings.SENDMSG_METADATA_RETENTION_DAYS
    if metadata_days > 0:
        before = now - timedelta(days=metadata_days)
        while True:
            batch = delete_expired_messages(before=before, batch_size=batch_size)
            result.messages_deleted += batch.changed
            if batch.looked_at < batch_size or out_of_time():
                break
    body_days = settings.SENDMSG_BODY_RETENTION_DAYS
    if body_days > 0 and not out_of_time():
        before = now - timedelta(days=body_days)
        while True:
            batch = remove_old_bodies(before=before, now=now, batch_size=batch_size)
            result.bodies_removed += batch.changed
            if batch.looked_at < batch_size or out_of_time():
                break
    return result


def scheduled_clean_up() -> dict:
    """The django-q2 schedule's entry (hourly, migration 0007): at most half the task
    timeout of work, the rest in the next run."""
    result = clean_up(time_limit=settings.Q_CLUSTER["timeout"] / 2)
    if result.messages_deleted or result.bodies_removed:
        log.info(
            "retention: %d messages deleted, %d bodies removed%s",
            result.messages_deleted,
            result.bodies_removed,
            "" if result.finished else " (more left for the next run)",
        )
    return asdict(result)
