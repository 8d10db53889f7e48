"""The operators' overview page: the whole platform at a glance, each number linking to
the admin list that explains it (reputation levels, the queue, DNS health, webhooks).

Mounted on the default admin site at /admin/overview/ (``install``), so the admin's own
login and staff check guard it. A fixed handful of statements, whatever the platform's
size: every figure is one aggregate.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta

from django.contrib import admin
from django.contrib.admin import AdminSite
from django.db.models import Count, Min, Q
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone

from delivery.admin import STUCK_ATTEMPTS, STUCK_LATE, age_words, stuck
from delivery.models import (
    Recipient,
    RecipientState,
    WebhookDelivery,
    WebhookDeliveryState,
)
from domains.admin import LOW_SCORE, dns_health, with_level
from domains.models import Domain, Tenant
from reputation.chart import Day, nice_scale, summed_days
from reputation.models import DailyStats, Level

DAYS = 14
WEBHOOK_WINDOW = timedelta(hours=24)
NOT_FINAL = [
    RecipientState.QUEUED,
    RecipientState.DEFERRED,
    RecipientState.HELD,
    RecipientState.SENDING,
]


@dataclass(frozen=True)
class Link:
    label: str
    count: int
    url: str
    note: str = ""


def changelist(model, **params: str | int) -> str:
    url = reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist")
    query = "&".join(f"{name}={value}" for name, value in params.items())
    return f"{url}?{query}" if query else url


def daily_totals(*, today: date, days: int = DAYS) -> list[Day]:
    """Every tenant's counts added up per day (UTC), oldest first, zeros for quiet days."""
    first = today - timedelta(days=days - 1)
    return summed_days(DailyStats.objects.all(), first, today)


def tenants_by_level() -> list[Link]:
    """How many tenants are at each level (their own standing), and how many an operator
    suspended; each links to the tenant list filtered so."""
    counts = dict(
        with_level(Tenant.objects.all())
        .values_list("level")
        .annotate(n=Count("pk"))
        .order_by("level")
    )
    links = [
        Link(
            f"{level.value} {level.label.lower()}",
            counts.get(level.value, 0),
            changelist(Tenant, level=level.value),
        )
        for level in Level
    ]
    restricted = sum(n for level, n in counts.items() if level >= Level.RESTRICTED)
    links.append(Link("restricted or suspended (4–5)", restricted, changelist(Tenant, level="4-5")))
    suspended = Tenant.objects.filter(suspended=True).count()
    links.append(
        Link("suspended by an operator", suspended, changelist(Tenant, suspended__exact=1))
    )
    return links


