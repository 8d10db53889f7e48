"""django-q2 tasks: thin wake-ups around delivery functions (the rows are the truth)."""

from __future__ import annotations

import logging

from django.conf import settings
from django_q.tasks import async_task

from delivery.models import Recipient
from delivery.relay import deliver_message

log = logging.getLogger(__name__)


def enqueue_delivery(message_id: int) -> None:
    async_task("delivery.tasks.deliver", message_id, group="deliver")


def deliver(message_id: int) -> int:
    """Deliver a message's due recipients; running it twice is harmless (leases)."""
    return deliver_message(message_id)


def sweep() -> int:
    """Wake delivery for every message with recipients due (retries, expired leases)."""
    message_ids = list(
        Recipient.objects.due()
        .values_list("message_id", flat=True)
        .distinct()[: settings.SENDMSG_SWEEP_BATCH]
    )
    for message_id in message_ids:
        enqueue_delivery(message_id)
    if message_ids:
        log.info("sweeper woke %d messages", len(message_ids))
    return len(message_ids)
