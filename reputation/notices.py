"""A change of reputation level, sent to the tenant's webhooks (``reputation.level_changed``).

Not a message event: each delivery is made with the change, in its transaction, and
carries its own body (WebhookDelivery.body); the dispatcher sends, signs and retries it
like any other (delivery/webhooks/).
"""

from __future__ import annotations

from django.utils import timezone
from rest_framework import serializers

from delivery.models import LEVEL_CHANGED, WebhookDelivery, WebhookEndpoint
from reputation.models import Level, LevelChange


def body(change: LevelChange) -> dict:
    return {
        "id": f"level-change-{change.pk}",
        "type": LEVEL_CHANGED,
        "created_at": serializers.DateTimeField().to_representation(change.created_at),
        "domain": change.domain.name if change.domain_id else None,
        "old_level": change.old_level,
        "new_level": change.new_level,
        "level": Level(change.new_level).label.lower(),
        "reason": change.reason,
        "by": "operator" if change.actor_id else "rates",
        "pinned": change.pinned,
    }


def level_changed(change: LevelChange) -> int:
    """Queue the change to each active endpoint of its tenant that chose the type; how
    many. Call in the transaction that records the change."""
    endpoints = [
        endpoint
        for endpoint in WebhookEndpoint.objects.filter(tenant_id=change.tenant_id, active=True)
        if LEVEL_CHANGED in endpoint.event_types
    ]
    now = timezone.now()
    notice = body(change)
    WebhookDelivery.objects.bulk_create(
        WebhookDelivery(
            endpoint=endpoint,
            kind=LEVEL_CHANGED,
            body=notice,
            next_attempt_at=now,
            created_at=now,
            updated_at=now,
        )
        for endpoint in endpoints
    )
    return len(endpoints)
