"""Dashboard pages for the current tenant's webhook endpoints: list and create, then one
page per endpoint to edit it, rotate its secret, send a test ping and read its recent
attempts; deleting asks first.

As on the credentials page, every action is a POST form that works without JavaScript,
and a new secret rides in the session from the POST to the one page that shows it, which
removes it while rendering: a reload no longer shows it.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db import transaction
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseNotAllowed
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.cache import add_never_cache_headers
from django.views.decorators.http import require_http_methods

from delivery.models import WEBHOOK_EVENT_CHOICES, WEBHOOK_EVENT_TYPES, WebhookEndpoint
from delivery.webhooks import endpoints
from delivery.webhooks.endpoints import DEFAULT_KEEP_PREVIOUS_HOURS, WebhookError
from delivery.webhooks.forms import RotateSecretForm, WebhookEndpointForm
from domains import audit
from domains.current import current_tenant, require, require_for_change
from domains.models import Tenant
from domains.roles import Capability

NEW_SECRET_SESSION_KEY = "webhook_new_secret"
RECENT_ATTEMPTS = 50

EndpointView = Callable[[HttpRequest, WebhookEndpoint], HttpResponse]


def get_endpoint_for(request: HttpRequest, pk: int) -> WebhookEndpoint:
    """A webhook endpoint of the current tenant; any other tenant's is a 404, never a 403."""
    tenant = current_tenant(request)
    endpoint = WebhookEndpoint.objects.filter(pk=pk, tenant=tenant).first() if tenant else None
    if endpoint is None:
        raise Http404("No such webhook endpoint")
    return endpoint


def endpoint_view(
    *methods: str, manage: bool = True
) -> Callable[[EndpointView], Callable[..., HttpResponse]]:
    """A view of one of the current tenant's endpoints, allowed for ``methods``; the row is
    looked up first, so another tenant's is a 404 whatever the method. With ``manage``
    (the default) the view needs MANAGE_WEBHOOKS; without, only its POST does."""

    def decorate(view: EndpointView) -> Callable[..., HttpResponse]:
        @login_required
        @wraps(view)
        def wrapper(request: HttpRequest, pk: int) -> HttpResponse:
            endpoint = get_endpoint_for(request, pk)
            if request.method not in methods:
                return HttpResponseNotAllowed(methods)
            if manage:
                require(request, Capability.MANAGE_WEBHOOKS)
            else:
                require_for_change(request, Capability.MANAGE_WEBHOOKS)
            return view(request, endpoint)

        return wrapper

    return decorate


def _add_error(form: WebhookEndpointForm, exc: WebhookError) -> None:
    form.add_error(exc.field if exc.field in form.fields else None, str(exc))


def record(request: HttpRequest, endpoint: WebhookEndpoint, action: str, **detail: Any) -> None:
    """The audit row of a change to ``endpoint`` (never its secret)."""
    audit.record(request, tenant=endpoint.tenant_id, action=action, target=endpoint.url, **detail)


def endpoint_detail_for_log(endpoint: WebhookEndpoint) -> dict[str, Any]:
    return {
        "event_types": list(endpoint.event_types),
        "active": endpoint.active,
        "description": endpoint.description,
    }


def _detail_url(endpoint: WebhookEndpoint, anchor: str = "") -> str:
    return reverse("webhooks:detail", args=[endpoint.pk]) + (f"#{anchor}" if anchor else "")


# -- the list ------------------------------------------------------------------------------


@login_required
@require_http_methods(["GET", "HEAD", "POST"])
def endpoint_list(request: HttpRequest) -> HttpResponse:
    """GET lists the endpoints and recent attempts; POST registers a new endpoint."""
    tenant = current_tenant(request)
    if request.method != "POST":
        form = WebhookEndpointForm(initial={"event_types": WEBHOOK_EVENT_TYPES, "active": True})
        return list_page(request, tenant, form=form)
    if tenant is None:
        raise Http404("No tenant")
    require(request, Capability.MANAGE_WEBHOOKS)
    form = WebhookEndpointForm(request.POST)
    if form.is_valid():
        data = form.cleaned_data
        try:
            # The URL's DNS check runs before the first statement, so the transaction
            # holds nothing while it waits.
            with transaction.atomic():
                endpoint, secret = endpoints.create_endpoint(
                    tenant=tenant,
                    url=data["url"],
                    event_types=data["event_types"],
                    description=data["description"],
                    active=data["active"],
                )
                record(request, endpoint, "webhook.created", **endpoint_detail_for_log(endpoint))
        except WebhookError as exc:
            _add_error(form, exc)
        else:
            request.session[NEW_SECRET_SESSION_KEY] = {"pk": endpoint.pk, "secret": secret}
            messages.success(request, f"Webhook endpoint {endpoint.url} added.")
            return redirect(_detail_url(endpoint, "new-secret"))
    return list_page(request, tenant, form=form, status=400)


