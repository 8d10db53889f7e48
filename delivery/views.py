"""Dashboard page for the current tenant's SMTP logins and API keys.

Every action is a POST form that works without JavaScript (post, redirect, get). A new
secret (after create or rotate) rides in the session from the POST to the one page that
shows it, which removes it while rendering: reloading that page no longer shows it. It is
never put in a flash message, whose storage may be a cookie.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any, Literal, TypeVar

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseNotAllowed
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.cache import add_never_cache_headers
from django.views.decorators.http import require_GET, require_POST

from delivery import credential_changes as changes
from delivery.credentials import CredentialError, GrantError
from delivery.forms import ApiKeyForm, SmtpCredentialForm
from delivery.models import ApiKey, SmtpCredential
from domains.current import current_role, current_tenant, require, requires
from domains.models import Tenant
from domains.roles import RANK, Capability, at_most

NEW_SECRET_SESSION_KEY = "credentials_new_secret"
SMTP: Literal["smtp"] = "smtp"
API_KEY: Literal["api_key"] = "api_key"
Kind = Literal["smtp", "api_key"]

Row = TypeVar("Row", SmtpCredential, ApiKey)


# -- tenant-scoped getters -----------------------------------------------------------------


def get_smtp_credential_for(request: HttpRequest, pk: int) -> SmtpCredential:
    """An SMTP login of the current tenant; any other tenant's is a 404, never a 403."""
    tenant = current_tenant(request)
    row = SmtpCredential.objects.filter(pk=pk, tenant=tenant).first() if tenant else None
    if row is None:
        raise Http404("No such SMTP login")
    return row


def get_api_key_for(request: HttpRequest, pk: int) -> ApiKey:
    """An API key of the current tenant; any other tenant's is a 404, never a 403."""
    tenant = current_tenant(request)
    row = ApiKey.objects.filter(pk=pk, tenant=tenant).first() if tenant else None
    if row is None:
        raise Http404("No such API key")
    return row


def row_view(
    getter: Callable[[HttpRequest, int], Row], *methods: str
) -> Callable[[Callable[[HttpRequest, Row], HttpResponse]], Callable[..., HttpResponse]]:
    """A view of one of the current tenant's logins or keys, allowed for ``methods``.

    The row is looked up before the method is checked, so another tenant's row is a 404
    whatever the method, and the view receives the row, never a bare id.
    """

    def decorate(
        view: Callable[[HttpRequest, Row], HttpResponse],
    ) -> Callable[..., HttpResponse]:
        @login_required
        @wraps(view)
        def wrapper(request: HttpRequest, pk: int) -> HttpResponse:
            row = getter(request, pk)
            if request.method not in methods:
                return HttpResponseNotAllowed(methods)
            # Every action on a login or key (its confirmation page included) changes it.
            require(request, Capability.MANAGE_CREDENTIALS)
            return view(request, row)

        return wrapper

    return decorate


# -- the page ------------------------------------------------------------------------------


@login_required
@require_GET
def credential_list(request: HttpRequest) -> HttpResponse:
    tenant = current_tenant(request)
    smtp_form = SmtpCredentialForm(tenant=tenant) if tenant else None
    return page(request, tenant, smtp_form=smtp_form, api_key_form=api_key_form(request))


def api_key_form(request: HttpRequest, data: Any = None) -> ApiKeyForm:
    """The new-key form, offering the roles the user may hand out (at most their own)."""
    return ApiKeyForm(data, granted_by=current_role(request))


def page(
    request: HttpRequest,
    tenant: Tenant | None,
    *,
    smtp_form: SmtpCredentialForm | None,
    api_key_form: ApiKeyForm,
    status: int = 200,
) -> HttpResponse:
    role = current_role(request)
    context: dict[str, Any] = {
        "smtp_form": smtp_form,
        "api_key_form": api_key_form,
        "submission": submission_settings(),
        "new_secret": pop_new_secret(request, tenant),
        # A key above the user's own role is not theirs to rotate (a new secret of it).
        "grantable_roles": [r.value for r in RANK if role and at_most(r, role)],
    }
    if tenant is not None:
        context["smtp_logins"] = (
            SmtpCredential.objects.filter(tenant=tenant)
            .prefetch_related("domains")
            .order_by("revoked", "-created_at", "-pk")
        )
        context["api_keys"] = ApiKey.objects.filter(tenant=tenant).order_by(
            "revoked", "-created_at", "-pk"
        )
    response = render(request, "dashboard/credentials.html", context, status=status)
    if context["new_secret"] is not None:
        # Keep the one page that shows a secret out of every cache, the browser's included.
        add_never_cache_headers(response)
    return response


def submission_settings() -> dict[str, Any]:
    return {
        "host": settings.SENDMSG_HOSTNAME,
        "port": settings.SENDMSG_SUBMISSION_PORT,
        "tls_port": settings.SENDMSG_SUBMISSION_TLS_PORT,
    }


# -- the secret, shown once ----------------------------------------------------------------


def keep_new_secret(
    request: HttpRequest, *, kind: Kind, row: SmtpCredential | ApiKey, secret: str
) -> None:
    """Keep a new secret for the next render of the page, and only that one."""
    request.session[NEW_SECRET_SESSION_KEY] = {"kind": kind, "pk": row.pk, "secret": secret}


