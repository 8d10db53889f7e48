"""Everything the tenant's Reputation page shows, read in a fixed number of queries.

The page must cost the same for a tenant with one domain and a quiet month as for one
with many domains and heavy traffic, so nothing is read per day or per domain: the
window's counts come grouped by domain in one query, the chart's grouped by day in
another, and standings, level changes and events each in one. The rates are computed
from DailyStats exactly as reputation/levels.py computes them (same window, same
samples), so the page agrees with the level the next recompute will set.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta

from django.conf import settings
from django.core.exceptions import FieldDoesNotExist
from django.db.models import Q, Sum
from django.utils import timezone

from delivery.models import Event, EventType
from domains.models import Domain, Tenant
from reputation import advice
from reputation.bounce_patterns import BounceClass, BounceReason
from reputation.chart import Chart, Day, daily_chart, summed_days
from reputation.gate import rate_at, warm_up_cap
from reputation.levels import Rates, window_start
from reputation.models import DailyStats, Level, LevelChange, Standing, Suppression

CHART_DAYS = 30
RECENT = 20  # bounce and complaint events, and level changes, listed


def _has_field(model: type, name: str) -> bool:
    try:
        model._meta.get_field(name)
    except FieldDoesNotExist:
        return False
    return True


# Bounce classification is shown when the Event model records it.
CLASS_FIELDS = [name for name in ("bounce_class", "reason") if _has_field(Event, name)]
CLASS_LABELS = {**dict(BounceClass.choices), **dict(BounceReason.choices)}


# -- rates against thresholds --------------------------------------------------------------


@dataclass(frozen=True)
class RateView:
    """One rate as a tenant reads it: the value (or why there is none yet), what it is
    made of, and the limits of the current level and of the next better one."""

    name: str
    value: float | None  # a fraction; None below the minimum sample
    text: str
    detail: str
    stay_limit: float | None  # percent; None at level 5
    up_limit: float | None  # percent for the level above; None at level 1

    @property
    def over_stay(self) -> bool:
        """Above the current level's limit: the next recompute moves the level down."""
        return (
            self.value is not None
            and self.stay_limit is not None
            and self.value * 100 >= self.stay_limit
        )

    @property
    def stay_text(self) -> str:
        return "" if self.stay_limit is None else f"under {advice.percent(self.stay_limit)}"

    @property
    def up_text(self) -> str:
        return "" if self.up_limit is None else f"under {advice.percent(self.up_limit)}"


def _limits(limits: list[float], level: int) -> tuple[float | None, float | None]:
    stay = limits[level - 1] if level <= len(limits) else None
    up = limits[level - 2] if level >= 2 else None
    return stay, up


def bounce_view(rates: Rates, level: int) -> RateView:
    sample = rates.delivered + rates.hard_bounced
    needed = settings.SENDMSG_REPUTATION_BOUNCE_SAMPLE
    rate = rates.bounce_rate
    if rate is None:
        text = f"not enough mail yet ({sample:,} of {needed:,})"
    else:
        text = f"{rate:.2%}"
    detail = f"{rates.hard_bounced:,} hard bounces of {sample:,} delivered or bounced"
    stay, up = _limits(settings.SENDMSG_LEVEL_BOUNCE_LIMITS, level)
    return RateView("Hard bounce rate", rate, text, detail, stay, up)


def complaint_view(rates: Rates, level: int) -> RateView:
    needed = settings.SENDMSG_REPUTATION_COMPLAINT_SAMPLE
    fewest = settings.SENDMSG_REPUTATION_COMPLAINT_MIN
    rate = rates.complaint_rate
    if rates.delivered < needed:
        text = f"not enough mail yet ({rates.delivered:,} of {needed:,} delivered)"
    elif rate is None:
        text = f"not counted: fewer than {fewest} complaints"
    else:
        text = f"{rate:.3%}"
    detail = f"{rates.complained:,} complaints of {rates.delivered:,} delivered"
    stay, up = _limits(settings.SENDMSG_LEVEL_COMPLAINT_LIMITS, level)
    return RateView("Complaint rate", rate, text, detail, stay, up)


# -- the page's parts ----------------------------------------------------------------------