def queue_health(*, now: datetime) -> tuple[list[Link], Link]:
    """Recipients not final yet, by state, with how long the oldest has waited since it
    was accepted; and how many are stuck."""
    rows = (
        Recipient.objects.filter(state__in=NOT_FINAL)
        .values("state")
        .annotate(n=Count("pk"), oldest=Min("message__created_at"))
    )
    by_state = {row["state"]: row for row in rows}
    links = []
    for state in NOT_FINAL:
        row = by_state.get(state)
        note = f"oldest accepted {age_words(now - row['oldest'])} ago" if row else ""
        links.append(
            Link(
                state.label, row["n"] if row else 0, changelist(Recipient, state__exact=state), note
            )
        )
    minutes = int(STUCK_LATE.total_seconds() // 60)
    stuck_link = Link(
        "stuck",
        Recipient.objects.filter(stuck(now=now)).count(),
        changelist(Recipient, stuck="yes"),
        f"due {minutes}+ min ago, {STUCK_ATTEMPTS}+ attempts, or a lease expired {minutes}+ "
        "min ago",
    )
    return links, stuck_link


def dns_failures(*, now: datetime) -> list[Link]:
    counts = Domain.objects.aggregate(
        **{
            kind: Count("pk", filter=dns_health(kind, now=now))
            for kind in ("failing", "unverified", "low_score", "stale")
        }
    )
    words = {
        "failing": "failing DNS (any of these)",
        "unverified": "last check did not verify",
        "low_score": f"health score below {LOW_SCORE}",
        "stale": "not checked for a day",
    }
    return [Link(words[kind], counts[kind], changelist(Domain, dns=kind)) for kind in words]


def webhook_failures(*, now: datetime) -> list[Link]:
    failed = Q(state=WebhookDeliveryState.FAILED, updated_at__gte=now - WEBHOOK_WINDOW)
    retrying = Q(state=WebhookDeliveryState.PENDING, attempts__gt=0)
    counts = WebhookDelivery.objects.filter(failed | retrying).aggregate(
        failed=Count("pk", filter=failed),
        retrying=Count("pk", filter=retrying),
        endpoints=Count("endpoint", filter=failed | retrying, distinct=True),
    )
    return [
        Link(
            "failed for good in the last 24 h",
            counts["failed"],
            changelist(WebhookDelivery, state__exact=WebhookDeliveryState.FAILED),
        ),
        Link(
            "failed at least once, retrying",
            counts["retrying"],
            changelist(WebhookDelivery, state__exact=WebhookDeliveryState.PENDING),
        ),
        Link("endpoints with either", counts["endpoints"], changelist(WebhookDelivery)),
    ]


# -- the chart: bars drawn on the server, in an inline SVG (no script, no CDN) -------------


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    fill: str
    title: str


@dataclass(frozen=True)
class Panel:
    title: str
    top: float
    bottom: float
    scale: int
    bars: list[Bar]

    @property
    def scale_label(self) -> str:
        return f"{self.scale:,}"


@dataclass(frozen=True)
class BarChart:
    width: int
    height: int
    left: float
    axis_y: float
    panels: list[Panel]
    ticks: list[tuple[float, str]]
    legend: list[tuple[str, str]]


SERIES = [
    # (field, label, colour): volume on top, trouble below, each panel its own scale (a
    # handful of complaints would lie flat on the thousands accepted).
    [("accepted", "Accepted", "#79aec8"), ("delivered", "Delivered", "#417690")],
    [("hard_bounced", "Hard bounces", "#ba2121"), ("complained", "Complaints", "#e69500")],
]


def bar_chart(days: list[Day], *, width: int = 720, height: int = 260) -> BarChart:
    """Geometry for grouped daily bars of ``days`` (oldest first, at least one)."""
    left, right = 56.0, width - 8.0
    step = (right - left) / len(days)
    places = [(24.0, 140.0), (170.0, 230.0)]
    panels = []
    for (top, bottom), series in zip(places, SERIES, strict=True):
        scale = nice_scale(max(getattr(d, field) for d in days for field, _, _ in series))
        bar_width = step * 0.8 / len(series)
        bars = []
        for i, day in enumerate(days):
            for j, (field, label, colour) in enumerate(series):
                value = getattr(day, field)
                height_ = (bottom - top) * value / scale
                bars.append(
                    Bar(
                        x=round(left + i * step + step * 0.1 + j * bar_width, 2),
                        y=round(bottom - height_, 2),
                        width=round(bar_width, 2),
                        height=round(height_, 2),
                        fill=colour,
                        title=f"{day.day:%Y-%m-%d}: {value:,} {label.lower()}",
                    )
                )
        title = " and ".join(label for _, label, _ in series)
        panels.append(Panel(title=title, top=top, bottom=bottom, scale=scale, bars=bars))
    ticks = [(round(left + (i + 0.5) * step, 1), f"{d.day:%m-%d}") for i, d in enumerate(days)]
    legend = [(label, colour) for series in SERIES for _, label, colour in series]
    return BarChart(width, height, left, height - 14.0, panels, ticks, legend)


def overview(request: HttpRequest) -> TemplateResponse:
    """The page (staff only: mounted through ``AdminSite.admin_view``)."""
    now = timezone.now()
    days = daily_totals(today=now.date())
    waiting, stuck_link = queue_health(now=now)
    context = {
        **admin.site.each_context(request),
        "title": "Operator overview",
        "days": days,
        "chart": bar_chart(days),
        "levels": tenants_by_level(),
        "waiting": waiting,
        "stuck": stuck_link,
        "dns": dns_failures(now=now),
        "webhooks": webhook_failures(now=now),
        "now": now,
    }
    return TemplateResponse(request, "admin/sendmsg/overview.html", context)


def install(site: AdminSite) -> None:
    """Mount the overview on ``site`` at ``overview/`` (URL name ``admin:overview``) and
    link it from the index page; the site stays the default one."""
    if getattr(site, "_overview_installed", False):
        return
    urls = site.get_urls

    def get_urls():
        return [path("overview/", site.admin_view(overview), name="overview"), *urls()]

    site.get_urls = get_urls
    site.index_template = "admin/sendmsg/index.html"
    site._overview_installed = True
