"""The one question delivery asks reputation: may this sender send now, and to whom?

Both doors (SMTP and API) ask it through delivery.accept. Inputs today: an operator's
suspend flag, the tenant's plan rate (messages per clock hour) and the suppression list.
The reputation levels and warm-up will narrow the same answer later.

In steady state the answer costs no database statement for the throttle:

- the tenant's flags come from a ReadCache (sendmsg/read_cache.py), re-read at most
  every ``SENDMSG_STATE_CACHE_SECONDS``;
- the hourly rate is shared by every process through one counter row per tenant and
  hour (SendCounter), from which each process leases permits in blocks
  (``SENDMSG_QUOTA_LEASE``, at most a hundredth of the rate) and spends them in memory.
  Leases are written in the accept's own transaction and credited when it commits, so
  together the processes never pass the rate. The counter holds what was handed out: a
  process that stops with unspent permits leaves them counted (stricter, never looser).

Only the suppression list is read per message: its answer depends on the recipients.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache, partial

from django.conf import settings
from django.db import transaction
from django.db.models.signals import post_save
from django.utils import timezone

from domains.models import Tenant
from reputation.models import SendCounter, Suppression
from sendmsg import read_cache, sql

WINDOW = timedelta(hours=1)


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str = ""  # "account_suspended" or "rate_limited" when not allowed
    message: str = ""
    retry_after: int | None = None
    suppressed: frozenset[str] = frozenset()  # lower-cased addresses not to send to


ALLOWED = Decision(True)


@dataclass(frozen=True)
class TenantState:
    suspended: bool
    rate: int  # messages per clock hour, the platform default applied


_states: read_cache.ReadCache[int, TenantState] = read_cache.ReadCache("tenant state")


def tenant_state(tenant_id: int) -> TenantState:
    def load() -> TenantState | None:
        row = sql.fetch_one(_tenant_sql(), [tenant_id])
        if row is None:
            return None
        return TenantState(bool(row[0]), row[1] or settings.SENDMSG_DEFAULT_PLAN_RATE)

    state = _states.get(tenant_id, load)
    if state is None:
        raise Tenant.DoesNotExist(f"no tenant {tenant_id}")
    return state


def _forget_tenant(sender, instance: Tenant, **kwargs) -> None:
    _states.forget(instance.pk)


post_save.connect(_forget_tenant, sender=Tenant, dispatch_uid="gate-forget-tenant")


def may_send(*, tenant_id: int, recipients: list[str] = ()) -> Decision:
    """Whether the tenant may send a message now, and which recipients are suppressed.

    This only looks: the message's permit is taken by ``take_permit`` in the accept
    transaction. Without recipients (SMTP's MAIL command) it answers for the sender only.
    """
    state = tenant_state(tenant_id)
    if state.suspended:
        return _suspended()
    if not quotas.may_have(tenant_id, state.rate):
        return _rate_limited(state.rate)
    lowered = sorted({address.lower() for address in recipients})
    if not lowered:
        return ALLOWED
    suppressed = sql.fetch_all(_suppressed(len(lowered)), [tenant_id, *lowered])
    return Decision(True, suppressed=frozenset(row[0] for row in suppressed))


def take_permit(*, tenant_id: int) -> Decision:
    """Spend one message of the tenant's hourly rate; call inside the accept transaction
    (a refusal must roll it back)."""
    state = tenant_state(tenant_id)
    if state.suspended:
        return _suspended()
    if not quotas.take(tenant_id, state.rate):
        return _rate_limited(state.rate)
    return ALLOWED


def _suspended() -> Decision:
    return Decision(
        False, "account_suspended", "Sending is suspended for this account; contact support."
    )


def _rate_limited(rate: int) -> Decision:
    wait = max(1, int((current_hour() + WINDOW - timezone.now()).total_seconds()) + 1)
    return Decision(
        False,
        "rate_limited",
        f"Hourly sending limit of {rate} messages reached; retry in {wait} s",
        retry_after=wait,
    )


def current_hour() -> datetime:
    return timezone.now().replace(minute=0, second=0, microsecond=0)


def lease_size(rate: int) -> int:
    """Permits a process takes at once: one when nothing may be kept (tests), else up to
    a hundredth of the rate, so one process never holds much of a small plan."""
    if read_cache.ttl() <= 0:
        return 1
    return max(1, min(settings.SENDMSG_QUOTA_LEASE, rate // 100))


@dataclass
class _Quota:
    hour: datetime
    rate: int
    tokens: int = 0  # permits leased and not spent yet
    spent: bool = False  # the hour's counter reached the rate: no more leases


class Quotas:
    """This process's permits, per tenant, for the current hour and rate (a new hour or
    a changed rate starts afresh)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._quotas: dict[int, _Quota] = {}

    def _current(self, tenant_id: int, rate: int, hour: datetime) -> _Quota:
        quota = self._quotas.get(tenant_id)
        if quota is None or quota.hour != hour or quota.rate != rate:
            quota = self._quotas[tenant_id] = _Quota(hour, rate)
        return quota

    def may_have(self, tenant_id: int, rate: int) -> bool:
        """Whether a permit may be had: from memory when this process holds some or knows
        the hour is spent, else from the counter (one statement, once per lease)."""
        hour = current_hour()
        with self._lock:
            quota = self._current(tenant_id, rate, hour)
            if quota.tokens:
                return True
            if quota.spent:
                return False
        row = sql.fetch_one(_counter_sql(), [tenant_id, sql.db_value(SendCounter, "hour", hour)])
        return row is None or row[0] < rate

    def take(self, tenant_id: int, rate: int) -> bool:
        hour = current_hour()
        with self._lock:
            quota = self._current(tenant_id, rate, hour)
            if quota.tokens:
                quota.tokens -= 1
                return True
            if quota.spent:
                return False
        size = lease_size(rate)
        handed_out = sql.fetch_one(
            _lease_sql(), [tenant_id, sql.db_value(SendCounter, "hour", hour), size]
        )[0]
        granted = min(size, max(0, rate - (handed_out - size)))
        if granted == 0:
            with self._lock:
                quota.spent = True  # true whether or not this transaction commits
            return False
        if granted > 1 or granted < size:
            credit = partial(self._credit, tenant_id, quota, granted - 1, granted < size)
            transaction.on_commit(credit)
        return True

    def _credit(self, tenant_id: int, quota: _Quota, tokens: int, spent: bool) -> None:
        with self._lock:
            if self._quotas.get(tenant_id) is quota:
                quota.tokens += tokens
                quota.spent = quota.spent or spent

    def clear(self) -> None:
        with self._lock:
            self._quotas.clear()


