"""Sending deliveries: claim the due ones, POST each (signed) with a few at a time, log
every attempt, retry with backoff until the retry window is over, then mark failed.

Retries: ``SENDMSG_WEBHOOK_RETRY_FIRST_SECONDS`` after the first failure, doubling up to
``SENDMSG_WEBHOOK_RETRY_MAX_SECONDS``, until ``SENDMSG_WEBHOOK_RETRY_HOURS`` after the
delivery was created; the last retry falls on the end of the window (defaults: 1, 2, 4 …
minutes, then hourly: about 30 attempts over 24 hours). Any answer but a 2xx, and any
connection error or timeout, is retried: a receiver's 4xx is as often a deploy gone wrong
as a permanent refusal.

An endpoint that failed once in a run is not tried again in that run (its other
deliveries wait for the next one, a minute later), so one dead endpoint costs one
timeout per run, not one per event.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone
from rest_framework import serializers
from rest_framework.utils.encoders import JSONEncoder

from delivery.api.event_schema import EVENT_RELATED, EventSerializer
from delivery.models import (
    WEBHOOK_FINAL_STATES,
    Event,
    WebhookAttempt,
    WebhookDelivery,
    WebhookDeliveryState,
    WebhookEndpoint,
)
from delivery.webhooks import client, signing
from domains.crypto import DecryptionError
from sendmsg.log_context import log_context, message_context

log = logging.getLogger(__name__)

CLAIM_BATCH = 100
PRUNE_BATCH = 1000
TEST_EVENT_TYPE = "test"


# -- what is sent --------------------------------------------------------------------------


def _json(data: object) -> bytes:
    return json.dumps(data, cls=JSONEncoder, ensure_ascii=False, separators=(",", ":")).encode()


def event_bodies(events: list[Event]) -> dict[int, bytes]:
    """Request bodies by event id: each event exactly as GET /api/v1/events/ shows it.
    (One serializer for all: DRF copies its fields per serializer, not per row.)"""
    data = EventSerializer(events, many=True).data
    return {event.pk: _json(item) for event, item in zip(events, data, strict=True)}


def test_body(now: datetime) -> bytes:
    """A test ping's body: event-shaped, with id 0 and type "test"."""
    created_at = serializers.DateTimeField().to_representation(now)
    return _json(
        {
            "id": 0,
            "type": TEST_EVENT_TYPE,
            "created_at": created_at,
            "message": None,
            "recipient": None,
            "reply": None,
        }
    )


@dataclass
class Outgoing:
    """One claimed delivery, ready to send (or an error that stops it being sent)."""

    delivery: WebhookDelivery
    url: str
    body: bytes
    event_type: str
    secrets: list[str]
    error: str = ""
    event: Event | None = None  # read with its message (EVENT_RELATED), for the log

    def headers(self) -> dict[str, str]:
        """Signed at send time: a retry carries a fresh timestamp."""
        timestamp = int(time.time())
        return {
            signing.SIGNATURE_HEADER: signing.signature_header(
                self.secrets, timestamp=timestamp, body=self.body
            ),
            "Sendmsg-Event-Id": str(self.delivery.event_id or 0),
            "Sendmsg-Event-Type": self.event_type,
            "Sendmsg-Delivery-Id": str(self.delivery.pk),
            "Sendmsg-Attempt": str(self.delivery.attempts + 1),
        }


def prepare(deliveries: list[WebhookDelivery], *, now: datetime) -> list[Outgoing]:
    """Bodies and secrets for claimed deliveries: one query for their events, one
    decryption per endpoint."""
    event_ids = [d.event_id for d in deliveries if d.event_id is not None]
    events = Event.objects.select_related(*EVENT_RELATED).in_bulk(event_ids)
    bodies = event_bodies(list(events.values()))
    secrets: dict[int, list[str] | str] = {}
    outgoing = []
    for delivery in deliveries:
        endpoint = delivery.endpoint
        if endpoint.pk not in secrets:
            try:
                secrets[endpoint.pk] = signing.signing_secrets(endpoint, now=now)
            except DecryptionError:
                secrets[endpoint.pk] = (
                    "The signing secret does not decrypt with this server's key "
                    "(SENDMSG_DKIM_ENCRYPTION_KEY changed?): rotate the secret."
                )
        found = secrets[endpoint.pk]
        error = found if isinstance(found, str) else ""
        event = events.get(delivery.event_id) if delivery.event_id is not None else None
        if delivery.event_id is not None and event is None:
            error = "The event was deleted meanwhile."  # and its delivery with it: not sent
        if event is not None:
            body, event_type = bodies[event.pk], event.type
        elif delivery.kind:
            body, event_type = _json(delivery.body), delivery.kind
        else:
            body, event_type = test_body(now), TEST_EVENT_TYPE
        outgoing.append(
            Outgoing(
                delivery=delivery,
                url=endpoint.url,
                body=body,
                event_type=event_type,
                secrets=found if isinstance(found, list) else [],
                error=error,
                event=event,
            )
        )
    return outgoing


