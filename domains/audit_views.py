"""The tenant's audit log page: every change made in the tenant, newest first, filtered
by action and by who made it, searched in what it was made to. Owners and admins only
(VIEW_AUDIT); the rows are written by domains/audit.py."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from domains.current import require
from domains.models import AuditEntry, Tenant
from domains.roles import Capability

PAGE_SIZE = 50


class AuditFilterForm(forms.Form):
    """The page's filters (a GET form). Actions and actors are those of the tenant's own
    log, so a choice never lists another tenant's people."""

    action = forms.ChoiceField(
        label="Action", required=False, help_text="What was done, e.g. domain.added."
    )
    actor = forms.ChoiceField(
        label="Who", required=False, help_text="A person, an API key or an operator."
    )
    q = forms.CharField(
        label="Target contains",
        required=False,
        max_length=300,
        help_text="Part of what was changed: a domain, a key prefix, an address, a URL.",
    )

    def __init__(self, data: Any, *, entries: QuerySet[AuditEntry]) -> None:
        super().__init__(data)
        self.fields["action"].choices = [("", "Any action")] + [  # type: ignore[attr-defined]
            (a, a) for a in distinct(entries, "action")
        ]
        self.fields["actor"].choices = [("", "Anyone")] + [  # type: ignore[attr-defined]
            (a, a) for a in distinct(entries, "actor_label")
        ]

    def filtered(self, entries: QuerySet[AuditEntry]) -> QuerySet[AuditEntry]:
        if not self.is_valid():
            return entries.none()
        data = self.cleaned_data
        if data["action"]:
            entries = entries.filter(action=data["action"])
        if data["actor"]:
            entries = entries.filter(actor_label=data["actor"])
        if data["q"].strip():
            entries = entries.filter(target__icontains=data["q"].strip())
        return entries

    @property
    def used(self) -> bool:
        return self.is_valid() and any(str(v).strip() for v in self.cleaned_data.values())


def distinct(entries: QuerySet[AuditEntry], field: str) -> list[str]:
    return list(entries.order_by(field).values_list(field, flat=True).distinct())


def entries_of(tenant: Tenant) -> QuerySet[AuditEntry]:
    return AuditEntry.objects.filter(tenant=tenant).order_by("-created_at", "-id")


@login_required
@require_GET
def audit_list(request: HttpRequest) -> HttpResponse:
    tenant = require(request, Capability.VIEW_AUDIT)
    entries = entries_of(tenant)
    form = AuditFilterForm(request.GET, entries=entries)
    page = Paginator(form.filtered(entries), PAGE_SIZE).get_page(request.GET.get("page"))
    kept = request.GET.copy()
    kept.pop("page", None)
    context = {
        "form": form,
        "page": page,
        "filtered": form.used,
        "filter_query": kept.urlencode(),
    }
    return render(request, "dashboard/audit.html", context)
