"""Dashboard pages for tenants. Every object comes through a tenant-scoped getter.

Each action is a POST form that works without JavaScript (post, redirect, get). "Check
now" also answers a script's fetch (header ``X-Requested-With: fetch``) with the rendered
checks fragment, which the page swaps in without a reload.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from functools import wraps
from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db import transaction
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseNotAllowed
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_http_methods, require_POST

from domains import audit
from domains import overview as overview_page
from domains.checks.results import CheckStatus
from domains.checks.run import check_domain
from domains.current import current_tenant, get_domain_for, require, switch_tenant
from domains.dkim_keys import KeyActionError, start_rotation
from domains.forms import AddDomainForm, RotateKeyForm
from domains.models import (
    Domain,
    DomainCheck,
    DomainEventType,
    DomainStatus,
    KeyAlgorithm,
    KeyState,
)
from domains.records import records_for
from domains.roles import Capability
from domains.tenancy import TenancyError, add_domain, delete_domain

FETCH_HEADER_VALUE = "fetch"  # what the page's script sends in X-Requested-With
CHART_CHECKS = 30  # checks drawn in the score history chart
RECENT_EVENTS = 10

# How each check is named for people; the checks themselves use short ids.
CHECK_LABELS = {
    "dkim": "DKIM",
    "return_path": "Return path",
    "spf": "SPF",
    "dmarc": "DMARC",
    "mx": "MX (mail to your domain)",
    "mta_sts": "MTA-STS",
    "tls_rpt": "TLS-RPT",
    "bimi": "BIMI",
}
KEY_EVENTS = {DomainEventType.KEY_ACTIVATED, DomainEventType.KEY_RETIRED}


def is_fetch(request: HttpRequest) -> bool:
    return request.headers.get("X-Requested-With") == FETCH_HEADER_VALUE


# -- pages ----------------------------------------------------------------------------------


@login_required
def overview(request: HttpRequest) -> HttpResponse:
    """The tenant's Overview: setup checklist, volume, level, domains, queue, failures
    (domains/overview.py reads it all in a fixed number of queries)."""
    tenant = current_tenant(request)
    page = overview_page.overview(tenant) if tenant is not None else None
    return render(request, "dashboard/overview.html", {"page": page})


@login_required
@require_http_methods(["GET", "POST"])
def domain_list(request: HttpRequest) -> HttpResponse:
    """The tenant's sending domains, and the form that adds one (admins and owners)."""
    tenant = current_tenant(request)
    form = AddDomainForm(request.POST if request.method == "POST" else None)
    if form.is_bound:
        if tenant is None:
            raise Http404("No tenant")
        require(request, Capability.MANAGE_DOMAINS)
        if form.is_valid():
            try:
                with transaction.atomic():
                    domain = add_domain(tenant=tenant, name=form.cleaned_data["name"])
                    record(request, domain, "domain.added")
            except TenancyError as exc:
                form.add_error("name", str(exc))
            else:
                messages.success(
                    request,
                    f"{domain.display_name} added. Publish the records below at your DNS "
                    "provider, then check.",
                )
                return redirect("dashboard:domain", domain.pk)
    domains = Domain.objects.for_tenant(tenant) if tenant else Domain.objects.none()
    return render(
        request,
        "dashboard/domains.html",
        {"domains": domains, "form": form},
        status=400 if form.errors else 200,
    )


DomainView = Callable[[HttpRequest, Domain], HttpResponse]


def domain_view(
    *methods: str, capability: Capability | None = None
) -> Callable[[DomainView], Callable[..., HttpResponse]]:
    """A view of one of the current tenant's domains, allowed for ``methods`` and, with
    ``capability``, only to members whose role grants it (others: 403, nothing changes).

    The domain is looked up before the method and the role are checked, so another
    tenant's domain is a 404 whatever the method, and the view receives the domain, never
    a bare id.
    """

    def decorate(view: DomainView) -> Callable[..., HttpResponse]:
        @login_required
        @wraps(view)
        def wrapper(request: HttpRequest, pk: int) -> HttpResponse:
            domain = get_domain_for(request, pk)
            if request.method not in methods:
                return HttpResponseNotAllowed(methods)
            if capability is not None:
                require(request, capability)
            return view(request, domain)

        return wrapper

    return decorate


