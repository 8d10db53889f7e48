"""Dashboard pages of the message log: the current tenant's messages with filters (a GET
form), and one message's recipients, attempts, timeline and headers. The reading is
delivery.message_log; these views only validate, fetch and render."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from delivery import message_log
from delivery.models import Message, RecipientState
from domains.current import current_tenant

PAGE_SIZE = 50
IN_FLIGHT = {RecipientState.QUEUED, RecipientState.SENDING, RecipientState.DEFERRED}


def get_message_for(request: HttpRequest, queue_id: str) -> Message:
    """A message of the current tenant; any other tenant's is a 404, never a 403."""
    tenant = current_tenant(request)
    message = message_log.message_for(tenant, queue_id) if tenant else None
    if message is None:
        raise Http404("No such message")
    return message


def retention() -> dict[str, int]:
    return {
        "body_retention_days": settings.SENDMSG_BODY_RETENTION_DAYS,
        "metadata_retention_days": settings.SENDMSG_METADATA_RETENTION_DAYS,
    }


@login_required
@require_GET
def message_list(request: HttpRequest) -> HttpResponse:
    tenant = current_tenant(request)
    form = message_log.MessageFilterForm(request.GET)
    context: dict[str, Any] = {"form": form, "page": None, **retention()}
    if tenant is not None and form.is_valid():
        # Pages run from a message (keyset): ?before= for older ones, ?after= for newer.
        before = message_log.Cursor.decode(request.GET.get("before"))
        after = None if before else message_log.Cursor.decode(request.GET.get("after"))
        page = message_log.page_of(
            tenant, form.filters(), before=before, after=after, size=PAGE_SIZE
        )
        kept = request.GET.copy()
        for name in ("before", "after", "page"):
            kept.pop(name, None)
        prefix = f"?{kept.urlencode()}&" if kept else "?"
        context["page"] = page
        context["newer_url"] = f"{prefix}after={page.newer.encode()}" if page.newer else ""
        context["older_url"] = f"{prefix}before={page.older.encode()}" if page.older else ""
        context["scan_limit"] = f"{message_log.SCAN_LIMIT:,}"
        context["filtered"] = any(value for value in form.cleaned_data.values())
    return render(request, "dashboard/messages.html", context)


@login_required
@require_GET
def message_detail(request: HttpRequest, queue_id: str) -> HttpResponse:
    message = get_message_for(request, queue_id)
    recipients = [
        {"row": r, "attempts": message_log.attempts_of(r)} for r in message.recipients.all()
    ]
    context = {
        "message": message,
        "recipients": recipients,
        # The page refreshes its recipients and timeline while one is still on its way.
        "in_flight": any(r["row"].state in IN_FLIGHT for r in recipients),
        "timeline": list(message.events.all()),
        "headers": message_log.headers_of(message),
        "waiting_states": {RecipientState.QUEUED, RecipientState.DEFERRED},
        **retention(),
    }
    return render(request, "dashboard/message.html", context)
