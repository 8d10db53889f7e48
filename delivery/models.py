from __future__ import annotations

import functools
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import models, transaction
from django.db.models.functions import Lower
from django.utils import timezone

from delivery.replies import SmtpReply
from domains.models import Domain, Role, Tenant
from sendmsg import sql
from sendmsg.write_turn import write_turn


class SmtpCredential(models.Model):
    """SMTP AUTH login of a tenant; the password is kept only as a keyed hash."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="smtp_credentials")
    username = models.CharField(max_length=64, unique=True)
    password_hash = models.CharField(max_length=64)
    description = models.CharField(max_length=200, blank=True)
    domains = models.ManyToManyField(
        Domain, blank=True, help_text="Limit this login to these domains; empty means all."
    )
    created_at = models.DateTimeField(default=timezone.now)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked = models.BooleanField(default=False)

    def __str__(self) -> str:
        return self.username


class ApiKey(models.Model):
    """REST API key (``Authorization: Bearer sm_<prefix>_<secret>``), kept as a keyed hash."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="api_keys")
    name = models.CharField(max_length=100, blank=True)
    prefix = models.CharField(max_length=16, unique=True)
    key_hash = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(default=timezone.now)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked = models.BooleanField(default=False)
    # What the key may do (domains/roles.py). Keys from before roles are admin keys, as
    # they could do everything a tenant's admin can; new ones default to developer
    # (delivery/credentials.py), never above whoever created them.
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.ADMIN)

    def __str__(self) -> str:
        return f"sm_{self.prefix}_…"


def new_queue_id() -> str:
    return secrets.token_hex(8).upper()


class Source(models.TextChoices):
    SMTP = "smtp", "SMTP submission"
    API = "api", "REST API"