quotas = Quotas()


@cache
def _tenant_sql() -> str:
    return (
        f"SELECT {sql.column(Tenant, 'suspended')}, {sql.column(Tenant, 'plan_rate')} "
        f"FROM {sql.table(Tenant)} WHERE {sql.column(Tenant, 'id')} = %s"
    )


@cache
def _counter_sql() -> str:
    return (
        f"SELECT {sql.column(SendCounter, 'count')} FROM {sql.table(SendCounter)} "
        f"WHERE {sql.column(SendCounter, 'tenant')} = %s "
        f"AND {sql.column(SendCounter, 'hour')} = %s"
    )


@cache
def _lease_sql() -> str:
    """One statement that creates this hour's counter or adds a lease to it, race-free,
    and answers how many permits are handed out now, this lease included."""
    counter, count = sql.table(SendCounter), sql.column(SendCounter, "count")
    keys = f"{sql.column(SendCounter, 'tenant')}, {sql.column(SendCounter, 'hour')}"
    return (
        f"INSERT INTO {counter} ({keys}, {count}) VALUES (%s, %s, %s) "
        f"ON CONFLICT ({keys}) DO UPDATE SET {count} = {counter}.{count} + excluded.{count} "
        f"RETURNING {count}"
    )


@cache
def _suppressed(count: int) -> str:
    return (
        f"SELECT {sql.column(Suppression, 'address')} FROM {sql.table(Suppression)} "
        f"WHERE {sql.column(Suppression, 'tenant')} = %s "
        f"AND {sql.column(Suppression, 'address')} IN ({', '.join(['%s'] * count)})"
    )