@dataclass(frozen=True)
class LevelView:
    """The tenant's own level, as its standing says (level 1 until one is computed)."""

    number: int
    name: str
    reason: str
    since: datetime | None
    pinned: bool
    pin_reason: str
    better_since: datetime | None
    up_on: datetime | None  # when the level goes up if the rates stay in the better band
    updated_at: datetime | None
    what_to_do: str
    effect: str

    @property
    def up_number(self) -> int | None:
        return self.number - 1 if self.number > Level.EXCELLENT else None

    @property
    def up_name(self) -> str:
        return Level(self.number - 1).label if self.number > Level.EXCELLENT else ""


@dataclass(frozen=True)
class DomainRow:
    domain: Domain
    level: int
    level_name: str
    pinned: bool
    reason: str
    bounce: RateView
    complaint: RateView
    hourly_rate: int  # for this domain's mail: the stricter of tenant's and domain's level
    warm_up_cap: int | None
    warm_up_day: int | None
    accepted_today: int


@dataclass(frozen=True)
class EventRow:
    event: Event
    kind: str
    bounce_class: str
    reason: str


@dataclass(frozen=True)
class ChangeRow:
    change: LevelChange
    scope: str
    by: str


@dataclass(frozen=True)
class ReputationPage:
    level: LevelView
    bounce: RateView
    complaint: RateView
    window_days: int
    plan_rate: int
    hourly_rate: int  # 0 when new mail is refused
    suspended_by_operator: bool
    domains: list[DomainRow]
    warm_up_days: int
    chart: Chart
    events: list[EventRow]
    changes: list[ChangeRow]
    suppressions: int
    is_new: bool  # nothing sent, nothing computed: the page explains the levels instead

    @property
    def rates(self) -> list[RateView]:
        return [self.bounce, self.complaint]

    @property
    def refused(self) -> bool:
        return self.suspended_by_operator or self.level.number >= Level.SUSPENDED


def reputation_page(tenant: Tenant) -> ReputationPage:
    """Assemble the page for ``tenant``; every query is scoped to it."""
    now = timezone.now()
    today = now.date()
    standings = list(Standing.objects.filter(tenant=tenant))
    own = next((s for s in standings if s.domain_id is None), None)
    by_domain = {s.domain_id: s for s in standings if s.domain_id is not None}
    level = level_view(own)
    window = _window_counts(tenant, today)
    total = Rates(
        delivered=sum(rates.delivered for rates, _ in window.values()),
        hard_bounced=sum(rates.hard_bounced for rates, _ in window.values()),
        complained=sum(rates.complained for rates, _ in window.values()),
    )
    plan_rate = tenant.plan_rate or settings.SENDMSG_DEFAULT_PLAN_RATE
    domains = _domain_rows(tenant, plan_rate, level.number, by_domain, window, today)
    chart = daily_chart(chart_days(tenant, today))
    events = recent_events(tenant, since=now - timedelta(days=CHART_DAYS))
    changes = level_changes(tenant)
    return ReputationPage(
        level=level,
        bounce=bounce_view(total, level.number),
        complaint=complaint_view(total, level.number),
        window_days=settings.SENDMSG_REPUTATION_WINDOW_DAYS,
        plan_rate=plan_rate,
        hourly_rate=_hourly(plan_rate, level.number, tenant.suspended),
        suspended_by_operator=tenant.suspended,
        domains=domains,
        warm_up_days=len(settings.SENDMSG_WARMUP_DAILY_CAPS),
        chart=chart,
        events=events,
        changes=changes,
        suppressions=Suppression.objects.filter(tenant=tenant).count(),
        is_new=own is None and chart.is_empty and not window and not events and not changes,
    )


def level_view(standing: Standing | None) -> LevelView:
    if standing is None:
        number = Level.EXCELLENT
        return LevelView(
            number=number,
            name=Level(number).label,
            reason="No level computed yet: every account starts at level 1.",
            since=None,
            pinned=False,
            pin_reason="",
            better_since=None,
            up_on=None,
            updated_at=None,
            what_to_do=advice.WHAT_TO_DO[number],
            effect=advice.effect(number),
        )
    waiting = standing.better_since if not standing.pinned else None
    window = timedelta(days=settings.SENDMSG_REPUTATION_WINDOW_DAYS)
    return LevelView(
        number=standing.level,
        name=Level(standing.level).label,
        reason=standing.reason,
        since=standing.since,
        pinned=standing.pinned,
        pin_reason=standing.pin_reason,
        better_since=waiting,
        up_on=waiting + window if waiting else None,
        updated_at=standing.updated_at,
        what_to_do=advice.WHAT_TO_DO[standing.level],
        effect=advice.effect(standing.level),
    )