# -- retries -------------------------------------------------------------------------------


def give_up_at(delivery: WebhookDelivery) -> datetime:
    return delivery.created_at + timedelta(hours=settings.SENDMSG_WEBHOOK_RETRY_HOURS)


def retry_at(delivery: WebhookDelivery, *, now: datetime) -> datetime | None:
    """When to try again after a failed attempt, or None: failed for good. A test ping
    is not retried."""
    if delivery.event_id is None and not delivery.kind:
        return None
    end = give_up_at(delivery)
    if now >= end:
        return None
    first = settings.SENDMSG_WEBHOOK_RETRY_FIRST_SECONDS
    delay = min(first * 2 ** min(delivery.attempts, 32), settings.SENDMSG_WEBHOOK_RETRY_MAX_SECONDS)
    return min(now + timedelta(seconds=delay), end)


def record(
    items: list[tuple[Outgoing, client.Response]], *, lease_token: str
) -> list[WebhookAttempt]:
    """Log the attempts and move their deliveries on, in one transaction (no I/O in it);
    returns the attempts logged (a delivery whose lease was lost is left alone)."""
    logged = []
    with transaction.atomic():
        for outgoing, response in items:
            delivery = outgoing.delivery
            attempt = WebhookAttempt(
                started_at=response.started_at,
                duration_ms=response.duration_ms,
                status_code=response.status_code,
                error=response.error[:500],
                response_excerpt=response.excerpt,
                succeeded=response.succeeded,
            )
            again = None if response.succeeded else retry_at(delivery, now=timezone.now())
            if delivery.finish_attempt(attempt, lease_token=lease_token, retry_at=again):
                logged.append(attempt)
        WebhookAttempt.objects.bulk_create(logged)
    return logged


# -- sending -------------------------------------------------------------------------------


def run_seconds() -> float:
    """How long one dispatcher run may send (SENDMSG_WEBHOOK_RUN_SECONDS)."""
    # Never past django-q2's timeout, which would kill the run mid-request.
    ceiling = settings.Q_CLUSTER["timeout"] - settings.SENDMSG_WEBHOOK_TIMEOUT - 10
    return max(min(settings.SENDMSG_WEBHOOK_RUN_SECONDS, ceiling), 1)


def send_due(*, seconds: float | None = None, failing: set[int] | None = None) -> int:
    """Send due deliveries for up to ``seconds`` (run_seconds() by default); returns the
    number of attempts made. Endpoints in ``failing`` (and those that fail now, which
    are added to it) are left for a later run. Leases make a second run at the same
    time harmless."""
    budget = run_seconds() if seconds is None else seconds
    deadline = time.monotonic() + budget
    lease_seconds = int(budget + settings.SENDMSG_WEBHOOK_TIMEOUT + 60)
    cache = client.AddressCache()
    failing = set() if failing is None else failing
    attempts = 0
    while time.monotonic() < deadline:
        token, claimed = (
            # Events and notices; a test ping is sent at once, by whoever asked for it.
            WebhookDelivery.objects.filter(endpoint__active=True)
            .filter(Q(event__isnull=False) | ~Q(kind=""))
            .exclude(endpoint_id__in=failing)
            .claim(limit=CLAIM_BATCH, lease_seconds=lease_seconds)
        )
        if not claimed:
            break
        outgoing = prepare(claimed, now=timezone.now())
        responses = _post_all(outgoing, deadline=deadline, failing=failing, cache=cache)
        tried = []
        for item, response in zip(outgoing, responses, strict=True):
            if response is None:
                item.delivery.release(lease_token=token)
            else:
                tried.append((item, response))
        attempts += len(record(tried, lease_token=token))
    return attempts


