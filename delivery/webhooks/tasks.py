"""The webhook dispatcher's django-q2 task, run every minute by the schedule that
migration 0006 creates. Latency: an event is sent within about a minute (the schedule's
interval plus the broker's poll), sooner when a run is already going on."""

from __future__ import annotations

import logging
import time

from delivery.webhooks import outbox, sender

log = logging.getLogger(__name__)


def dispatch() -> int:
    """One run: new events become deliveries and due deliveries are sent, again and again
    while there is work and time (events recorded during the run go out in it too); then
    old finished deliveries are forgotten. Returns the number of attempts made."""
    deadline = time.monotonic() + sender.run_seconds()
    failing: set[int] = set()  # endpoints that failed in this run wait for the next
    attempts = 0
    while (remaining := deadline - time.monotonic()) > 0:
        created = outbox.collect(deadline=time.monotonic() + remaining / 3)
        made = sender.send_due(seconds=deadline - time.monotonic(), failing=failing)
        attempts += made
        if not created and not made:
            break
    sender.forget_finished()
    if attempts:
        log.info("webhook dispatcher made %d attempts", attempts)
    return attempts