class Message(models.Model):
    """One accepted message: its envelope sender and the exact bytes to sign and relay."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="messages")
    domain = models.ForeignKey(Domain, on_delete=models.PROTECT, related_name="messages")
    queue_id = models.CharField(max_length=32, unique=True, default=new_queue_id)
    source = models.CharField(max_length=8, choices=Source.choices)
    mail_from = models.CharField(max_length=320, help_text="Envelope sender the tenant gave.")
    header_from = models.CharField(max_length=998, blank=True)
    subject = models.CharField(max_length=998, blank=True)
    message_id = models.CharField(max_length=998, blank=True)
    raw = models.BinaryField(help_text="CRLF-normalised message as accepted (before signing).")
    size = models.PositiveIntegerField()
    tags = models.JSONField(default=list, blank=True)
    metadata = models.JSONField(default=dict, blank=True)
    unsubscribe = models.BooleanField(
        default=False,
        help_text="Each recipient gets one-click unsubscribe headers (delivery/unsubscribe.py).",
    )
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    body_removed_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="When retention removed the body; raw then holds only the header section.",
    )

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["tenant", "created_at"], name="message_tenant_time"),
            # The retention sweep's scan: only messages whose body is still kept, so the
            # weeks of bodies removed already are never walked again (delivery/retention.py).
            models.Index(
                fields=["created_at"],
                name="message_body_kept",
                condition=models.Q(body_removed_at__isnull=True),
            ),
        ]

    def __str__(self) -> str:
        return self.queue_id


class RecipientState(models.TextChoices):
    QUEUED = "queued", "Queued"
    SENDING = "sending", "Sending"
    DEFERRED = "deferred", "Deferred: will retry"
    DELIVERED = "delivered", "Delivered"
    BOUNCED = "bounced", "Bounced"
    EXPIRED = "expired", "Expired: retried until the message's lifetime ran out"
    SUPPRESSED = "suppressed", "Suppressed"
    CANCELLED = "cancelled", "Cancelled"
    HELD = "held", "Held by an operator"


FINAL_STATES = {
    RecipientState.DELIVERED,
    RecipientState.BOUNCED,
    RecipientState.EXPIRED,
    RecipientState.SUPPRESSED,
    RecipientState.CANCELLED,
}
WAITING_STATES = {RecipientState.QUEUED, RecipientState.DEFERRED}


class RecipientQuerySet(models.QuerySet):
    def due(self, now=None, *, held: Held | None = None) -> RecipientQuerySet:
        """Waiting recipients whose time has come, and claimed ones whose lease ran out;
        never those of a sender whose queue is held (``held``, read now if not given)."""
        now = now or timezone.now()
        due = self.filter(
            models.Q(state__in=WAITING_STATES, next_attempt_at__lte=now)
            | models.Q(state=RecipientState.SENDING, lease_until__lt=now)
        )
        held = held_senders() if held is None else held
        if held.tenant_ids:
            due = due.exclude(tenant_id__in=held.tenant_ids)
        if held.domain_ids:
            due = due.exclude(
                message_id__in=Message.objects.filter(domain_id__in=held.domain_ids).values("pk")
            )
        return due

    def claim(self, *, lease_seconds: int) -> tuple[str, list[Recipient]]:
        """Lease the due recipients in this queryset to the caller.

        One conditional UPDATE stamps a fresh token on exactly the rows still due, so two
        workers racing for the same rows get disjoint sets. On PostgreSQL the rows are
        picked with ``FOR UPDATE SKIP LOCKED``: a worker passes over rows another is
        claiming instead of waiting for it (SQLite has one writer at a time anyway, and
        ignores the clause).
        """
        now = timezone.now()
        token = uuid.uuid4().hex
        # Read before the transaction: the claim's own statement then names the recipient
        # table alone (and the message table only while a domain is held), so it takes no
        # lock on another table while it waits for its rows.
        held = held_senders()
        with write_turn(), transaction.atomic():
            picked = self.due(now, held=held).select_for_update(skip_locked=True).values("pk")
            Recipient.objects.filter(pk__in=picked).due(now, held=held).update(
                state=RecipientState.SENDING,
                lease_token=token,
                lease_until=now + timedelta(seconds=lease_seconds),
                updated_at=now,
            )
        claimed = list(Recipient.objects.filter(lease_token=token).order_by("message_id", "pk"))
        return token, claimed


@dataclass(frozen=True)
class Held:
    """Senders whose queued mail waits, untouched, for now (reputation/gate.py
    held_senders says who and why); then their retry times apply as usual."""

    tenant_ids: tuple[int, ...] = ()
    domain_ids: tuple[int, ...] = ()


def held_senders() -> Held:
    """reputation.gate.held_senders (imported here: reputation's models import these)."""
    from reputation.gate import held_senders

    return held_senders()


class Recipient(models.Model):
    """One recipient of a message; its state is the queue (the database is the truth)."""

    message = models.ForeignKey(Message, on_delete=models.CASCADE, related_name="recipients")
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+")
    address = models.CharField(max_length=320)
    domain = models.CharField(max_length=253, help_text="ASCII form of the address's domain.")
    state = models.CharField(
        max_length=12, choices=RecipientState.choices, default=RecipientState.QUEUED
    )
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(default=timezone.now)
    lease_token = models.CharField(max_length=32, blank=True, db_index=True)
    lease_until = models.DateTimeField(null=True, blank=True)
    last_code = models.PositiveSmallIntegerField(null=True, blank=True)
    last_enhanced = models.CharField(max_length=16, blank=True)
    last_text = models.TextField(blank=True)
    mx_host = models.CharField(max_length=253, blank=True)
    updated_at = models.DateTimeField(default=timezone.now)

    objects = RecipientQuerySet.as_manager()

    class Meta:
        indexes = [
            models.Index(fields=["state", "next_attempt_at"], name="recipient_due"),
            # A tenant's recipients in one state, latest change first: the Overview's
            # recent failures and queue (domains/overview.py) without reading the rest;
            # message_id makes the queue's oldest waiting message an index-only read.
            models.Index(
                fields=["tenant", "state", "updated_at", "message"],
                name="recipient_tenant_state",
            ),
            # The message log's "recipient is" filter: a tenant's recipients by address in
            # any letter case, matched as LOWER(address) = LOWER(%s) (delivery/message_log.py).
            models.Index("tenant", Lower("address"), "message", name="recipient_tenant_address"),
        ]

    def __str__(self) -> str:
        return f"{self.address} ({self.state})"

    @property
    def is_final(self) -> bool:
        return self.state in FINAL_STATES

    def finish(
        self,
        *,
        state: RecipientState,
        reply: SmtpReply | None,
        lease_token: str,
        event: EventType,
        retry_at=None,
        mx_host: str = "",
    ) -> bool:
        """Record an attempt's outcome if we still hold the lease; write its event.

        Returns False (and changes nothing) when the lease was lost to another worker.
        """
        outcome = Outcome(self, state, reply, lease_token, event, retry_at, mx_host)
        return bool(finish_all([outcome]))


@dataclass(frozen=True)
class Outcome:
    """One attempt's result for a leased recipient, to be written by finish_all."""

    recipient: Recipient
    state: RecipientState
    reply: SmtpReply | None
    lease_token: str
    event: EventType
    retry_at: datetime | None = None
    mx_host: str = ""
    # Why a failure failed (reputation/bounce_patterns.py): a function of the reply, so
    # outcomes alike by reply are alike by these too.
    bounce_class: str = ""
    reason: str = ""


def finish_all(outcomes: list[Outcome]) -> list[Outcome]:
    """Write outcomes in one transaction (one commit), each only if its lease is still
    held, with their events; returns those written (the others' leases were lost).

    Outcomes alike (same state, reply, host, retry time and lease, as when a worker
    delivers one message after another to one MX host) share one UPDATE, which names
    the rows it changed (RETURNING, sendmsg/sql.py).
    """
    now = timezone.now()
    alike: dict[tuple, list[Outcome]] = {}
    for outcome in outcomes:
        reply = outcome.reply
        key = (
            outcome.state,
            outcome.lease_token,
            outcome.mx_host,
            outcome.retry_at,
            (reply.code, reply.enhanced, reply.text) if reply else None,
        )
        alike.setdefault(key, []).append(outcome)
    written = []
    with write_turn(), transaction.atomic():
        for (state, token, mx_host, retry_at, reply), group in alike.items():
            changed = set(
                _finish_group(
                    ids=[o.recipient.pk for o in group],
                    state=state,
                    token=token,
                    mx_host=mx_host,
                    retry_at=retry_at,
                    reply=reply,
                    now=now,
                )
            )
            written += [o for o in group if o.recipient.pk in changed]
        sql.insert(
            [
                Event(
                    tenant_id=o.recipient.tenant_id,
                    message_id=o.recipient.message_id,
                    recipient_id=o.recipient.pk,
                    type=o.event,
                    created_at=now,
                    code=o.reply.code if o.reply else None,
                    enhanced=o.reply.enhanced if o.reply else "",
                    text=o.reply.text if o.reply else "",
                    mx_host=o.mx_host,
                    bounce_class=o.bounce_class,
                    reason=o.reason,
                )
                for o in written
            ]
        )
    return written


def _finish_group(*, ids, state, token, mx_host, retry_at, reply, now) -> list[int]:
    """One conditional UPDATE for recipients with the same outcome; the ids it changed."""
    column = functools.partial(sql.column, Recipient)
    values = {
        "state": state,
        "lease_token": "",
        "lease_until": None,
        "updated_at": now,
        "mx_host": mx_host,
    }
    if retry_at is not None:
        values["next_attempt_at"] = retry_at
    if reply is not None:
        values.update(zip(("last_code", "last_enhanced", "last_text"), reply, strict=True))
    assignments = ", ".join(f"{column(name)} = %s" for name in values)
    query = (
        f"UPDATE {sql.table(Recipient)} SET {assignments}, "
        f"{column('attempts')} = {column('attempts')} + 1 "
        f"WHERE {column('id')} IN ({', '.join(['%s'] * len(ids))}) "
        f"AND {column('lease_token')} = %s AND {column('state')} = %s "
        f"RETURNING {column('id')}"
    )
    params = [sql.db_value(Recipient, name, value) for name, value in values.items()]
    rows = sql.fetch_all(query, [*params, *ids, token, RecipientState.SENDING])
    return [row[0] for row in rows]


class EventType(models.TextChoices):
    ACCEPTED = "accepted", "Accepted and queued"
    DELIVERED = "delivered", "Delivered: the recipient's server accepted it"
    DEFERRED = "deferred", "Deferred: a temporary failure; will retry"
    BOUNCED = "bounced", "Bounced: the recipient's server refused it"
    EXPIRED = "expired", "Expired: not delivered within the message's lifetime"
    SUPPRESSED = "suppressed", "Suppressed: the address is on the suppression list; not sent"
    HELD = "held", "Held by an operator: not sent until released"
    RELEASED = "released", "Released by an operator: queued again"
    CANCELLED = "cancelled", "Cancelled before it was sent"
    COMPLAINED = "complained", "Complained: the recipient reported it as spam"
    INBOUND_REPORT = "inbound_report", "A bounce or complaint report arrived"
    UNSUBSCRIBED = "unsubscribed", "Unsubscribed: the recipient used the unsubscribe link"


class Event(models.Model):
    """Something that happened to a message or recipient, with the remote reply if any."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="events")
    message = models.ForeignKey(Message, on_delete=models.CASCADE, related_name="events")
    recipient = models.ForeignKey(
        Recipient, on_delete=models.CASCADE, null=True, blank=True, related_name="events"
    )
    type = models.CharField(max_length=20, choices=EventType.choices)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    code = models.PositiveSmallIntegerField(null=True, blank=True)
    enhanced = models.CharField(max_length=16, blank=True)
    text = models.TextField(blank=True)
    mx_host = models.CharField(max_length=253, blank=True)
    bounce_class = models.CharField(
        max_length=4, blank=True, help_text="A failure's class: hard or soft (else blank)."
    )
    reason = models.CharField(
        max_length=24,
        blank=True,
        help_text="Why a failure failed, e.g. mailbox_unknown (reputation/bounce_patterns.py).",
    )

    class Meta:
        ordering = ["created_at", "id"]
        indexes = [
            # A tenant's events in order: the events API, held senders, soft bounces.
            models.Index(fields=["tenant", "created_at", "id"], name="event_tenant_time"),
        ]

    def __str__(self) -> str:
        return f"{self.type} {self.created_at:%Y-%m-%d %H:%M:%S}"

    @classmethod
    def record(
        cls,
        *,
        recipient: Recipient,
        type: EventType,
        reply: SmtpReply | None = None,
        mx_host: str = "",
    ) -> Event:
        return cls.objects.create(
            tenant_id=recipient.tenant_id,
            message_id=recipient.message_id,
            recipient=recipient,
            type=type,
            code=reply.code if reply else None,
            enhanced=reply.enhanced if reply else "",
            text=reply.text if reply else "",
            mx_host=mx_host,
        )


class IdempotencyKey(models.Model):
    """A send request's Idempotency-Key: the same key again returns the first answer."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+")
    key = models.CharField(max_length=255)
    request_hash = models.CharField(max_length=64, help_text="SHA-256 of the request body.")
    status_code = models.PositiveSmallIntegerField()
    response = models.JSONField()
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["tenant", "key"], name="one_idempotency_key")
        ]

    def __str__(self) -> str:
        return self.key


