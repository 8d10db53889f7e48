"""The tenant a dashboard request acts for: chosen in the session, among the user's own."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar, cast

from django.core.exceptions import PermissionDenied
from django.db.models import F
from django.http import Http404, HttpRequest, HttpResponse

from domains.models import Domain, Membership, Tenant
from domains.roles import Capability, can

SESSION_KEY = "tenant_id"
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")

View = TypeVar("View", bound=Callable[..., HttpResponse])


def current_tenant(request: HttpRequest) -> Tenant | None:
    user = request.user
    if not user.is_authenticated:
        return None
    if hasattr(request, "_tenant"):
        return request._tenant
    # The user's role comes with the tenant (one query for both): ``tenant.my_role``.
    mine = Tenant.objects.filter(memberships__user=user).annotate(my_role=F("memberships__role"))
    tenant = (
        mine.filter(pk=request.session.get(SESSION_KEY)).first() or mine.order_by("name").first()
    )
    request._tenant = tenant
    return tenant


def current_role(request: HttpRequest) -> str | None:
    """The user's role in the current tenant, or None (no tenant)."""
    tenant = current_tenant(request)
    if tenant is None:
        return None
    if not hasattr(tenant, "my_role"):
        tenant.my_role = (
            Membership.objects.filter(tenant=tenant, user=request.user)
            .values_list("role", flat=True)
            .first()
        )
    return tenant.my_role


def require(request: HttpRequest, capability: Capability) -> Tenant:
    """The current tenant if the user's role there grants ``capability``; else
    PermissionDenied (403: the object is the user's own tenant's, so nothing leaks). A
    user of no tenant gets 404, as for every tenant-scoped page."""
    tenant = current_tenant(request)
    if tenant is None:
        raise Http404("No tenant")
    if not can(current_role(request), capability):
        raise PermissionDenied("Your role in this tenant does not allow this.")
    return tenant


def requires(capability: Capability) -> Callable[[View], View]:
    """A dashboard view only for members whose role grants ``capability``: anyone else
    gets 403 before the view runs, so nothing changes. For a view of one object, look the
    object up first (another tenant's is a 404) and call ``require`` after."""

    def decorate(view: View) -> View:
        @wraps(view)
        def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            require(request, capability)
            return view(request, *args, **kwargs)

        return cast(View, wrapper)

    return decorate


def require_for_change(request: HttpRequest, capability: Capability) -> None:
    """For a page that both shows (GET: every member) and changes (POST): the change
    needs ``capability``."""
    if request.method not in SAFE_METHODS:
        require(request, capability)


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
