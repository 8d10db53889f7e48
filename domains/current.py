"""The tenant a dashboard request acts for: chosen in the session, among the user's own."""

from __future__ import annotations

from django.http import Http404, HttpRequest

from domains.models import Domain, Tenant

SESSION_KEY = "tenant_id"


def current_tenant(request: HttpRequest) -> Tenant | None:
    user = request.user
    if not user.is_authenticated:
        return None
    if hasattr(request, "_tenant"):
        return request._tenant
    mine = Tenant.objects.filter(memberships__user=user)
    tenant = (
        mine.filter(pk=request.session.get(SESSION_KEY)).first() or mine.order_by("name").first()
    )
    request._tenant = tenant
    return tenant


def switch_tenant(request: HttpRequest, tenant_id: int) -> Tenant:
    tenant = Tenant.objects.filter(memberships__user=request.user, pk=tenant_id).first()
    if tenant is None:
        raise Http404("No such tenant")
    request.session[SESSION_KEY] = tenant.pk
    request._tenant = tenant
    return tenant


def get_domain_for(request: HttpRequest, pk: int) -> Domain:
    """A domain of the current tenant; any other tenant's is a 404, never a 403."""
    tenant = current_tenant(request)
    domain = Domain.objects.filter(pk=pk, tenant=tenant).first() if tenant else None
    if domain is None:
        raise Http404("No such domain")
    return domain