# -- webhooks (delivery/webhooks/) ---------------------------------------------------------


class WebhookEndpoint(models.Model):
    """A tenant's URL that receives its events, each signed with the endpoint's secret.

    The secret must be recoverable to sign, so it is stored encrypted (like DKIM keys),
    never in clear. After a rotation the previous secret also signs until
    ``previous_secret_until``, so a receiver can switch without losing deliveries.
    """

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="webhook_endpoints")
    url = models.CharField(max_length=2000)
    description = models.CharField(max_length=200, blank=True)
    event_types = models.JSONField(default=list, help_text="The event types sent here.")
    active = models.BooleanField(default=True)
    secret_encrypted = models.BinaryField()
    previous_secret_encrypted = models.BinaryField(default=b"", blank=True)
    previous_secret_until = models.DateTimeField(null=True, blank=True)
    first_event_id = models.BigIntegerField(
        default=0,
        help_text="Events after this one are sent (the newest event when the endpoint was "
        "created or last enabled).",
    )
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return self.url


class WebhookDeliveryState(models.TextChoices):
    PENDING = "pending", "Pending: will be sent (again)"
    SENDING = "sending", "Being sent"
    SUCCEEDED = "succeeded", "Succeeded: the endpoint answered 2xx"
    FAILED = "failed", "Failed: no 2xx answer within the retry window"