def pop_new_secret(request: HttpRequest, tenant: Tenant | None) -> dict[str, Any] | None:
    """The secret kept by the last create or rotate, removed from the session now.

    It is shown only with its row, looked up in the current tenant (the user may have
    switched tenants in between, in which case it is dropped unseen).
    """
    kept = request.session.pop(NEW_SECRET_SESSION_KEY, None)
    if not isinstance(kept, dict) or tenant is None:
        return None
    model = SmtpCredential if kept.get("kind") == SMTP else ApiKey
    row = model.objects.filter(pk=kept.get("pk"), tenant=tenant).first()
    if row is None:
        return None
    return {"kind": kept["kind"], "row": row, "secret": kept["secret"]}


def to_new_secret() -> HttpResponse:
    return redirect(reverse("credentials:list") + "#new-secret")


def to_section(kind: Kind) -> HttpResponse:
    anchor = "smtp-h" if kind == SMTP else "api-keys-h"
    return redirect(reverse("credentials:list") + f"#{anchor}")


def require_tenant(request: HttpRequest) -> Tenant:
    tenant = current_tenant(request)
    if tenant is None:
        raise Http404("No tenant")
    return tenant


# -- SMTP logins ---------------------------------------------------------------------------


@login_required
@require_POST
@requires(Capability.MANAGE_CREDENTIALS)
def smtp_create(request: HttpRequest) -> HttpResponse:
    tenant = require_tenant(request)
    form = SmtpCredentialForm(request.POST, tenant=tenant)
    if form.is_valid():
        domains = list(form.cleaned_data["domains"])
        try:
            row, password = changes.create_login(
                request,
                tenant=tenant,
                domains=domains,
                description=form.cleaned_data["description"],
            )
        except CredentialError as exc:
            form.add_error("domains", str(exc))
        else:
            keep_new_secret(request, kind=SMTP, row=row, secret=password)
            messages.success(request, f"SMTP login {row.username} created.")
            return to_new_secret()
    return page(request, tenant, smtp_form=form, api_key_form=api_key_form(request), status=400)


@row_view(get_smtp_credential_for, "POST")
def smtp_rotate(request: HttpRequest, row: SmtpCredential) -> HttpResponse:
    """A new login with the same description and domain limits; the old one stops now."""
    try:
        new, password = changes.rotate(request, row)
    except CredentialError as exc:
        messages.error(request, f"{row.username}: {exc}")
        return to_section(SMTP)
    keep_new_secret(request, kind=SMTP, row=new, secret=password)
    messages.success(
        request,
        f"SMTP login {row.username} replaced by {new.username}; the old one is revoked.",
    )
    return to_new_secret()


@row_view(get_smtp_credential_for, "GET", "HEAD", "POST")
def smtp_revoke(request: HttpRequest, row: SmtpCredential) -> HttpResponse:
    """GET asks for confirmation; POST revokes."""
    return revoke_row(request, row, kind=SMTP, label=f"SMTP login {row.username}")


# -- API keys ------------------------------------------------------------------------------


@login_required
@require_POST
@requires(Capability.MANAGE_CREDENTIALS)
def api_key_create(request: HttpRequest) -> HttpResponse:
    tenant = require_tenant(request)
    form = api_key_form(request, request.POST)
    if form.is_valid():
        try:
            row, key = changes.create_key(
                request,
                tenant=tenant,
                name=form.cleaned_data["name"],
                role=form.cleaned_data["role"],
                granted_by=current_role(request),
            )
        except GrantError as exc:
            form.add_error("role", str(exc))
        else:
            keep_new_secret(request, kind=API_KEY, row=row, secret=key)
            messages.success(request, f"API key {row} created ({row.get_role_display()}).")
            return to_new_secret()
    smtp_form = SmtpCredentialForm(tenant=tenant)
    return page(request, tenant, smtp_form=smtp_form, api_key_form=form, status=400)


@row_view(get_api_key_for, "POST")
def api_key_rotate(request: HttpRequest, row: ApiKey) -> HttpResponse:
    """A new key with the same name and role; the old one stops now."""
    try:
        new, key = changes.rotate(request, row, granted_by=current_role(request))
    except CredentialError as exc:
        messages.error(request, f"API key {row}: {exc}")
        return to_section(API_KEY)
    keep_new_secret(request, kind=API_KEY, row=new, secret=key)
    messages.success(request, f"API key {row} replaced by {new}; the old one is revoked.")
    return to_new_secret()


@row_view(get_api_key_for, "GET", "HEAD", "POST")
def api_key_revoke(request: HttpRequest, row: ApiKey) -> HttpResponse:
    """GET asks for confirmation; POST revokes."""
    return revoke_row(request, row, kind=API_KEY, label=f"API key {row}")


def revoke_row(
    request: HttpRequest, row: SmtpCredential | ApiKey, *, kind: Kind, label: str
) -> HttpResponse:
    if request.method != "POST":
        return render(
            request,
            "dashboard/credential_revoke.html",
            {"row": row, "kind": kind, "label": label},
        )
    revoked_now = not row.revoked and changes.revoke_recorded(request, row)
    if revoked_now:
        messages.success(request, f"{label} revoked: it no longer works.")
    else:
        messages.info(request, f"{label} was already revoked.")
    return to_section(kind)
