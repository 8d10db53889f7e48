"""The one question delivery asks reputation: may this sender send now, and to whom?

Both doors (SMTP and API) ask it through delivery.accept. Inputs: an operator's suspend
flag, the tenant's plan rate (messages per clock hour), the reputation levels of the
tenant and of the sending domain (reputation/levels.py; a message gets the stricter:
level 3 halves the rate, level 4 cuts it to a tenth, level 5 refuses) and the
suppression list.

A new domain also follows a warm-up schedule: daily caps that grow
(``SENDMSG_WARMUP_DAILY_CAPS``, from the day it was first verified).

In steady state the answer costs no database statement for the throttle: the tenant's
flags and level come from a ReadCache (sendmsg/read_cache.py), the domain's with the
verified domains (delivery/accept.py), and the hourly rate and the warm-up caps are
permits leased in blocks and spent in memory (reputation/quotas.py).

Only the suppression list is read per message: its answer depends on the recipients.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from functools import cache

from django.conf import settings
from django.db.models.signals import post_save
from django.utils import timezone

from delivery.models import Event, EventType, Held
from domains.models import Domain, Tenant
from reputation.models import Level, SendCounter, Standing, Suppression, WarmupCounter
from reputation.quotas import Quotas
from reputation.suppressions import listed_as
from sendmsg import read_cache, sql

WINDOW = timedelta(hours=1)
SUPPRESSION_CHUNK = 500  # addresses per lookup: well under SQLite's 32,766 parameters


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str = ""  # account_suspended, reputation_suspended or rate_limited: refused
    message: str = ""
    retry_after: int | None = None
    suppressed: frozenset[str] = frozenset()  # not to send to, as listed (listed_as)


ALLOWED = Decision(True)


@dataclass(frozen=True)
class TenantState:
    suspended: bool
    plan_rate: int  # messages per clock hour, the platform default applied
    level: int  # the tenant's reputation level, 1 to 5


def rate_at(plan_rate: int, level: int) -> int:
    """The hourly rate at a reputation level (1 to 4; level 5 sends nothing)."""
    return max(1, int(plan_rate * settings.SENDMSG_LEVEL_RATE_FACTORS[level - 1]))


_states: read_cache.ReadCache[int, TenantState] = read_cache.ReadCache("tenant state")


def tenant_state(tenant_id: int) -> TenantState:
    def load() -> TenantState | None:
        row = sql.fetch_one(_tenant_sql(), [tenant_id])
        if row is None:
            return None
        return TenantState(
            bool(row[0]), row[1] or settings.SENDMSG_DEFAULT_PLAN_RATE, row[2] or Level.EXCELLENT
        )

    state = _states.get(tenant_id, load)
    if state is None:
        raise Tenant.DoesNotExist(f"no tenant {tenant_id}")
    return state


def forget_tenant(tenant_id: int) -> None:
    """This process reads the tenant's flags and level again at its next message."""
    _states.forget(tenant_id)


def _forget_tenant(sender, instance: Tenant, **kwargs) -> None:
    forget_tenant(instance.pk)


post_save.connect(_forget_tenant, sender=Tenant, dispatch_uid="gate-forget-tenant")


def may_send(
    *,
    tenant_id: int,
    recipients: list[str] = (),
    domain: Domain | None = None,
    suppressed: frozenset[str] | None = None,
) -> Decision:
    """Whether the tenant may send a message now (from ``domain``, a verified domain
    loaded with its ``reputation_level``), and which recipients are suppressed.

    This only looks: the message's permits are taken by ``take_permit`` in the accept
    transaction. Without recipients (SMTP's MAIL command) it answers for the sender only.
    ``suppressed``: what ``suppressed_among`` answered for these recipients (and maybe
    more), when the caller looked them up already.
    """
    decision = _limits(tenant_id, domain, take=False)
    if not decision.allowed or not recipients:
        return decision
    if suppressed is None:
        suppressed = suppressed_among(tenant_id, recipients)
    return Decision(True, suppressed=suppressed)


def suppressed_among(tenant_id: int, addresses: Iterable[str]) -> frozenset[str]:
    """Those of ``addresses`` the tenant's suppression list holds, as ``listed_as`` writes
    them: one query for up to SUPPRESSION_CHUNK addresses."""
    listed = sorted({listed_as(address) for address in addresses})
    found: set[str] = set()
    for start in range(0, len(listed), SUPPRESSION_CHUNK):
        chunk = listed[start : start + SUPPRESSION_CHUNK]
        found.update(row[0] for row in sql.fetch_all(_suppressed(len(chunk)), [tenant_id, *chunk]))
    return frozenset(found)


def take_permit(*, tenant_id: int, domain: Domain | None = None) -> Decision:
    """Spend one message of the tenant's hourly rate (and of the domain's daily warm-up
    cap); call inside the accept transaction, whose commit credits a lease. A message
    the rate refuses may leave its warm-up permit spent: stricter, never looser."""
    return _limits(tenant_id, domain, take=True)


def _limits(tenant_id: int, domain: Domain | None, *, take: bool) -> Decision:
    state = tenant_state(tenant_id)
    level = max(state.level, getattr(domain, "reputation_level", Level.EXCELLENT))
    if state.suspended or level >= Level.SUSPENDED:
        return _suspended(state.suspended)
    cap = warm_up_cap(domain)
    if cap is not None:
        allowed = warm_up.take(domain.pk, cap) if take else warm_up.may_have(domain.pk, cap)
        if not allowed:
            return _warming_up(domain, cap)
    rate = rate_at(state.plan_rate, level)
    allowed = hourly.take(tenant_id, rate) if take else hourly.may_have(tenant_id, rate)
    return ALLOWED if allowed else _rate_limited(rate, level)


