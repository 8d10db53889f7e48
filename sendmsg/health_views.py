"""Liveness, readiness and metrics of the web process, for load balancers, orchestrators
and Prometheus. None of them needs a login; ``/metrics`` answers only loopback clients
unless ``SENDMSG_METRICS_TOKEN`` is set, then only a client sending that token.

The SMTP and worker processes are checked with ``manage.py health`` (an exit status).
"""

from __future__ import annotations

import hmac
import ipaddress

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from sendmsg import metrics
from sendmsg.readiness import problems


@never_cache
@require_GET
def healthz(request: HttpRequest) -> HttpResponse:
    """Alive: this process answers requests (nothing else is asked)."""
    return JsonResponse({"status": "ok"})


@never_cache
@require_GET
def readyz(request: HttpRequest) -> HttpResponse:
    """Ready for traffic: the database answers and every migration is applied."""
    found = problems()
    if found:
        return JsonResponse({"status": "unavailable", "problems": found}, status=503)
    return JsonResponse({"status": "ok"})


def metrics_allowed(request: HttpRequest) -> bool:
    token = settings.SENDMSG_METRICS_TOKEN
    if token:
        header = request.headers.get("Authorization", "")
        return hmac.compare_digest(header.encode(), f"Bearer {token}".encode())
    try:
        return ipaddress.ip_address(request.META.get("REMOTE_ADDR", "")).is_loopback
    except ValueError:
        return False


@never_cache
@require_GET
def prometheus(request: HttpRequest) -> HttpResponse:
    if not metrics_allowed(request):
        return HttpResponse(
            "Metrics are served to loopback clients, or to clients sending "
            "SENDMSG_METRICS_TOKEN as a bearer token.\n",
            status=403,
            content_type="text/plain",
        )
    return HttpResponse(metrics.render(metrics.collect()), content_type="text/plain; version=0.0.4")
