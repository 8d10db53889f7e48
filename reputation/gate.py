"""The one question delivery asks reputation: may this sender send now, and to whom?

Both doors (SMTP and API) ask it through delivery.accept. Inputs today: an operator's
suspend flag, the tenant's plan rate (messages per hour) and the suppression list. The
reputation levels and warm-up will narrow the same answer later.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from domains.models import Tenant
from reputation.models import SendCounter, Suppression

WINDOW = timedelta(hours=1)


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str = ""  # "account_suspended" or "rate_limited" when not allowed
    message: str = ""
    retry_after: int | None = None
    suppressed: frozenset[str] = frozenset()  # lower-cased addresses not to send to


def may_send(*, tenant_id: int, recipients: list[str] = ()) -> Decision:
    """Whether the tenant may send a message now, and which recipients are suppressed."""
    tenant = Tenant.objects.only("suspended", "plan_rate").get(pk=tenant_id)
    if tenant.suspended:
        return Decision(
            False, "account_suspended", "Sending is suspended for this account; contact support."
        )
    rate = tenant.plan_rate or settings.SENDMSG_DEFAULT_PLAN_RATE
    hour = current_hour()
    sent = (
        SendCounter.objects.filter(tenant_id=tenant_id, hour=hour)
        .values_list("count", flat=True)
        .first()
    )
    if sent is not None and sent >= rate:
        wait = max(1, int((hour + WINDOW - timezone.now()).total_seconds()) + 1)
        return Decision(
            False,
            "rate_limited",
            f"Hourly sending limit of {rate} messages reached; retry in {wait} s",
            retry_after=wait,
        )
    lowered = {address.lower() for address in recipients}
    suppressed = (
        Suppression.objects.filter(tenant_id=tenant_id, address__in=lowered).values_list(
            "address", flat=True
        )
        if lowered
        else []
    )
    return Decision(True, suppressed=frozenset(suppressed))


def current_hour():
    return timezone.now().replace(minute=0, second=0, microsecond=0)


def count_sent(*, tenant_id: int) -> None:
    """Count one accepted message; call inside the accept transaction."""
    hour = current_hour()
    counters = SendCounter.objects.filter(tenant_id=tenant_id, hour=hour)
    if counters.update(count=F("count") + 1):
        return
    try:
        with transaction.atomic():
            SendCounter.objects.create(tenant_id=tenant_id, hour=hour, count=1)
    except IntegrityError:  # another process created this hour's row first
        counters.update(count=F("count") + 1)