WEBHOOK_FINAL_STATES = {WebhookDeliveryState.SUCCEEDED, WebhookDeliveryState.FAILED}


class WebhookDeliveryQuerySet(models.QuerySet):
    def due(self, now=None) -> WebhookDeliveryQuerySet:
        """Pending deliveries whose time has come, and claimed ones whose lease ran out."""
        now = now or timezone.now()
        return self.filter(
            models.Q(state=WebhookDeliveryState.PENDING, next_attempt_at__lte=now)
            | models.Q(state=WebhookDeliveryState.SENDING, lease_until__lt=now)
        )

    def claim(self, *, limit: int, lease_seconds: int) -> tuple[str, list[WebhookDelivery]]:
        """Lease up to ``limit`` due deliveries of this queryset to the caller.

        As Recipient.claim: one conditional UPDATE stamps a fresh token on the rows still
        due, so two dispatchers racing get disjoint sets; PostgreSQL skips rows another
        dispatcher is claiming right now.
        """
        now = timezone.now()
        token = uuid.uuid4().hex
        with write_turn(), transaction.atomic():
            picked = (
                self.due(now)
                .order_by("next_attempt_at", "pk")
                # Lock the deliveries only, not the endpoints a filter may join.
                .select_for_update(skip_locked=True, of=("self",))
                .values_list("pk", flat=True)[:limit]
            )
            WebhookDelivery.objects.filter(pk__in=list(picked)).due(now).update(
                state=WebhookDeliveryState.SENDING,
                lease_token=token,
                lease_until=now + timedelta(seconds=lease_seconds),
                updated_at=now,
            )
        claimed = list(
            WebhookDelivery.objects.filter(lease_token=token)
            .select_related("endpoint")
            .order_by("next_attempt_at", "pk")
        )
        return token, claimed