def _post_all(
    outgoing: list[Outgoing],
    *,
    deadline: float,
    failing: set[int],
    cache: client.AddressCache,
) -> list[client.Response | None]:
    """POST each (None: not tried, give it back), a few at a time. Only network I/O
    happens in the threads; the database is written by the caller."""
    lock = threading.Lock()
    now = timezone.now()

    def send(item: Outgoing) -> client.Response | None:
        endpoint_id = item.delivery.endpoint_id
        last_chance = now >= give_up_at(item.delivery)  # tried even if its endpoint failed
        with lock:
            skip = endpoint_id in failing and not last_chance
        if skip or time.monotonic() >= deadline:
            return None
        with delivery_context(item):
            if item.error:
                response = client.Response(
                    started_at=timezone.now(), duration_ms=0, error=item.error
                )
            else:
                response = client.post(
                    item.url,
                    body=item.body,
                    headers=item.headers(),
                    timeout=settings.SENDMSG_WEBHOOK_TIMEOUT,
                    cache=cache,
                )
            log_attempt(item, response)
        if not response.succeeded:
            with lock:
                failing.add(endpoint_id)
        return response

    # Each endpoint's first delivery goes alone; the rest only once it got a 2xx, so an
    # endpoint that is down costs one attempt (one timeout at worst) per run.
    first_of: dict[int, int] = {}
    for index, item in enumerate(outgoing):
        first_of.setdefault(item.delivery.endpoint_id, index)
    probes = sorted(first_of.values())
    others = sorted(set(range(len(outgoing))) - set(probes))
    results: list[client.Response | None] = [None] * len(outgoing)
    workers = max(1, min(settings.SENDMSG_WEBHOOK_CONCURRENCY, len(outgoing)))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="webhook") as pool:
        for wave in (probes, others):
            for index, response in zip(
                wave, pool.map(send, [outgoing[i] for i in wave]), strict=True
            ):
                results[index] = response
    return results


def delivery_context(item: Outgoing) -> log_context:
    """The log context of one webhook delivery: its event's message and recipient (a
    notice's or a test ping's: the delivery alone)."""
    fields = {"webhook_delivery_id": item.delivery.pk, "endpoint_id": item.delivery.endpoint_id}
    event = item.event
    if event is None:
        return log_context(**fields)
    recipient_ids = [event.recipient_id] if event.recipient_id is not None else []
    return message_context(event.message, recipient_ids, event_id=event.pk, **fields)


def log_attempt(item: Outgoing, response: client.Response) -> None:
    outcome = response.error or f"HTTP {response.status_code}"
    level = logging.INFO if response.succeeded else logging.WARNING
    log.log(
        level,
        "webhook %s attempt %d: %s in %d ms",
        item.event_type,
        item.delivery.attempts + 1,
        outcome,
        response.duration_ms,
    )


def send_test(endpoint: WebhookEndpoint) -> WebhookAttempt:
    """Send a test ping to ``endpoint`` now (even a disabled one) and return the attempt.

    It is logged like any delivery, and not retried.
    """
    now = timezone.now()
    token = uuid.uuid4().hex
    delivery = WebhookDelivery.objects.create(
        endpoint=endpoint,
        event=None,
        state=WebhookDeliveryState.SENDING,
        lease_token=token,
        lease_until=now + timedelta(seconds=settings.SENDMSG_WEBHOOK_TIMEOUT + 60),
        created_at=now,
        updated_at=now,
    )
    [item] = prepare([delivery], now=now)
    if item.error:
        response = client.Response(started_at=now, duration_ms=0, error=item.error)
    else:
        response = client.post(
            item.url,
            body=item.body,
            headers=item.headers(),
            timeout=settings.SENDMSG_WEBHOOK_TIMEOUT,
        )
    [attempt] = record([(item, response)], lease_token=token)  # nobody else claims pings
    return attempt


# -- the log -------------------------------------------------------------------------------


def forget_finished(*, now: datetime | None = None, batches: int = 10) -> int:
    """Delete deliveries (and their attempts) finished more than SENDMSG_WEBHOOK_LOG_DAYS
    ago, a batch at a time; returns how many."""
    cutoff = (now or timezone.now()) - timedelta(days=settings.SENDMSG_WEBHOOK_LOG_DAYS)
    removed = 0
    for _ in range(batches):
        ids = list(
            WebhookDelivery.objects.filter(
                state__in=WEBHOOK_FINAL_STATES, updated_at__lt=cutoff
            ).values_list("pk", flat=True)[:PRUNE_BATCH]
        )
        if not ids:
            break
        removed += (
            WebhookDelivery.objects.filter(pk__in=ids)
            .delete()[1]
            .get(WebhookDelivery._meta.label, 0)
        )
    return removed
