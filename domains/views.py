"""Dashboard pages for tenants. Every object comes through a tenant-scoped getter."""

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from delivery.models import Message
from domains.current import current_tenant, get_domain_for, switch_tenant
from domains.models import Domain
from domains.records import records_for


@login_required
def overview(request: HttpRequest) -> HttpResponse:
    tenant = current_tenant(request)
    context = {"domains": [], "messages": []}
    if tenant is not None:
        context["domains"] = Domain.objects.for_tenant(tenant)
        context["messages"] = Message.objects.filter(tenant=tenant).prefetch_related("recipients")[
            :20
        ]
    return render(request, "dashboard/overview.html", context)


@login_required
def domain_detail(request: HttpRequest, pk: int) -> HttpResponse:
    domain = get_domain_for(request, pk)
    return render(
        request, "dashboard/domain.html", {"domain": domain, "records": records_for(domain)}
    )


@login_required
@require_POST
def switch(request: HttpRequest) -> HttpResponse:
    switch_tenant(request, int(request.POST.get("tenant", 0) or 0))
    return redirect("dashboard:overview")
