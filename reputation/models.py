from __future__ import annotations

from django.db import models
from django.utils import timezone

from delivery.models import Recipient
from domains.models import Tenant


class InboundReport(models.Model):
    """A bounce or complaint that arrived at the inbound MX for one of our VERP addresses.

    Stored as received; parsing DSN and ARF reports into bounce and complaint events is
    the reputation issue's work.
    """

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="inbound_reports")
    recipient = models.ForeignKey(Recipient, on_delete=models.CASCADE, related_name="+")
    envelope_from = models.CharField(max_length=320, blank=True)
    peer = models.CharField(max_length=64, blank=True)
    raw = models.BinaryField()
    received_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        ordering = ["-received_at"]

    def __str__(self) -> str:
        return f"report for {self.recipient.address} at {self.received_at:%Y-%m-%d %H:%M}"


class SuppressionReason(models.TextChoices):
    MANUAL = "manual", "Added by hand"
    HARD_BOUNCE = "hard_bounce", "Hard bounce"
    COMPLAINT = "complaint", "Spam complaint"
    UNSUBSCRIBE = "unsubscribe", "Unsubscribed"


class Suppression(models.Model):
    """An address a tenant's mail is not sent to; sends to it end as ``suppressed``."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="suppressions")
    address = models.CharField(max_length=320, help_text="Stored in lower case.")
    reason = models.CharField(max_length=16, choices=SuppressionReason.choices)
    note = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(fields=["tenant", "address"], name="one_suppression")
        ]

    def __str__(self) -> str:
        return f"{self.address} ({self.reason})"


class SendCounter(models.Model):
    """Messages a tenant sent in one clock hour: the plan rate is checked against it
    without scanning messages (one row read, one row updated per message)."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+")
    hour = models.DateTimeField(help_text="Start of the clock hour (UTC).")
    count = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["tenant", "hour"], name="one_counter")]

    def __str__(self) -> str:
        return f"{self.tenant_id} {self.hour:%Y-%m-%d %H}:00 {self.count}"
