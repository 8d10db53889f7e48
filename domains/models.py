from __future__ import annotations

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

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


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
    DISABLED = "disabled", "Disabled"


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

    def active_dkim_key(self) -> DkimKey | None:
        return self.dkim_keys.filter(active=True).order_by("-created_at").first()

    def record_check(self, *, passed: bool, score: int) -> None:
        """Store a check's outcome; a disabled domain stays disabled."""
        now = timezone.now()
        self.checked_at = now
        self.health_score = score
        if self.status != DomainStatus.DISABLED:
            if passed and self.status != DomainStatus.VERIFIED:
                self.verified_at = now
            self.status = DomainStatus.VERIFIED if passed else DomainStatus.PENDING
        self.save(update_fields=["checked_at", "health_score", "status", "verified_at"])


class KeyAlgorithm(models.TextChoices):
    RSA = "rsa", "RSA"


class DkimKey(models.Model):
    """A DKIM key pair; the private half is stored only encrypted (domains.crypto)."""

    domain = models.ForeignKey(Domain, on_delete=models.CASCADE, related_name="dkim_keys")
    selector = models.CharField(max_length=63)
    algorithm = models.CharField(max_length=8, choices=KeyAlgorithm.choices)
    bits = models.PositiveSmallIntegerField(null=True, blank=True)
    public_key = models.TextField(help_text="Base64 of the DER public key, as in p= of the record.")
    private_key_encrypted = models.BinaryField()
    active = models.BooleanField(default=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["domain", "selector"], name="unique_selector")
        ]

    def __str__(self) -> str:
        return f"{self.selector}._domainkey.{self.domain.name}"

    @property
    def record_name(self) -> str:
        return f"{self.selector}._domainkey.{self.domain.name}"

    @property
    def record_value(self) -> str:
        return f"v=DKIM1; k={self.algorithm}; p={self.public_key}"

    def private_key_pem(self) -> bytes:
        return crypto.decrypt(self.private_key_encrypted)
