from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.db import models
from django.utils import timezone

from domains import crypto
from domains.names import display_domain


class Tenant(models.Model):
    """An organization that sends mail; every tenant-owned row points here."""

    name = models.CharField(max_length=100, unique=True)
    created_at = models.DateTimeField(default=timezone.now)
    suspended = models.BooleanField(
        default=False, help_text="Set by an operator; refuses new mail."
    )
    suspended_reason = models.TextField(
        blank=True, help_text="Why an operator suspended the tenant (the tenant sees it)."
    )
    suspended_at = models.DateTimeField(null=True, blank=True)
    plan_rate = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="Messages per hour this tenant may send; empty means the platform default.",
    )
    list_unsubscribe = models.BooleanField(
        default=False,
        help_text=(
            "Add one-click unsubscribe headers (RFC 8058) to every message unless a message "
            "says otherwise (the API's unsubscribe field, the Sendmsg-Unsubscribe header)."
        ),
    )

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def suspend(self, reason: str) -> None:
        """An operator stops the tenant's mail: new mail refused, its queue held
        (reputation/gate.py), until ``reinstate``."""
        if not reason.strip():
            raise ValueError("A suspension needs a reason.")
        self.suspended, self.suspended_reason = True, reason.strip()
        self.suspended_at = timezone.now()
        # save(), not a bulk update: post_save makes this process's gate forget the tenant.
        self.save(update_fields=["suspended", "suspended_reason", "suspended_at"])

    def reinstate(self) -> None:
        """Lift an operator's suspension (the audit log keeps why it was made)."""
        self.suspended, self.suspended_reason, self.suspended_at = False, "", None
        self.save(update_fields=["suspended", "suspended_reason", "suspended_at"])


class Role(models.TextChoices):
    OWNER = "owner", "Owner"
    ADMIN = "admin", "Admin"
    DEVELOPER = "developer", "Developer"
    VIEWER = "viewer", "Viewer"


class Membership(models.Model):
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships"
    )
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.VIEWER)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["tenant", "user"], name="one_membership_per_user")
        ]

    def __str__(self) -> str:
        return f"{self.user} in {self.tenant} ({self.role})"


class DomainStatus(models.TextChoices):
    PENDING = "pending", "Pending: publish the DNS records, then check"
    VERIFIED = "verified", "Verified: may send"
    DISABLED = "disabled", "Disabled by the tenant"


class DomainQuerySet(models.QuerySet):
    def for_tenant(self, tenant: Tenant) -> DomainQuerySet:
        return self.filter(tenant=tenant)

    def verified(self) -> DomainQuerySet:
        return self.filter(status=DomainStatus.VERIFIED)


class Domain(models.Model):
    """A sending domain, stored in its ASCII (IDNA 2008) form."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="domains")
    name = models.CharField(max_length=253, unique=True)
    status = models.CharField(
        max_length=16, choices=DomainStatus.choices, default=DomainStatus.PENDING
    )
    created_at = models.DateTimeField(default=timezone.now)
    verified_at = models.DateTimeField(null=True, blank=True)
    checked_at = models.DateTimeField(null=True, blank=True)
    health_score = models.PositiveSmallIntegerField(null=True, blank=True)
    score_partial = models.BooleanField(
        default=False, help_text="Some checks could not be answered; the score covers the rest."
    )
    # The status a check last established; a disabled domain returns to it when enabled.
    dns_verified = models.BooleanField(default=False)
    require_tls = models.BooleanField(
        default=False,
        help_text=(
            "Relay this domain's mail only over STARTTLS with a certificate valid for the "
            "receiving MX host; otherwise defer it (4.7.x) instead of sending in clear."
        ),
    )

    objects = DomainQuerySet.as_manager()

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def display_name(self) -> str:
        return display_domain(self.name)

    @property
    def return_path_host(self) -> str:
        """The tenant-side host that CNAMEs to the platform's return-path domain."""
        return f"{settings.SENDMSG_RETURN_PATH_LABEL}.{self.name}"

    def signing_keys(self) -> list[DkimKey]:
        """The keys mail is signed with now: at most one per algorithm."""
        return list(self.dkim_keys.filter(state=KeyState.ACTIVE).order_by("algorithm"))

    def active_dkim_key(self) -> DkimKey | None:
        """The active RSA key (every domain has one once set up)."""
        return (
            self.dkim_keys.filter(state=KeyState.ACTIVE, algorithm=KeyAlgorithm.RSA)
            .order_by("-created_at")
            .first()
        )

    def listed_keys(self) -> list[DkimKey]:
        """Keys whose records a tenant should see: pending, active, and retired ones."""
        return list(self.dkim_keys.order_by("state", "-created_at"))

    def set_verified(self, verified: bool) -> bool:
        """Record what the DNS checks established; returns True when the status changed."""
        now = timezone.now()
        before = self.status
        self.dns_verified = verified
        if verified and not self.verified_at:
            self.verified_at = now
        if self.status != DomainStatus.DISABLED:
            self.status = DomainStatus.VERIFIED if verified else DomainStatus.PENDING
        self.save(update_fields=["dns_verified", "verified_at", "status"])
        return self.status != before

    def disable(self) -> None:
        self.status = DomainStatus.DISABLED
        self.save(update_fields=["status"])

    def enable(self) -> None:
        self.status = DomainStatus.VERIFIED if self.dns_verified else DomainStatus.PENDING
        self.save(update_fields=["status"])

    def set_require_tls(self, required: bool) -> None:
        """Whether the relay must use verified TLS for this domain's mail (else defer)."""
        self.require_tls = required
        self.save(update_fields=["require_tls"])


class KeyAlgorithm(models.TextChoices):
    RSA = "rsa", "RSA"
    ED25519 = "ed25519", "Ed25519 (RFC 8463)"