def _hourly(plan_rate: int, level: int, suspended: bool) -> int:
    if suspended or level >= Level.SUSPENDED:
        return 0
    return rate_at(plan_rate, level)


def _window_counts(tenant: Tenant, today: date) -> dict[int, tuple[Rates, int]]:
    """Per domain: the window's counts (summed as levels.rates_for sums them) and the
    messages accepted today (for the warm-up); one query."""
    rows = (
        DailyStats.objects.filter(tenant=tenant, day__gte=window_start(today))
        .values("domain_id")
        .annotate(
            delivered=Sum("delivered"),
            hard_bounced=Sum("hard_bounced"),
            complained=Sum("complained"),
            accepted_today=Sum("accepted", filter=Q(day=today)),
        )
        .order_by()
    )
    return {
        row["domain_id"]: (
            Rates(row["delivered"] or 0, row["hard_bounced"] or 0, row["complained"] or 0),
            row["accepted_today"] or 0,
        )
        for row in rows
    }


def _domain_rows(
    tenant: Tenant,
    plan_rate: int,
    tenant_level: int,
    standings: dict[int, Standing],
    window: dict[int, tuple[Rates, int]],
    today: date,
) -> list[DomainRow]:
    rows = []
    for domain in Domain.objects.filter(tenant=tenant).order_by("name"):
        standing = standings.get(domain.pk)
        number = standing.level if standing else Level.EXCELLENT
        rates, accepted_today = window.get(domain.pk, (Rates(0, 0, 0), 0))
        cap = warm_up_cap(domain)
        rows.append(
            DomainRow(
                domain=domain,
                level=number,
                level_name=Level(number).label,
                pinned=bool(standing and standing.pinned),
                reason=standing.reason if standing else "",
                bounce=bounce_view(rates, number),
                complaint=complaint_view(rates, number),
                hourly_rate=_hourly(plan_rate, max(tenant_level, number), tenant.suspended),
                warm_up_cap=cap,
                warm_up_day=None if cap is None else (today - domain.verified_at.date()).days + 1,
                accepted_today=accepted_today,
            )
        )
    return rows


def chart_days(tenant: Tenant, today: date) -> list[Day]:
    """The last CHART_DAYS days, all the tenant's domains together; one grouped query."""
    first = today - timedelta(days=CHART_DAYS - 1)
    return summed_days(DailyStats.objects.filter(tenant=tenant), first, today)


def recent_events(tenant: Tenant, *, since: datetime) -> list[EventRow]:
    """The latest bounces and complaints, newest first. Bounded by ``since`` as well as by
    count, so a tenant that rarely bounces does not make the database walk its whole
    history; only the columns shown are read (never a message's body)."""
    fields = [
        "created_at",
        "type",
        "code",
        "enhanced",
        "text",
        "recipient__address",
        "message__queue_id",
        *CLASS_FIELDS,
    ]
    events = (
        Event.objects.filter(
            tenant=tenant,
            type__in=[EventType.BOUNCED, EventType.COMPLAINED],
            created_at__gte=since,
        )
        .select_related("recipient", "message")
        .only(*fields)
        .order_by("-created_at", "-id")[:RECENT]
    )
    return [
        EventRow(
            event=event,
            kind="Complaint" if event.type == EventType.COMPLAINED else "Bounce",
            bounce_class=_label(getattr(event, "bounce_class", "")),
            reason=_label(getattr(event, "reason", "")),
        )
        for event in events
    ]


def _label(value: str) -> str:
    return CLASS_LABELS.get(value, value) if value else ""


def level_changes(tenant: Tenant) -> list[ChangeRow]:
    changes = (
        LevelChange.objects.filter(tenant=tenant)
        .select_related("domain")
        .only(
            "domain__name",
            "old_level",
            "new_level",
            "reason",
            "actor",
            "pinned",
            "created_at",
        )[:RECENT]
    )
    return [
        ChangeRow(
            change=change,
            scope=change.domain.display_name if change.domain else "Account",
            by="An operator" if change.actor_id else "The rates",
        )
        for change in changes
    ]
