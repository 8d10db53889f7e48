"""The dashboard's Reputation page: the current tenant's level, rates, chart, recent
bounces and complaints and level changes. The reading is reputation/page.py; the view
only finds the tenant and renders."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from domains.current import current_tenant
from reputation.advice import level_table, sample_sizes
from reputation.page import reputation_page


@login_required
@require_GET
def reputation(request: HttpRequest) -> HttpResponse:
    tenant = current_tenant(request)
    context = {
        "page": reputation_page(tenant) if tenant is not None else None,
        "levels": level_table(),
        **sample_sizes(),
    }
    return render(request, "dashboard/reputation.html", context)
