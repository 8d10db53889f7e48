"""Dashboard pages of the current tenant's suppression list: the list with search, reason
filter and pages; a form to add an address; removal, which asks first; a CSV import with
a summary of what it did; a CSV export of what the search shows.

As on the other dashboard pages, every change is a POST form that works without
JavaScript. An import's summary rides in the session from the POST to the list page,
which shows it once: a reload does not import again, nor show the summary again.
"""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from domains.current import current_tenant, require, requires
from domains.models import Tenant
from domains.roles import Capability
from reputation import suppression_changes as changes
from reputation import suppressions
from reputation.forms import SuppressionAddForm, SuppressionFilterForm, SuppressionImportForm
from reputation.models import Suppression
from reputation.suppression_csv import export_lines, read_csv
from reputation.suppressions import ImportResult, ImportTooLarge, SuppressionError

PAGE_SIZE = 50
IMPORT_SESSION_KEY = "suppression_import"
SHOWN_INVALID_ROWS = 20


def actor_of(request: HttpRequest) -> str:
    return f"user {request.user.get_username()}"


def tenant_or_404(request: HttpRequest) -> Tenant:
    tenant = current_tenant(request)
    if tenant is None:
        raise Http404("No tenant")
    return tenant


def get_entry_for(request: HttpRequest, pk: int) -> Suppression:
    """An entry of the current tenant's list; any other tenant's is a 404, never a 403."""
    entry = suppressions.get_entry(tenant=current_tenant(request), pk=pk)
    if entry is None:
        raise Http404("No such suppression")
    return entry


# -- the list ------------------------------------------------------------------------------


@login_required
@require_http_methods(["GET", "HEAD", "POST"])
def suppression_list(request: HttpRequest) -> HttpResponse:
    """GET lists the entries; POST adds one address."""
    if request.method != "POST":
        return list_page(request, current_tenant(request))
    tenant = tenant_or_404(request)
    require(request, Capability.MANAGE_SUPPRESSIONS)
    form = SuppressionAddForm(request.POST)
    if form.is_valid():
        try:
            entry, created = changes.add(
                request,
                tenant=tenant,
                address=form.cleaned_data["address"],
                note=form.cleaned_data["note"],
                actor=actor_of(request),
            )
        except SuppressionError as exc:
            form.add_error(exc.field if exc.field in form.fields else None, exc.message)
        else:
            if created:
                messages.success(request, f"{entry.address} added: mail to it is not sent.")
            else:
                messages.info(
                    request,
                    f"{entry.address} was on the list already "
                    f"({entry.get_reason_display().lower()}); it is left as it was.",
                )
            return redirect("suppressions:list")
    return list_page(request, tenant, add_form=form, status=400)


def list_page(
    request: HttpRequest,
    tenant: Tenant | None,
    *,
    add_form: SuppressionAddForm | None = None,
    import_form: SuppressionImportForm | None = None,
    status: int = 200,
) -> HttpResponse:
    filter_form = SuppressionFilterForm(request.GET)
    context: dict[str, Any] = {
        "add_form": add_form or SuppressionAddForm(),
        "import_form": import_form or SuppressionImportForm(),
        "filter_form": filter_form,
        "import_limit": suppressions.import_limit(),
    }
    if tenant is not None:
        filters = filter_form.filters()
        rows = suppressions.entries(tenant=tenant, **filters)
        context.update(
            page=Paginator(rows, PAGE_SIZE).get_page(request.GET.get("page")),
            filtered=any(filters.values()),
            filter_query=filter_form.query_string(),
            import_result=pop_import_result(request),
        )
    return render(request, "dashboard/suppressions.html", context, status=status)


# -- one entry -----------------------------------------------------------------------------


@login_required
@require_http_methods(["GET", "HEAD", "POST"])
def suppression_remove(request: HttpRequest, pk: int) -> HttpResponse:
    """GET asks for confirmation; POST takes the address off the list."""
    entry = get_entry_for(request, pk)
    tenant = require(request, Capability.MANAGE_SUPPRESSIONS)
    if request.method != "POST":
        return render(request, "dashboard/suppression_remove.html", {"entry": entry})
    changes.remove(request, tenant=tenant, entry=entry, actor=actor_of(request))
    messages.success(request, f"{entry.address} removed: the next message to it is sent.")
    return redirect("suppressions:list")


# -- import and export ---------------------------------------------------------------------


@login_required
@require_POST
@requires(Capability.MANAGE_SUPPRESSIONS)
def suppression_import(request: HttpRequest) -> HttpResponse:
    tenant = tenant_or_404(request)
    form = SuppressionImportForm(request.POST, request.FILES)
    status = 400
    if form.is_valid():
        upload = form.cleaned_data["file"]
        try:
            suppressions.check_size(upload.size)
            rows = read_csv(upload, limit=suppressions.import_limit())
            result = changes.import_rows(
                request, tenant=tenant, rows=rows, actor=actor_of(request), source=upload.name
            )
        except SuppressionError as exc:
            form.add_error("file", f"Nothing was imported. {exc.message}")
            status = 413 if isinstance(exc, ImportTooLarge) else 400
        else:
            request.session[IMPORT_SESSION_KEY] = import_summary(result, filename=upload.name)
            return redirect(reverse("suppressions:list") + "#import-result")
    return list_page(request, tenant, import_form=form, status=status)


def import_summary(result: ImportResult, *, filename: str) -> dict[str, Any]:
    """What the list page says about the import: counts and the first invalid rows."""
    return {
        "filename": filename,
        "added": result.added,
        "already_present": result.already_present,
        "invalid": len(result.invalid),
        "invalid_rows": [
            {"row": row.number, "value": row.value, "reason": row.reason}
            for row in result.invalid[:SHOWN_INVALID_ROWS]
        ],
    }


def pop_import_result(request: HttpRequest) -> dict[str, Any] | None:
    result = request.session.pop(IMPORT_SESSION_KEY, None)
    return result if isinstance(result, dict) else None


@login_required
@require_GET
def suppression_export(request: HttpRequest) -> StreamingHttpResponse:
    """The entries the list shows (all of them, or the search's), as CSV."""
    tenant = tenant_or_404(request)
    filters = SuppressionFilterForm(request.GET).filters()
    chunks = suppressions.export_chunks(tenant=tenant, **filters)
    response = StreamingHttpResponse(export_lines(chunks), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = 'attachment; filename="suppressions.csv"'
    return response
