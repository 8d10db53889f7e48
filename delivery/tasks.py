"""django-q2 tasks: thin wake-ups around delivery functions (the rows are the truth)."""

from __future__ import annotations

import logging
import time

from django.conf import settings
from django_q.tasks import async_task

from delivery.models import Recipient
from delivery.relay import deliver_messages, worst_transaction_seconds
from sendmsg import worker_shutdown
from sendmsg.log_context import log_context

log = logging.getLogger(__name__)


def enqueue_delivery(message_ids: list[int]) -> None:
    async_task("delivery.tasks.deliver", message_ids, group="deliver")


def deliver(message_ids: list[int] | int) -> int:
    """Deliver the messages' due recipients; running it twice is harmless (leases).

    One claim for all, connections kept from one message to the next, outcomes written
    in batches (delivery/relay.py deliver_messages).

    A message is started only while a whole worst-case SMTP transaction still fits in
    django-q2's timeout; the rest go to a new task. Likewise once the workers are asked
    to stop (sendmsg/worker_shutdown.py): a task not started yet goes back to the broker
    whole, for a worker that stays. (A single id is what tasks queued by earlier releases
    carry.)
    """
    ids = [message_ids] if isinstance(message_ids, int) else list(message_ids)
    with log_context(message_ids=ids):
        if worker_shutdown.stopping():
            enqueue_delivery(ids)
            log.info("stopping: task handed back to the broker")
            return 0
        stop_starting = (
            time.monotonic() + settings.Q_CLUSTER["timeout"] - worst_transaction_seconds()
        )
        claimed, left = deliver_messages(ids, stop_starting=stop_starting)
        if left:
            enqueue_delivery(left)
            with log_context(message_ids=left):
                log.info("%d messages not started, handed to a new task", len(left))
        return claimed


def sweep() -> int:
    """Wake delivery for every message with recipients due (retries, expired leases)."""
    message_ids = list(
        Recipient.objects.due()
        .values_list("message_id", flat=True)
        .distinct()[: settings.SENDMSG_SWEEP_BATCH]
    )
    chunk = settings.SENDMSG_WAKE_CHUNK
    with log_context(message_ids=message_ids):
        for start in range(0, len(message_ids), chunk):
            enqueue_delivery(message_ids[start : start + chunk])
        if message_ids:
            log.info("sweeper woke %d messages", len(message_ids))
    return len(message_ids)
