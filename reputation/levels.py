"""From daily counts to levels (DESIGN.md, "Reputation levels"), with hysteresis.

Rates are over the last ``SENDMSG_REPUTATION_WINDOW_DAYS`` days of DailyStats and count
only past a minimum sample. A level goes down as soon as the rates are in a worse band;
it goes up one level only after the rates have stayed in a better band for a whole
window, then one more after another window. A pinned level is the operator's: the rates
are still shown, but only the operator moves it (``pin``/``unpin``, each recorded).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Q, Sum
from django.utils import timezone

from domains.models import Tenant
from reputation import notices
from reputation.models import DailyStats, Level, LevelChange, Standing

BAND_NAMES = {level.value: level.label.lower() for level in Level}


@dataclass(frozen=True)
class Rates:
    delivered: int
    hard_bounced: int
    complained: int

    @property
    def bounce_rate(self) -> float | None:
        """Hard bounces / (delivered + hard bounces), once the sample is big enough."""
        sample = self.delivered + self.hard_bounced
        if sample < settings.SENDMSG_REPUTATION_BOUNCE_SAMPLE:
            return None
        return self.hard_bounced / sample

    @property
    def complaint_rate(self) -> float | None:
        """Complaints / delivered, counted only from a large sample with a few complaints
        (at 100 delivered one complaint would be 1%)."""
        if (
            self.delivered < settings.SENDMSG_REPUTATION_COMPLAINT_SAMPLE
            or self.complained < settings.SENDMSG_REPUTATION_COMPLAINT_MIN
        ):
            return None
        return self.complained / self.delivered


def window_start(today: date) -> date:
    return today - timedelta(days=settings.SENDMSG_REPUTATION_WINDOW_DAYS - 1)


def rates_for(tenant_id: int, domain_id: int | None, today: date) -> Rates:
    rows = DailyStats.objects.filter(tenant_id=tenant_id, day__gte=window_start(today))
    if domain_id is not None:
        rows = rows.filter(domain_id=domain_id)
    sums = rows.aggregate(d=Sum("delivered"), h=Sum("hard_bounced"), c=Sum("complained"))
    return Rates(sums["d"] or 0, sums["h"] or 0, sums["c"] or 0)


def band(rates: Rates) -> tuple[int, str]:
    """The level the rates alone put a sender at, and why, in words a tenant can act on."""
    bounce, complaint = rates.bounce_rate, rates.complaint_rate
    limits = zip(
        settings.SENDMSG_LEVEL_BOUNCE_LIMITS, settings.SENDMSG_LEVEL_COMPLAINT_LIMITS, strict=True
    )
    level = next(
        (
            number
            for number, (bounce_limit, complaint_limit) in enumerate(limits, start=1)
            if (bounce or 0) * 100 < bounce_limit and (complaint or 0) * 100 < complaint_limit
        ),
        Level.SUSPENDED,
    )
    return level, _why(rates, level)


def _why(rates: Rates, level: int) -> str:
    days = settings.SENDMSG_REPUTATION_WINDOW_DAYS
    parts = []
    if rates.bounce_rate is None:
        parts.append(f"too few messages for a bounce rate ({rates.delivered + rates.hard_bounced})")
    else:
        parts.append(
            f"hard bounces {rates.bounce_rate:.2%} of {rates.delivered + rates.hard_bounced:,}"
        )
    if rates.complaint_rate is not None:
        parts.append(f"complaints {rates.complaint_rate:.3%} of {rates.delivered:,} delivered")
    return f"{'; '.join(parts)} in {days} days: {BAND_NAMES[level]}"


def next_level(
    current: int, better_since: datetime | None, target: int, now: datetime
) -> tuple[int, datetime | None]:
    """Hysteresis: down at once, up one level per whole window spent in a better band."""
    if target >= current:
        return target, None
    if better_since is None:
        return current, now
    if now - better_since >= timedelta(days=settings.SENDMSG_REPUTATION_WINDOW_DAYS):
        current -= 1
        return current, (now if target < current else None)
    return current, better_since


def evaluate(
    tenant_id: int, domain_id: int | None = None, *, now: datetime | None = None
) -> tuple[Standing, bool]:
    """Recompute one standing from its window's counts; record a change of level (and say
    whether there was one)."""
    now = now or timezone.now()
    rates = rates_for(tenant_id, domain_id, now.date())
    target, why = band(rates)
    with transaction.atomic():
        standing = _standing_for_update(tenant_id, domain_id)
        standing.delivered, standing.hard_bounced = rates.delivered, rates.hard_bounced
        standing.complained, standing.updated_at = rates.complained, now
        if standing.pinned:
            standing.save()
            return standing, False
        old = standing.level
        standing.level, standing.better_since = next_level(old, standing.better_since, target, now)
        if standing.level != old:
            standing.since = now
            standing.reason = _reason(why, old, standing.level, target)
            _record(
                tenant_id=tenant_id,
                domain_id=domain_id,
                old_level=old,
                new_level=standing.level,
                reason=standing.reason,
                created_at=now,
            )
        elif not standing.reason:
            standing.reason = why[:300]  # a new standing: why it is where it starts
        standing.save()
    if standing.level != old:
        _forget(tenant_id)
    return standing, standing.level != old


def _record(**fields) -> LevelChange:
    """Record a change of level and queue its webhooks, in the caller's transaction."""
    change = LevelChange.objects.create(**fields)
    notices.level_changed(change)
    return change


