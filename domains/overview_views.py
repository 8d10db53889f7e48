"""The Overview's own action: send a test message to yourself (POST, then the message's
timeline, where its state moves from queued to delivered)."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.views.decorators.http import require_POST

from domains import audit
from domains.current import require
from domains.overview import CannotSendTest, own_address, send_test_message
from domains.roles import Capability


@login_required
@require_POST
def send_test(request: HttpRequest) -> HttpResponse:
    tenant = require(request, Capability.SEND)
    try:
        message = send_test_message(tenant=tenant, to=own_address(request.user))
    except CannotSendTest as exc:
        messages.error(request, str(exc))
        return redirect("dashboard:overview")
    audit.record(request, tenant=tenant, action="message.test_sent", target=message.queue_id)
    messages.success(
        request,
        f"Test message accepted for {message.recipients.all()[0].address}. This page shows "
        "its way: queued, then delivered.",
    )
    return redirect("message_log:detail", message.queue_id)