@domain_view("GET", "HEAD")
def domain_detail(request: HttpRequest, domain: Domain) -> HttpResponse:
    return render(request, "dashboard/domain.html", domain_context(domain))


# -- actions on one domain (all POST) -------------------------------------------------------


def record(request: HttpRequest, domain: Domain, action: str, **detail: Any) -> None:
    """The audit row of a change to ``domain``, named by its ASCII name."""
    audit.record(request, tenant=domain.tenant_id, action=action, target=domain.name, **detail)


@domain_view("POST", capability=Capability.MANAGE_DOMAINS)
def check_now(request: HttpRequest, domain: Domain) -> HttpResponse:
    """Run the DNS checks now (a few seconds at most: every query has a timeout)."""
    report = check_domain(domain)
    # Recorded after the DNS queries: no transaction is held across them.
    record(request, domain, "domain.checked", score=report.score, partial=report.partial)
    domain.refresh_from_db()
    if is_fetch(request):
        keys_changed = any(event.type in KEY_EVENTS for event in report.events)
        return render(
            request, "dashboard/_checks.html", domain_context(domain, keys_changed=keys_changed)
        )
    partial = " (partial: some checks got no DNS answer)" if report.partial else ""
    messages.info(
        request,
        f"Checked {domain.display_name}: health score {report.score}{partial}. "
        f"Status: {domain.get_status_display()}.",
    )
    return redirect(_domain_url(domain, "health-h"))


@domain_view("POST", capability=Capability.MANAGE_DOMAINS)
def disable(request: HttpRequest, domain: Domain) -> HttpResponse:
    with transaction.atomic():
        domain.disable()
        record(request, domain, "domain.disabled")
    messages.success(request, f"{domain.display_name} is disabled: it sends no mail until enabled.")
    return redirect(_domain_url(domain))


@domain_view("POST", capability=Capability.MANAGE_DOMAINS)
def enable(request: HttpRequest, domain: Domain) -> HttpResponse:
    with transaction.atomic():
        domain.enable()
        record(request, domain, "domain.enabled", status=domain.status)
    messages.success(
        request, f"{domain.display_name} is enabled. Status: {domain.get_status_display()}."
    )
    return redirect(_domain_url(domain))


@domain_view("POST", capability=Capability.MANAGE_DOMAINS)
def require_tls(request: HttpRequest, domain: Domain) -> HttpResponse:
    """Turn the domain's "require TLS" on (``required=1``) or off (anything else)."""
    with transaction.atomic():
        domain.set_require_tls(request.POST.get("required") == "1")
        record(request, domain, "domain.require_tls_changed", require_tls=domain.require_tls)
    if domain.require_tls:
        text = "its mail is relayed only over TLS with a verified certificate, else deferred."
    else:
        text = "its mail is relayed over TLS whenever the receiving server offers it."
    messages.success(request, f"{domain.display_name}: {text}")
    return redirect(_domain_url(domain))


@domain_view("GET", "HEAD", "POST", capability=Capability.MANAGE_DOMAINS)
def delete(request: HttpRequest, domain: Domain) -> HttpResponse:
    """GET asks for confirmation; POST deletes (refused once the domain has sent mail)."""
    if request.method != "POST":
        return render(request, "dashboard/domain_delete.html", {"domain": domain})
    name = domain.display_name
    try:
        with transaction.atomic():
            record(request, domain, "domain.deleted")
            delete_domain(domain=domain)
    except TenancyError as exc:
        messages.error(request, f"{name} was not deleted. {exc}")
        return redirect(_domain_url(domain, "actions-h"))
    messages.success(request, f"{name} deleted, with its DKIM keys.")
    return redirect("dashboard:domains")


@domain_view("POST", capability=Capability.MANAGE_DOMAINS)
def rotate_key(request: HttpRequest, domain: Domain) -> HttpResponse:
    """A new DKIM key of the chosen algorithm; it signs once a check sees its record."""
    form = RotateKeyForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Choose a key type: RSA or Ed25519.")
        return redirect(_domain_url(domain, "keys-h"))
    try:
        with transaction.atomic():
            key = start_rotation(domain=domain, algorithm=form.cleaned_data["algorithm"])
            detail = {"selector": key.selector, "algorithm": key.algorithm}
            record(request, domain, "domain.key_rotated", **detail)
    except KeyActionError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(
            request,
            f"New {key.get_algorithm_display()} key {key.selector} created. Publish its "
            f"TXT record at {key.record_name}; signing switches to it once a check sees it.",
        )
    return redirect(_domain_url(domain, "keys-h"))


