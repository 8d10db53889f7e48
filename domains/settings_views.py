"""The Settings page: the current tenant's name and unsubscribe default, and the facts an
operator sets (plan rate, suspension) or the platform fixes (SMTP and API addresses).

Every member sees it; the form is shown, and its POST allowed, only with
Capability.MANAGE_SETTINGS (403 otherwise, before anything is read from the POST). The
page is always the current tenant's: no tenant id is taken from the request (switching to
a tenant one is not a member of is a 404, domains/current.py). domains/tenant_settings.py
decides; this only turns the form into a call and the result into a page.
"""

from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods

from delivery.views import submission_settings
from domains import tenant_settings
from domains.current import current_tenant, require
from domains.forms import TenantSettingsForm
from domains.models import Tenant
from domains.roles import Capability

FIELD_LABELS = {"name": "organization name", "list_unsubscribe": "unsubscribe default"}


def _initial(tenant: Tenant) -> dict:
    return {"name": tenant.name, "list_unsubscribe": tenant.list_unsubscribe}


def _page(
    request: HttpRequest, *, form: TenantSettingsForm | None = None, status: int = 200
) -> HttpResponse:
    tenant = current_tenant(request)
    context: dict = {}
    if tenant is not None:
        context.update(
            form=form or TenantSettingsForm(initial=_initial(tenant)),
            plan_rate=tenant.plan_rate or settings.SENDMSG_DEFAULT_PLAN_RATE,
            plan_rate_is_default=not tenant.plan_rate,
            submission=submission_settings(),
            api_base=settings.SENDMSG_PUBLIC_URL.rstrip("/") + "/api/v1/",
        )
    return render(request, "dashboard/settings.html", context, status=status)


@login_required
@require_http_methods(["GET", "POST"])
def settings_page(request: HttpRequest) -> HttpResponse:
    if request.method == "GET":
        return _page(request)
    tenant = require(request, Capability.MANAGE_SETTINGS)
    form = TenantSettingsForm(request.POST)
    if not form.is_valid():
        return _page(request, form=form, status=400)
    try:
        changed = tenant_settings.change_settings(
            tenant=tenant,
            name=form.cleaned_data["name"],
            list_unsubscribe=form.cleaned_data["list_unsubscribe"],
            request=request,
        )
    except tenant_settings.SettingsError as exc:
        form.add_error(exc.field, str(exc))
        return _page(request, form=form, status=400)
    if changed:
        what = " and ".join(FIELD_LABELS[field] for field in changed)
        messages.success(request, f"Settings saved: the {what} changed.")
    else:
        messages.info(request, "Nothing changed.")
    return redirect("settings:page")