def warm_up_cap(domain: Domain | None) -> int | None:
    """Messages the domain may send today while it warms up (a day's cap from
    ``SENDMSG_WARMUP_DAILY_CAPS``, counted from the day it was first verified), or None
    once the schedule is over."""
    caps = settings.SENDMSG_WARMUP_DAILY_CAPS
    if domain is None or not caps or domain.verified_at is None:
        return None
    day = (today() - domain.verified_at.date()).days
    return caps[day] if 0 <= day < len(caps) else None


def _warming_up(domain: Domain, cap: int) -> Decision:
    day = (today() - domain.verified_at.date()).days + 1
    tomorrow = timezone.now().replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)
    wait = max(1, int((tomorrow - timezone.now()).total_seconds()) + 1)
    days = len(settings.SENDMSG_WARMUP_DAILY_CAPS)
    return Decision(
        False,
        "rate_limited",
        f"{domain.name} is warming up (day {day} of {days}): today's limit of {cap} "
        f"messages is reached; retry in {wait} s",
        retry_after=wait,
    )


def _suspended(by_operator: bool) -> Decision:
    if by_operator:
        return Decision(
            False, "account_suspended", "Sending is suspended for this account; contact support."
        )
    return Decision(
        False,
        "reputation_suspended",
        "Sending is suspended at reputation level 5 (too many bounces or complaints); "
        "see Reputation in the dashboard for the rates and what to do",
    )


def _rate_limited(rate: int, level: int) -> Decision:
    wait = max(1, int((current_hour() + WINDOW - timezone.now()).total_seconds()) + 1)
    cut = {
        3: " (reputation level 3: half the plan rate)",
        4: " (reputation level 4: a tenth of the plan rate)",
    }
    return Decision(
        False,
        "rate_limited",
        f"Hourly sending limit of {rate} messages reached{cut.get(level, '')}; retry in {wait} s",
        retry_after=wait,
    )


def current_hour() -> datetime:
    return timezone.now().replace(minute=0, second=0, microsecond=0)


def today() -> date:
    return timezone.now().date()


hourly = Quotas(SendCounter, "tenant", "hour", current_hour)
"""Each tenant's messages per clock hour (its plan rate at its level)."""
warm_up = Quotas(WarmupCounter, "domain", "day", today)
"""Each new sending domain's messages per day (UTC) while it warms up."""


@cache
def _tenant_sql() -> str:
    """The tenant's flags and its own level (its domains' are read with them,
    delivery/accept.py)."""
    column = sql.column
    return (
        f"SELECT t.{column(Tenant, 'suspended')}, t.{column(Tenant, 'plan_rate')}, "
        f"s.{column(Standing, 'level')} FROM {sql.table(Tenant)} t "
        f"LEFT JOIN {sql.table(Standing)} s ON s.{column(Standing, 'tenant')} = "
        f"t.{column(Tenant, 'id')} AND s.{column(Standing, 'domain')} IS NULL "
        f"WHERE t.{column(Tenant, 'id')} = %s"
    )


@cache
def _suppressed(count: int) -> str:
    return (
        f"SELECT {sql.column(Suppression, 'address')} FROM {sql.table(Suppression)} "
        f"WHERE {sql.column(Suppression, 'tenant')} = %s "
        f"AND {sql.column(Suppression, 'address')} IN ({', '.join(['%s'] * count)})"
    )


def held_senders(now: datetime | None = None) -> Held:
    """Whose queued mail the relay leaves waiting now (DESIGN.md): tenants suspended by an
    operator, tenants and sending domains at level 5 (held until lifted), and those at
    level 4 once they have had this hour's share: the relay sends a restricted sender's
    queued mail at most at its restricted rate (attempts in the last hour, counted from
    the events; a task already running may pass it by what it claimed)."""
    now = now or timezone.now()
    tenants = set(Tenant.objects.filter(suspended=True).values_list("pk", flat=True))
    domains: set[int] = set()
    low = Standing.objects.filter(level__gte=Level.RESTRICTED)
    for tenant_id, domain_id, level in low.values_list("tenant_id", "domain_id", "level"):
        if level == Level.RESTRICTED and not _had_share(tenant_id, domain_id, now):
            continue
        if domain_id:
            domains.add(domain_id)
        else:
            tenants.add(tenant_id)
    return Held(tuple(sorted(tenants)), tuple(sorted(domains)))


def _had_share(tenant_id: int, domain_id: int | None, now: datetime) -> bool:
    rate = rate_at(tenant_state(tenant_id).plan_rate, Level.RESTRICTED)
    attempts = Event.objects.filter(
        tenant_id=tenant_id, type__in=ATTEMPTS, created_at__gt=now - WINDOW
    )
    if domain_id:
        attempts = attempts.filter(message__domain_id=domain_id)
    return attempts.count() >= rate


ATTEMPTS = (EventType.DELIVERED, EventType.BOUNCED, EventType.DEFERRED, EventType.EXPIRED)
"""Events that record a delivery attempt's outcome."""