LEVEL_CHANGED = "reputation.level_changed"
WEBHOOK_EVENT_CHOICES = [
    *EventType.choices,
    (LEVEL_CHANGED, "Reputation level changed, for the tenant or one of its domains"),
]
WEBHOOK_EVENT_TYPES = [value for value, _ in WEBHOOK_EVENT_CHOICES]
"""What an endpoint may choose: the message events, and a change of reputation level
(not a message event: its delivery carries its own body, WebhookDelivery.body)."""


class WebhookDelivery(models.Model):
    """One event (or a test ping, or a notice with its own ``body``, without event) to
    send to one endpoint, retried until a 2xx answer or the end of the retry window."""

    endpoint = models.ForeignKey(
        WebhookEndpoint, on_delete=models.CASCADE, related_name="deliveries"
    )
    event = models.ForeignKey(
        Event, on_delete=models.CASCADE, null=True, blank=True, related_name="+"
    )
    state = models.CharField(
        max_length=12, choices=WebhookDeliveryState.choices, default=WebhookDeliveryState.PENDING
    )
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(default=timezone.now)
    lease_token = models.CharField(max_length=32, blank=True, db_index=True)
    lease_until = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)
    kind = models.CharField(
        max_length=40, blank=True, help_text="A notice's type (e.g. reputation.level_changed)."
    )
    body = models.JSONField(null=True, blank=True, help_text="A notice's body, sent as is.")

    objects = WebhookDeliveryQuerySet.as_manager()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["endpoint", "event"], name="one_delivery_per_event")
        ]
        indexes = [
            models.Index(fields=["state", "next_attempt_at"], name="webhook_delivery_due"),
            models.Index(fields=["state", "updated_at"], name="webhook_delivery_done"),
        ]

    def __str__(self) -> str:
        return f"{self.event_id or 'test'} → {self.endpoint_id} ({self.state})"

    def finish_attempt(self, attempt: WebhookAttempt, *, lease_token: str, retry_at=None) -> bool:
        """Move the delivery on after ``attempt`` (not saved yet), if we still hold its
        lease; False (and nothing changed) when the lease was lost.

        Succeeded: final. Failed: pending again at ``retry_at``, or failed for good when
        there is none (the retry window is over, or it was a test ping). The caller saves
        ``attempt`` in the same transaction (in bulk, for a batch).
        """
        if attempt.succeeded:
            state = WebhookDeliveryState.SUCCEEDED
        elif retry_at is None:
            state = WebhookDeliveryState.FAILED
        else:
            state = WebhookDeliveryState.PENDING
        fields = {
            "state": state,
            "attempts": models.F("attempts") + 1,
            "lease_token": "",
            "lease_until": None,
            "updated_at": timezone.now(),
        }
        if state == WebhookDeliveryState.PENDING:
            fields["next_attempt_at"] = retry_at
        updated = WebhookDelivery.objects.filter(
            pk=self.pk, lease_token=lease_token, state=WebhookDeliveryState.SENDING
        ).update(**fields)
        if not updated:
            return False
        attempt.delivery_id = self.pk
        attempt.endpoint_id = self.endpoint_id
        attempt.number = self.attempts + 1
        self.state = state
        self.attempts += 1
        self.lease_token = ""
        if state == WebhookDeliveryState.PENDING:
            self.next_attempt_at = retry_at
        return True

    def release(self, *, lease_token: str) -> bool:
        """Give a claimed delivery back untried (due again at once), if we hold it."""
        return bool(
            WebhookDelivery.objects.filter(
                pk=self.pk, lease_token=lease_token, state=WebhookDeliveryState.SENDING
            ).update(
                state=WebhookDeliveryState.PENDING,
                lease_token="",
                lease_until=None,
                updated_at=timezone.now(),
            )
        )