def _reason(why: str, old: int, new: int, target: int) -> str:
    if new > old:
        return why
    window = settings.SENDMSG_REPUTATION_WINDOW_DAYS
    return f"{window} days inside a better band, up one level ({why})"[:300]


def _standing_for_update(tenant_id: int, domain_id: int | None) -> Standing:
    rows = Standing.objects.select_for_update().filter(tenant_id=tenant_id)
    rows = rows.filter(domain_id=domain_id) if domain_id else rows.filter(domain__isnull=True)
    standing = rows.first()
    if standing is None:
        standing = Standing.objects.create(tenant_id=tenant_id, domain_id=domain_id)
    return standing


def evaluate_all(touched: set[tuple[int, int]], *, now: datetime | None = None) -> int:
    """Recompute the standings whose counts moved, and those time alone can move (below
    level 1, or waiting out a window); returns how many changed level."""
    now = now or timezone.now()
    pairs = set(touched) | {(tenant_id, None) for tenant_id, _ in touched}
    waiting = Standing.objects.filter(
        Q(level__gt=Level.EXCELLENT) | Q(better_since__isnull=False), pinned=False
    ).values_list("tenant_id", "domain_id")
    pairs |= set(waiting)
    ordered = sorted(pairs, key=lambda pair: (pair[0], pair[1] or 0))
    return sum(evaluate(tenant_id, domain_id, now=now)[1] for tenant_id, domain_id in ordered)


def pin(tenant: Tenant, level: int, *, reason: str, actor, domain=None) -> Standing:
    """An operator fixes a level (1 to 5) with a reason; recorded as a change."""
    if not reason.strip():
        raise ValueError("A pinned level needs a reason.")
    return _set_by_operator(
        tenant,
        domain,
        level=level,
        pin_reason=reason,
        reason=reason,
        change=f"pinned by an operator: {reason}",
        actor=actor,
    )


def unpin(tenant: Tenant, *, reason: str, actor, domain=None) -> Standing:
    """Hand the level back to the rates: it becomes their band at once (the operator
    chose to end the pin); recorded as a change."""
    today = timezone.now().date()
    target, why = band(rates_for(tenant.pk, domain.pk if domain else None, today))
    return _set_by_operator(
        tenant,
        domain,
        level=target,
        pin_reason="",
        reason=why,
        change=f"unpinned by an operator: {reason}; {why}",
        actor=actor,
    )


def _set_by_operator(
    tenant: Tenant, domain, *, level: int, pin_reason: str, reason: str, change: str, actor
) -> Standing:
    """Set a standing's level for an operator: pinned when ``pin_reason`` is given, else
    handed back to the rates; the change recorded with the operator's name."""
    now = timezone.now()
    with transaction.atomic():
        standing = _standing_for_update(tenant.pk, domain.pk if domain else None)
        old = standing.level
        standing.level, standing.pinned = level, bool(pin_reason)
        standing.pin_reason = pin_reason[:300]
        standing.reason, standing.better_since = reason[:300], None
        standing.since = standing.updated_at = now
        standing.save()
        _record(
            tenant=tenant,
            domain=domain,
            old_level=old,
            new_level=level,
            reason=change[:300],
            actor=actor,
            pinned=bool(pin_reason),
            created_at=now,
        )
    _forget(tenant.pk)
    return standing


def _forget(tenant_id: int) -> None:
    from reputation.gate import forget_tenant

    forget_tenant(tenant_id)