class KeyState(models.TextChoices):
    PENDING = "pending", "Pending: publish its record; signing switches once it is seen"
    ACTIVE = "active", "Active: signing"
    RETIRED = (
        "retired",
        "Retired: no longer signs; its record can be removed after the grace period",
    )


class DkimKey(models.Model):
    """A DKIM key pair; the private half is stored only encrypted (domains.crypto)."""

    domain = models.ForeignKey(Domain, on_delete=models.CASCADE, related_name="dkim_keys")
    selector = models.CharField(max_length=63)
    algorithm = models.CharField(max_length=8, choices=KeyAlgorithm.choices)
    bits = models.PositiveSmallIntegerField(null=True, blank=True)
    public_key = models.TextField(help_text="Base64 public key, as in p= of the record.")
    private_key_encrypted = models.BinaryField()
    state = models.CharField(max_length=8, choices=KeyState.choices, default=KeyState.PENDING)
    created_at = models.DateTimeField(default=timezone.now)
    activated_at = models.DateTimeField(null=True, blank=True)
    retired_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["domain", "selector"], name="unique_selector"),
            models.UniqueConstraint(
                fields=["domain", "algorithm"],
                condition=models.Q(state="active"),
                name="one_active_key_per_algorithm",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.selector}._domainkey.{self.domain.name}"

    @property
    def record_name(self) -> str:
        return f"{self.selector}._domainkey.{self.domain.name}"

    @property
    def record_value(self) -> str:
        return f"v=DKIM1; k={self.algorithm}; p={self.public_key}"

    @property
    def removable_after(self):
        """When a retired key's record may be deleted from DNS (signatures made with it
        can still be verified until then)."""
        if self.retired_at is None:
            return None
        return self.retired_at + timedelta(days=settings.SENDMSG_DKIM_RETIRE_GRACE_DAYS)

    def private_key_pem(self) -> bytes:
        return crypto.decrypt(self.private_key_encrypted)


class DomainCheck(models.Model):
    """One run of the DNS checks: the history behind the health score chart."""

    domain = models.ForeignKey(Domain, on_delete=models.CASCADE, related_name="checks")
    checked_at = models.DateTimeField(default=timezone.now, db_index=True)
    score = models.PositiveSmallIntegerField()
    partial = models.BooleanField(default=False)
    verified = models.BooleanField(default=False)
    results = models.JSONField(default=list)

    class Meta:
        ordering = ["-checked_at", "-id"]

    def __str__(self) -> str:
        return f"{self.domain} {self.score} at {self.checked_at:%Y-%m-%d %H:%M}"

    def status_of(self, name: str) -> str | None:
        return next((r["status"] for r in self.results if r["name"] == name), None)


class DomainEventType(models.TextChoices):
    VERIFIED = "domain.verified", "The domain's records check out: it may send"
    UNVERIFIED = "domain.unverified", "A required record is gone: the domain may not send"
    SCORE_CHANGED = "domain.score_changed", "The health score changed"
    CHECK_CHANGED = "domain.check_changed", "A check's state changed"
    KEY_ACTIVATED = "domain.key_activated", "A new DKIM key was seen in DNS and now signs"
    KEY_RETIRED = "domain.key_retired", "A DKIM key stopped signing"


class DomainEvent(models.Model):
    """A change in a domain's DNS health; fed to webhooks by the delivery side later."""

    domain = models.ForeignKey(Domain, on_delete=models.CASCADE, related_name="events")
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="domain_events")
    type = models.CharField(max_length=32, choices=DomainEventType.choices)
    message = models.TextField()
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.type} {self.domain}"


class AuditEntry(models.Model):
    """One change made by a person (in the dashboard or the admin) or by an API key, in a
    tenant. Written by domains/audit.py; the tenant's owners and admins read it."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="audit_entries")
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    # Who, as shown: a username, "API key sm_ab12cd34" or "operator alice"; it outlives
    # a deleted account.
    actor_label = models.CharField(max_length=200)
    action = models.CharField(max_length=64)  # e.g. "domain.add", "member.role_changed"
    target = models.CharField(max_length=300, blank=True)
    detail = models.JSONField(default=dict, blank=True)
    ip = models.GenericIPAddressField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["tenant", "-created_at"], name="audit_tenant_time")]
        verbose_name_plural = "audit entries"

    def __str__(self) -> str:
        return f"{self.actor_label} {self.action} {self.target}"


class InvitationQuerySet(models.QuerySet):
    def pending(self) -> InvitationQuerySet:
        """Neither accepted, revoked nor expired: the link still works."""
        return self.filter(
            accepted_at__isnull=True, revoked_at__isnull=True, expires_at__gt=timezone.now()
        )


class Invitation(models.Model):
    """An invitation by email to join a tenant with a role (domains/accounts.py).

    Only a keyed hash of the link's token is stored (delivery/keyed_hash.py): the link in
    the email is the one copy of the token."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="invitations")
    email = models.EmailField()
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.VIEWER)
    token_hash = models.CharField(max_length=64, unique=True)
    invited_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()
    accepted_at = models.DateTimeField(null=True, blank=True)
    accepted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    revoked_at = models.DateTimeField(null=True, blank=True)

    objects = InvitationQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["tenant", "email"], name="invitation_tenant_email")]

    def __str__(self) -> str:
        return f"{self.email} to {self.tenant} ({self.role})"

    @property
    def expired(self) -> bool:
        return self.expires_at <= timezone.now()

    def mark_accepted(self, user) -> None:
        self.accepted_at = timezone.now()
        self.accepted_by = user
        self.save(update_fields=["accepted_at", "accepted_by"])

    def revoke(self) -> None:
        self.revoked_at = timezone.now()
        self.save(update_fields=["revoked_at"])
