from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone

from delivery.models import Event, Recipient
from domains.models import Domain, Tenant


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
    SOFT_BOUNCES = "soft_bounces", "Soft bounces, repeated"
    COMPLAINT = "complaint", "Spam complaint"
    UNSUBSCRIBE = "unsubscribe", "Unsubscribed"


class Suppression(models.Model):
    """An address a tenant's mail is not sent to; sends to it end as ``suppressed``."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="suppressions")
    address = models.CharField(max_length=320, help_text="Stored in lower case.")
    reason = models.CharField(max_length=16, choices=SuppressionReason.choices)
    note = models.CharField(max_length=200, blank=True)
    source_event = models.ForeignKey(
        Event,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        help_text="The bounce (or complaint) that added the address, if one did.",
    )
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


class DailyStats(models.Model):
    """What one tenant's mail from one sending domain did on one day (UTC): the counts
    the rates are computed from, added up from the event stream as it grows
    (reputation/stats.py), so no rate is ever computed by scanning events."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+")
    domain = models.ForeignKey(Domain, on_delete=models.CASCADE, related_name="+")
    day = models.DateField()
    accepted = models.PositiveIntegerField(default=0)
    delivered = models.PositiveIntegerField(default=0)
    hard_bounced = models.PositiveIntegerField(default=0)
    soft_bounced = models.PositiveIntegerField(default=0)
    complained = models.PositiveIntegerField(default=0)
    deferred = models.PositiveIntegerField(default=0)  # attempts answered 4xx, delay notices

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["tenant", "domain", "day"], name="one_daily_stats")
        ]
        indexes = [models.Index(fields=["tenant", "day"], name="daily_stats_tenant_day")]

    def __str__(self) -> str:
        return f"{self.tenant_id}/{self.domain_id} {self.day}"


class WarmupCounter(models.Model):
    """Messages a new sending domain was allowed on one day (UTC) of its warm-up
    (reputation/gate.py; permits leased by processes, reputation/quotas.py)."""

    domain = models.ForeignKey(Domain, on_delete=models.CASCADE, related_name="+")
    day = models.DateField()
    count = models.PositiveIntegerField(default=0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["domain", "day"], name="one_warmup_day")]

    def __str__(self) -> str:
        return f"{self.domain_id} {self.day} {self.count}"


class Level(models.IntegerChoices):
    """DESIGN.md's five levels; the thresholds are settings (reputation/levels.py)."""

    EXCELLENT = 1, "Excellent"
    GOOD = 2, "Good"
    WATCH = 3, "Watch"
    RESTRICTED = 4, "Restricted"
    SUSPENDED = 5, "Suspended"


class Standing(models.Model):
    """A tenant's level (``domain`` empty) or one of its sending domains' level, with the
    rates it was computed from; a message gets the stricter of its tenant's and its
    domain's. An operator may pin it (``pinned``): the rates then no longer move it."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="standings")
    domain = models.ForeignKey(
        Domain, on_delete=models.CASCADE, null=True, blank=True, related_name="+"
    )
    level = models.PositiveSmallIntegerField(choices=Level.choices, default=Level.EXCELLENT)
    reason = models.CharField(max_length=300, blank=True)
    since = models.DateTimeField(default=timezone.now)
    better_since = models.DateTimeField(
        null=True, blank=True, help_text="The rates have been in a better band since then."
    )
    delivered = models.PositiveIntegerField(default=0, help_text="In the window.")
    hard_bounced = models.PositiveIntegerField(default=0, help_text="In the window.")
    complained = models.PositiveIntegerField(default=0, help_text="In the window.")
    pinned = models.BooleanField(default=False)
    pin_reason = models.CharField(max_length=300, blank=True)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["tenant"],
                condition=models.Q(domain__isnull=True),
                name="one_tenant_standing",
            ),
            models.UniqueConstraint(
                fields=["tenant", "domain"],
                condition=models.Q(domain__isnull=False),
                name="one_domain_standing",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.tenant_id}/{self.domain_id or '-'} level {self.level}"


class LevelChange(models.Model):
    """A level moving, by the rates or by an operator: the audit trail tenants see."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="level_changes")
    domain = models.ForeignKey(
        Domain, on_delete=models.CASCADE, null=True, blank=True, related_name="+"
    )
    old_level = models.PositiveSmallIntegerField(choices=Level.choices)
    new_level = models.PositiveSmallIntegerField(choices=Level.choices)
    reason = models.CharField(max_length=300)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        help_text="The operator; empty when the rates moved it.",
    )
    pinned = models.BooleanField(default=False)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.tenant_id}/{self.domain_id or '-'} {self.old_level}->{self.new_level}"
