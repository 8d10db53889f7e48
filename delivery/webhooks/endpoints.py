"""A tenant's webhook endpoints: register, change, rotate the secret, test. The dashboard
and the API call these; each secret is returned once, to be shown once."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from delivery.models import WEBHOOK_EVENT_TYPES, WebhookAttempt, WebhookEndpoint
from delivery.webhooks import sender, signing
from delivery.webhooks.outbox import latest_event_id
from delivery.webhooks.targets import TargetError, check_url
from domains.models import Tenant

DEFAULT_KEEP_PREVIOUS_HOURS = 24
MAX_KEEP_PREVIOUS_HOURS = 7 * 24


class WebhookError(ValueError):
    """Input a tenant can fix; ``field`` names the input at fault."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


def clean_event_types(event_types: Iterable[str]) -> list[str]:
    """The chosen types, known and in the vocabulary's order; at least one."""
    chosen = set(event_types)
    unknown = sorted(chosen - set(WEBHOOK_EVENT_TYPES))
    if unknown:
        raise WebhookError(f"Unknown event type: {', '.join(unknown)}.", field="event_types")
    if not chosen:
        raise WebhookError("Choose at least one event type.", field="event_types")
    return [t for t in WEBHOOK_EVENT_TYPES if t in chosen]


def clean_url(url: str) -> str:
    url = url.strip()
    try:
        check_url(url)
    except TargetError as exc:
        raise WebhookError(str(exc), field="url") from None
    return url


def create_endpoint(
    *,
    tenant: Tenant,
    url: str,
    event_types: Iterable[str],
    description: str = "",
    active: bool = True,
) -> tuple[WebhookEndpoint, str]:
    """A new endpoint, sent the events recorded from now on; returns it with its signing
    secret, which is stored only encrypted and shown this once."""
    url = clean_url(url)
    types = clean_event_types(event_types)
    limit = settings.SENDMSG_WEBHOOK_MAX_ENDPOINTS
    if WebhookEndpoint.objects.filter(tenant=tenant).count() >= limit:
        raise WebhookError(f"A tenant has at most {limit} webhook endpoints.")
    secret = signing.new_secret()
    endpoint = WebhookEndpoint.objects.create(
        tenant=tenant,
        url=url,
        event_types=types,
        description=description,
        active=active,
        secret_encrypted=signing.encrypt_secret(secret),
        first_event_id=latest_event_id(),
    )
    return endpoint, secret


def update_endpoint(
    endpoint: WebhookEndpoint,
    *,
    url: str | None = None,
    event_types: Iterable[str] | None = None,
    description: str | None = None,
    active: bool | None = None,
) -> WebhookEndpoint:
    """Change what is given. A new URL is checked like a first one. An endpoint enabled
    again gets the events recorded from then on, not those of its pause."""
    fields = {"updated_at": timezone.now()}
    if url is not None and url.strip() != endpoint.url:
        fields["url"] = clean_url(url)
    if event_types is not None:
        fields["event_types"] = clean_event_types(event_types)
    if description is not None:
        fields["description"] = description
    if active is not None and active != endpoint.active:
        fields["active"] = active
        if active:
            fields["first_event_id"] = latest_event_id()
    WebhookEndpoint.objects.filter(pk=endpoint.pk).update(**fields)
    for name, value in fields.items():
        setattr(endpoint, name, value)
    return endpoint


def rotate_secret(
    endpoint: WebhookEndpoint, *, keep_previous_hours: int = DEFAULT_KEEP_PREVIOUS_HOURS
) -> str:
    """A new signing secret, returned once. The old one goes on signing as well (a second
    ``v1``) for ``keep_previous_hours`` (0: stops now), so receivers can switch over."""
    if not 0 <= keep_previous_hours <= MAX_KEEP_PREVIOUS_HOURS:
        raise WebhookError(
            f"Keep the previous secret for 0 to {MAX_KEEP_PREVIOUS_HOURS} hours.",
            field="keep_previous_hours",
        )
    now = timezone.now()
    secret = signing.new_secret()
    with transaction.atomic():
        current = WebhookEndpoint.objects.select_for_update().get(pk=endpoint.pk)
        fields = {
            "secret_encrypted": signing.encrypt_secret(secret),
            "previous_secret_encrypted": (
                bytes(current.secret_encrypted) if keep_previous_hours else b""
            ),
            "previous_secret_until": (
                now + timedelta(hours=keep_previous_hours) if keep_previous_hours else None
            ),
            "updated_at": now,
        }
        WebhookEndpoint.objects.filter(pk=endpoint.pk).update(**fields)
    for name, value in fields.items():
        setattr(endpoint, name, value)
    return secret


def send_test(endpoint: WebhookEndpoint) -> WebhookAttempt:
    """POST a test ping (type "test") to the endpoint now; returns the logged attempt."""
    return sender.send_test(endpoint)


def recent_attempts(endpoint: WebhookEndpoint | None = None, *, tenant: Tenant | None = None):
    """Attempts, newest first, of one endpoint or of all of a tenant's."""
    attempts = WebhookAttempt.objects.select_related("delivery", "delivery__event", "endpoint")
    if endpoint is not None:
        return attempts.filter(endpoint=endpoint)
    return attempts.filter(endpoint__tenant=tenant)
