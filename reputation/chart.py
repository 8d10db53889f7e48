"""The Reputation page's daily chart, as geometry for an inline SVG.

Drawn on the server so the page needs no JavaScript library and no CDN, and prints and
reads the same everywhere. Volume and trouble differ by orders of magnitude (thousands
accepted, a handful of complaints), so they get two panels, each with its own scale:
on one shared scale bounces and complaints would lie flat on the axis. The template
(templates/dashboard/_reputation_chart.html) draws it and repeats every number in a
table, which is what screen readers read.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date, timedelta

from django.db.models import QuerySet, Sum


@dataclass(frozen=True)
class Day:
    """One UTC day of a tenant's counts (all its domains together); zeros when none."""

    day: date
    accepted: int = 0
    delivered: int = 0
    hard_bounced: int = 0
    soft_bounced: int = 0
    complained: int = 0
    deferred: int = 0

    @property
    def label(self) -> str:
        return (
            f"{self.day:%Y-%m-%d}: {self.accepted:,} accepted, {self.delivered:,} delivered, "
            f"{self.deferred:,} deferred, {self.hard_bounced:,} hard bounces, "
            f"{self.soft_bounced:,} soft bounces, {self.complained:,} complaints"
        )


@dataclass(frozen=True)
class Series:
    """One line: which counts it draws, its legend words and its style (the dash pattern
    tells the lines apart without colour)."""

    field: str
    label: str
    css: str
    points: str = ""


@dataclass(frozen=True)
class Panel:
    title: str
    top: float
    bottom: float
    scale: int  # the value at the top of the panel
    series: list[Series]

    @property
    def middle(self) -> float:
        return (self.top + self.bottom) / 2

    @property
    def title_y(self) -> float:
        return self.top - 10

    @property
    def middle_label(self) -> str:
        return f"{self.scale / 2:,g}"

    @property
    def scale_label(self) -> str:
        return f"{self.scale:,}"


@dataclass(frozen=True)
class Column:
    """A day's slice of the plot: its hover title carries that day's numbers."""

    x: float
    width: float
    day: Day


@dataclass(frozen=True)
class Tick:
    x: float
    label: str


@dataclass(frozen=True)
class Chart:
    width: int
    height: int
    left: float
    right: float
    axis_y: float
    days: list[Day]
    panels: list[Panel]
    columns: list[Column]
    ticks: list[Tick]

    @property
    def label_x(self) -> float:
        return self.left - 4

    @property
    def totals(self) -> Day:
        return Day(
            day=self.days[-1].day,
            **{name: sum(getattr(d, name) for d in self.days) for name in COUNTS},
        )

    @property
    def is_empty(self) -> bool:
        return not any(getattr(self.totals, name) for name in COUNTS)

    @property
    def summary(self) -> str:
        """The chart in one sentence, for its <desc> and its caption."""
        first, last, total = self.days[0].day, self.days[-1].day, self.totals
        text = (
            f"{len(self.days)} days, {first:%Y-%m-%d} to {last:%Y-%m-%d} (UTC): "
            f"{total.accepted:,} accepted, {total.delivered:,} delivered, "
            f"{total.hard_bounced:,} hard bounces, {total.complained:,} complaints."
        )
        if self.is_empty:
            return text
        busiest = max(self.days, key=lambda d: (d.accepted, d.day))
        worst = max(self.days, key=lambda d: (d.hard_bounced, d.day))
        text += f" Most accepted on {busiest.day:%Y-%m-%d} ({busiest.accepted:,})."
        if worst.hard_bounced:
            text += f" Most hard bounces on {worst.day:%Y-%m-%d} ({worst.hard_bounced:,})."
        return text


COUNTS = ("accepted", "delivered", "hard_bounced", "soft_bounced", "complained", "deferred")


