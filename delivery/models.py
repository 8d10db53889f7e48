from __future__ import annotations

import secrets
import uuid
from datetime import timedelta

from django.db import models, transaction
from django.utils import timezone

from delivery.replies import SmtpReply
from domains.models import Domain, Tenant


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
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["tenant", "created_at"], name="message_tenant_time")]

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
    def due(self, now=None) -> RecipientQuerySet:
        """Waiting recipients whose time has come, and claimed ones whose lease ran out."""
        now = now or timezone.now()
        return self.filter(
            models.Q(state__in=WAITING_STATES, next_attempt_at__lte=now)
            | models.Q(state=RecipientState.SENDING, lease_until__lt=now)
        )

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
        with transaction.atomic():
            picked = self.due(now).select_for_update(skip_locked=True).values("pk")
            Recipient.objects.filter(pk__in=picked).due(now).update(
                state=RecipientState.SENDING,
                lease_token=token,
                lease_until=now + timedelta(seconds=lease_seconds),
                updated_at=now,
            )
        claimed = list(Recipient.objects.filter(lease_token=token).select_related("message"))
        return token, claimed


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
        indexes = [models.Index(fields=["state", "next_attempt_at"], name="recipient_due")]

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
        now = timezone.now()
        fields = {
            "state": state,
            "attempts": models.F("attempts") + 1,
            "lease_token": "",
            "lease_until": None,
            "updated_at": now,
            "mx_host": mx_host,
        }
        if retry_at is not None:
            fields["next_attempt_at"] = retry_at
        if reply is not None:
            fields.update(last_code=reply.code, last_enhanced=reply.enhanced, last_text=reply.text)
        with transaction.atomic():
            updated = Recipient.objects.filter(
                pk=self.pk, lease_token=lease_token, state=RecipientState.SENDING
            ).update(**fields)
            if updated:
                Event.record(recipient=self, type=event, reply=reply, mx_host=mx_host)
        return bool(updated)


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
    INBOUND_REPORT = "inbound_report", "A bounce or complaint report arrived"


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

    class Meta:
        ordering = ["created_at", "id"]

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