class WebhookAttempt(models.Model):
    """One HTTP request of a delivery: the answer's status or the error, and how long."""

    delivery = models.ForeignKey(
        WebhookDelivery, on_delete=models.CASCADE, related_name="attempt_log"
    )
    endpoint = models.ForeignKey(WebhookEndpoint, on_delete=models.CASCADE, related_name="attempts")
    number = models.PositiveIntegerField(help_text="1 for the first attempt of the delivery.")
    started_at = models.DateTimeField(default=timezone.now)
    duration_ms = models.PositiveIntegerField(default=0)
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    error = models.CharField(max_length=500, blank=True)
    response_excerpt = models.TextField(blank=True)
    succeeded = models.BooleanField(default=False)

    class Meta:
        ordering = ["-started_at", "-id"]
        indexes = [models.Index(fields=["endpoint", "started_at"], name="webhook_attempt_recent")]

    def __str__(self) -> str:
        outcome = self.status_code or self.error or "?"
        return f"attempt {self.number} of {self.delivery_id}: {outcome}"


class WebhookOutbox(models.Model):
    """How far the webhook dispatcher has read a stream of events (by id).

    Every event with an id up to ``position`` has its deliveries created. An id missing
    just after it (a transaction still open, or rolled back) is waited for since
    ``gap_seen_at`` (see delivery/webhooks/outbox.py).
    """

    name = models.CharField(max_length=32, unique=True)
    position = models.BigIntegerField(default=0)
    gap_seen_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"{self.name} at {self.position}"
