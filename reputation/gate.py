"""The one question delivery asks reputation: may this sender send now, and to whom?

Both doors (SMTP and API) ask it through delivery.accept. Inputs today: an operator's
suspend flag, the tenant's plan rate (messages per hour) and the suppression list. The
reputation levels and warm-up will narrow the same answer later.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from delivery.models import Message
from domains.models import Tenant
from reputation.models import Suppression

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
    since = timezone.now() - WINDOW
    recent = Message.objects.filter(tenant_id=tenant_id, created_at__gte=since)
    # Counting stops at the rate: the query reads at most `rate` index entries.
    if recent.order_by("-created_at")[rate - 1 : rate].exists():
        oldest = recent.order_by("-created_at").values_list("created_at", flat=True)[rate - 1]
        wait = max(1, int((oldest + WINDOW - timezone.now()).total_seconds()) + 1)
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