def list_page(
    request: HttpRequest, tenant: Tenant | None, *, form: WebhookEndpointForm, status: int = 200
) -> HttpResponse:
    context: dict[str, Any] = {"form": form}
    if tenant is not None:
        context["endpoints"] = WebhookEndpoint.objects.filter(tenant=tenant).order_by(
            "-created_at", "-pk"
        )
        context["attempts"] = endpoints.recent_attempts(tenant=tenant)[:20]
    return render(request, "dashboard/webhooks.html", context, status=status)


# -- one endpoint --------------------------------------------------------------------------


@endpoint_view("GET", "HEAD", "POST", manage=False)
def endpoint_detail(request: HttpRequest, endpoint: WebhookEndpoint) -> HttpResponse:
    """GET shows the endpoint (with a new secret, once); POST saves the edit form."""
    if request.method != "POST":
        form = WebhookEndpointForm(
            initial={
                "url": endpoint.url,
                "description": endpoint.description,
                "event_types": endpoint.event_types,
                "active": endpoint.active,
            }
        )
        return detail_page(request, endpoint, form=form)
    form = WebhookEndpointForm(request.POST)
    if form.is_valid():
        data = form.cleaned_data
        try:
            with transaction.atomic():  # as in create: the DNS check comes first
                endpoints.update_endpoint(
                    endpoint,
                    url=data["url"],
                    event_types=data["event_types"],
                    description=data["description"],
                    active=data["active"],
                )
                record(request, endpoint, "webhook.updated", **endpoint_detail_for_log(endpoint))
        except WebhookError as exc:
            _add_error(form, exc)
        else:
            messages.success(request, "Webhook endpoint saved.")
            return redirect(_detail_url(endpoint))
    return detail_page(request, endpoint, form=form, status=400)


def detail_page(
    request: HttpRequest, endpoint: WebhookEndpoint, *, form: WebhookEndpointForm, status=200
) -> HttpResponse:
    new_secret = pop_new_secret(request, endpoint)
    context = {
        "endpoint": endpoint,
        "form": form,
        "rotate_form": RotateSecretForm(),
        "keep_hours": DEFAULT_KEEP_PREVIOUS_HOURS,
        "new_secret": new_secret,
        "attempts": endpoints.recent_attempts(endpoint)[:RECENT_ATTEMPTS],
        "type_labels": dict(WEBHOOK_EVENT_CHOICES),
    }
    response = render(request, "dashboard/webhook.html", context, status=status)
    if new_secret is not None:
        # Keep the one page that shows a secret out of every cache, the browser's included.
        add_never_cache_headers(response)
    return response


def pop_new_secret(request: HttpRequest, endpoint: WebhookEndpoint) -> str | None:
    """The secret kept by the last create or rotate of this endpoint, removed now."""
    kept = request.session.get(NEW_SECRET_SESSION_KEY)
    if not isinstance(kept, dict) or kept.get("pk") != endpoint.pk:
        return None
    del request.session[NEW_SECRET_SESSION_KEY]
    return kept.get("secret")


@endpoint_view("POST")
def rotate_secret(request: HttpRequest, endpoint: WebhookEndpoint) -> HttpResponse:
    form = RotateSecretForm(request.POST)
    form.is_valid()
    stop_now = form.cleaned_data.get("stop_previous_now", False)
    keep_hours = 0 if stop_now else DEFAULT_KEEP_PREVIOUS_HOURS
    with transaction.atomic():
        secret = endpoints.rotate_secret(endpoint, keep_previous_hours=keep_hours)
        record(request, endpoint, "webhook.secret_rotated", keep_previous_hours=keep_hours)
    request.session[NEW_SECRET_SESSION_KEY] = {"pk": endpoint.pk, "secret": secret}
    if stop_now:
        messages.success(request, "New signing secret made; the old one no longer signs.")
    else:
        messages.success(
            request,
            f"New signing secret made; the old one also signs for "
            f"{DEFAULT_KEEP_PREVIOUS_HOURS} hours.",
        )
    return redirect(_detail_url(endpoint, "new-secret"))


@endpoint_view("POST")
def send_test(request: HttpRequest, endpoint: WebhookEndpoint) -> HttpResponse:
    attempt = endpoints.send_test(endpoint)
    # An HTTP request to the tenant's URL: recorded after it, never inside a transaction.
    record(
        request,
        endpoint,
        "webhook.test_sent",
        succeeded=attempt.succeeded,
        status_code=attempt.status_code,
    )
    if attempt.succeeded:
        messages.success(request, f"Test ping delivered: HTTP {attempt.status_code}.")
    else:
        outcome = f"HTTP {attempt.status_code}" if attempt.status_code else attempt.error
        messages.error(request, f"Test ping failed: {outcome}")
    return redirect(_detail_url(endpoint, "attempts-h"))


@endpoint_view("GET", "HEAD", "POST")
def delete(request: HttpRequest, endpoint: WebhookEndpoint) -> HttpResponse:
    """GET asks for confirmation; POST deletes the endpoint and its attempt log."""
    if request.method != "POST":
        return render(request, "dashboard/webhook_delete.html", {"endpoint": endpoint})
    url = endpoint.url
    with transaction.atomic():
        record(request, endpoint, "webhook.deleted")
        endpoint.delete()
    messages.success(request, f"Webhook endpoint {url} deleted.")
    return redirect("webhooks:list")
