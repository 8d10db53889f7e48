"""``/u/<token>``: the one-click unsubscribe endpoint (RFC 8058), no login.

POST unsubscribes (what a mailbox provider's button sends, with the body
``List-Unsubscribe=One-Click``, and what the page's own button sends); GET only shows
a page with that button, so a link scanner that fetches every URL in a message
unsubscribes nobody. The POST is CSRF-exempt, as RFC 8058 requires: the token in the URL
is what proves the request. It is not rate-limited per client address: the POSTs of one
mailbox provider all come from a few addresses. A bad token is 404 either way.
"""

from __future__ import annotations

from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods

from delivery.unsubscribe import ONE_CLICK, find_recipient
from reputation.unsubscribes import unsubscribe

TEMPLATE = "public/unsubscribe.html"


@csrf_exempt
@never_cache
@require_http_methods(["GET", "POST"])
def unsubscribe_page(request: HttpRequest, token: str) -> HttpResponse:
    if request.method == "POST":
        entry = unsubscribe(token=token)
        if entry is None:
            raise Http404("No such unsubscribe link.")
        response = render(request, TEMPLATE, {"done": True})
    else:
        recipient = find_recipient(token)
        if recipient is None:
            raise Http404("No such unsubscribe link.")
        name, value = ONE_CLICK.split("=")
        context = {"address": recipient.address, "field": name, "value": value}
        response = render(request, TEMPLATE, context)
    response["X-Robots-Tag"] = "noindex"
    response["Referrer-Policy"] = "no-referrer"  # the token is in the URL
    return response