def summed_days(stats: QuerySet, first: date, last: date) -> list[Day]:
    """``stats`` (DailyStats rows) added up per day from ``first`` to ``last``, oldest
    first, zeros for quiet days: one grouped query."""
    rows = (
        stats.filter(day__gte=first, day__lte=last)
        .values("day")
        .annotate(**{name: Sum(name) for name in COUNTS})
        .order_by("day")
    )
    counts = {
        row["day"]: Day(row["day"], **{name: row[name] or 0 for name in COUNTS}) for row in rows
    }
    return days_between(first, last, counts)


def days_between(first: date, last: date, counts: dict[date, Day]) -> list[Day]:
    """Every day from ``first`` to ``last``, with zeros for days without a row."""
    span = (last - first).days + 1
    return [counts.get(day, Day(day)) for day in (first + timedelta(n) for n in range(span))]


def nice_scale(value: int) -> int:
    """The smallest 1, 2 or 5 times a power of ten at or above ``value`` (at least 1), so
    the axis reads in round numbers."""
    if value <= 1:
        return 1
    power = 10 ** math.floor(math.log10(value))
    return next(m * power for m in (1, 2, 5, 10) if value <= m * power)


PanelSpec = tuple[str, list[Series]]
"""A panel's title and the series drawn in it."""

REPUTATION_PANELS: list[PanelSpec] = [
    (
        "Volume",
        [Series("accepted", "Accepted", "accepted"), Series("delivered", "Delivered", "delivered")],
    ),
    (
        "Hard bounces and complaints",
        [
            Series("hard_bounced", "Hard bounces", "bounced"),
            Series("complained", "Complaints", "complained"),
        ],
    ),
]
VOLUME_PANELS: list[PanelSpec] = [
    (
        "Volume",
        [*REPUTATION_PANELS[0][1], Series("deferred", "Deferred (will retry)", "deferred")],
    ),
    (
        "Bounces and complaints",
        [
            Series("soft_bounced", "Soft bounces", "soft"),
            *REPUTATION_PANELS[1][1],
        ],
    ),
]
"""The Overview's chart: the same volume, and every kind of failure the counts keep."""


def daily_chart(
    days: list[Day],
    *,
    width: int = 640,
    height: int = 270,
    panels: list[PanelSpec] = REPUTATION_PANELS,
) -> Chart:
    """Geometry for ``days`` (oldest first, at least one) in two panels, each with its own
    scale: by default volume on top, hard bounces and complaints below."""
    left, right = 48.0, width - 8.0
    step = (right - left) / len(days)
    places = [(24.0, 140.0), (174.0, 238.0)]
    drawn = [
        _panel(title, days, top=top, bottom=bottom, series=series, left=left, step=step)
        for (title, series), (top, bottom) in zip(panels, places, strict=True)
    ]
    columns = [Column(x=left + i * step, width=step, day=day) for i, day in enumerate(days)]
    marks = sorted({0, len(days) // 2, len(days) - 1})
    ticks = [Tick(x=left + (i + 0.5) * step, label=f"{days[i].day:%m-%d}") for i in marks]
    return Chart(
        width=width,
        height=height,
        left=left,
        right=right,
        axis_y=height - 14.0,
        days=days,
        panels=drawn,
        columns=columns,
        ticks=ticks,
    )


def _panel(
    title: str,
    days: list[Day],
    *,
    top: float,
    bottom: float,
    series: list[Series],
    left: float,
    step: float,
) -> Panel:
    scale = nice_scale(max(getattr(d, s.field) for d in days for s in series))

    def y(value: int) -> float:
        return bottom - (bottom - top) * value / scale

    def points(field: str) -> str:
        return " ".join(
            f"{left + (i + 0.5) * step:.1f},{y(getattr(d, field)):.1f}" for i, d in enumerate(days)
        )

    drawn = [Series(s.field, s.label, s.css, points(s.field)) for s in series]
    return Panel(title=title, top=top, bottom=bottom, scale=scale, series=drawn)