@login_required
@require_POST
def switch(request: HttpRequest) -> HttpResponse:
    switch_tenant(request, int(request.POST.get("tenant", 0) or 0))
    return redirect("dashboard:overview")


# -- what the domain page shows -------------------------------------------------------------


def _domain_url(domain: Domain, anchor: str = "") -> str:
    url = reverse("dashboard:domain", args=[domain.pk])
    return f"{url}#{anchor}" if anchor else url


def domain_context(domain: Domain, **extra: Any) -> dict[str, Any]:
    """Everything the setup page and its checks fragment render."""
    history = list(domain.checks.all()[:CHART_CHECKS])
    latest = history[0] if history else None
    records = records_for(domain)
    keys = domain.listed_keys()
    live_ed25519 = any(
        k.algorithm == KeyAlgorithm.ED25519 and k.state != KeyState.RETIRED for k in keys
    )
    return {
        "domain": domain,
        "disabled": domain.status == DomainStatus.DISABLED,
        "records": records,
        "zone": "\n".join(record.zone_line() for record in records),
        "keys": keys,
        "has_ed25519": live_ed25519,
        "latest": latest,
        "results": check_rows(latest),
        "chart": score_chart(history),
        "events": list(domain.events.all()[:RECENT_EVENTS]),
        **extra,
    }


@dataclass(frozen=True)
class CheckRow:
    name: str
    label: str
    status: str
    status_label: str
    message: str
    points: float
    weight: int


def check_rows(check: DomainCheck | None) -> list[CheckRow]:
    if check is None:
        return []
    rows = []
    for result in check.results:
        status = result.get("status", CheckStatus.UNKNOWN)
        status_label = (
            CheckStatus(status).label if status in CheckStatus.values else str(status).title()
        )
        rows.append(
            CheckRow(
                name=result["name"],
                label=CHECK_LABELS.get(result["name"], result["name"]),
                status=status,
                status_label=status_label.split(" (", 1)[0],
                message=result.get("message", ""),
                points=result.get("points", 0),
                weight=result.get("weight", 0),
            )
        )
    return rows


@dataclass(frozen=True)
class ChartPoint:
    x: float
    y: float
    score: int
    partial: bool
    verified: bool
    checked_at: datetime


@dataclass(frozen=True)
class ScoreChart:
    """An inline SVG line chart of the health score (0–100), oldest check on the left."""

    width: int
    height: int
    left: float
    right: float
    top: float
    bottom: float
    points: list[ChartPoint]

    @property
    def polyline(self) -> str:
        return " ".join(f"{p.x:.1f},{p.y:.1f}" for p in self.points)

    @property
    def label_x(self) -> float:
        return self.left - 4

    @property
    def middle(self) -> float:
        return (self.top + self.bottom) / 2

    @property
    def summary(self) -> str:
        scores = [p.score for p in self.points]
        count = len(scores)
        if count == 1:
            return f"Health score of the one check so far: {scores[0]}."
        return (
            f"Health score over the last {count} checks: from {scores[0]} to {scores[-1]}, "
            f"lowest {min(scores)}, highest {max(scores)}."
        )


def score_chart(history: list[DomainCheck], *, width: int = 320, height: int = 90) -> ScoreChart:
    """Geometry for the score history; ``history`` is newest first, as stored."""
    left, right, top, bottom = 28.0, width - 6.0, 6.0, height - 6.0
    checks = list(reversed(history))
    step = (right - left) / (len(checks) - 1) if len(checks) > 1 else 0.0
    points = [
        ChartPoint(
            x=left + i * step if len(checks) > 1 else (left + right) / 2,
            y=bottom - (bottom - top) * min(max(check.score, 0), 100) / 100,
            score=check.score,
            partial=check.partial,
            verified=check.verified,
            checked_at=check.checked_at,
        )
        for i, check in enumerate(checks)
    ]
    return ScoreChart(
        width=width, height=height, left=left, right=right, top=top, bottom=bottom, points=points
    )
