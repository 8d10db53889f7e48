"""The one question delivery asks reputation: may this sender send now, and to whom?

Both doors (SMTP and API) ask it through delivery.accept. Inputs today: an operator's
suspend flag, the tenant's plan rate (messages per hour) and the suppression list. The
reputation levels and warm-up will narrow the same answer later.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from functools import cache

from django.conf import settings
from django.utils import timezone

from domains.models import Tenant
from reputation.models import SendCounter, Suppression
from sendmsg import sql

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
    state = sql.fetch_one(
        _tenant_state(), [sql.db_value(SendCounter, "hour", current_hour()), tenant_id]
    )
    if state is None:
        raise Tenant.DoesNotExist(f"no tenant {tenant_id}")
    suspended, plan_rate, sent = state
    if suspended:
        return Decision(
            False, "account_suspended", "Sending is suspended for this account; contact support."
        )
    rate = plan_rate or settings.SENDMSG_DEFAULT_PLAN_RATE
    if sent is not None and sent >= rate:
        hour = current_hour()
        wait = max(1, int((hour + WINDOW - timezone.now()).total_seconds()) + 1)
        return Decision(
            False,
            "rate_limited",
            f"Hourly sending limit of {rate} messages reached; retry in {wait} s",
            retry_after=wait,
        )
    lowered = sorted({address.lower() for address in recipients})
    suppressed = (
        [row[0] for row in sql.fetch_all(_suppressed(len(lowered)), [tenant_id, *lowered])]
        if lowered
        else []
    )
    return Decision(True, suppressed=frozenset(suppressed))


@cache
def _tenant_state() -> str:
    """The tenant's flags and this hour's count, in one statement (sendmsg/sql.py: why)."""
    tenant, counter = sql.table(Tenant), sql.table(SendCounter)
    return (
        f"SELECT t.{sql.column(Tenant, 'suspended')}, t.{sql.column(Tenant, 'plan_rate')}, "
        f"c.{sql.column(SendCounter, 'count')} FROM {tenant} t LEFT JOIN {counter} c "
        f"ON c.{sql.column(SendCounter, 'tenant')} = t.{sql.column(Tenant, 'id')} "
        f"AND c.{sql.column(SendCounter, 'hour')} = %s "
        f"WHERE t.{sql.column(Tenant, 'id')} = %s"
    )


@cache
def _suppressed(count: int) -> str:
    return (
        f"SELECT {sql.column(Suppression, 'address')} FROM {sql.table(Suppression)} "
        f"WHERE {sql.column(Suppression, 'tenant')} = %s "
        f"AND {sql.column(Suppression, 'address')} IN ({', '.join(['%s'] * count)})"
    )


def current_hour():
    return timezone.now().replace(minute=0, second=0, microsecond=0)


def count_sent(*, tenant_id: int) -> None:
    """Count one accepted message; call inside the accept transaction."""
    sql.execute(_count_one(), [tenant_id, sql.db_value(SendCounter, "hour", current_hour())])


@cache
def _count_one() -> str:
    """One statement that creates this hour's counter or adds one to it, race-free."""
    counter, count = sql.table(SendCounter), sql.column(SendCounter, "count")
    keys = f"{sql.column(SendCounter, 'tenant')}, {sql.column(SendCounter, 'hour')}"
    return (
        f"INSERT INTO {counter} ({keys}, {count}) VALUES (%s, %s, 1) "
        f"ON CONFLICT ({keys}) DO UPDATE SET {count} = {counter}.{count} + 1"
    )
