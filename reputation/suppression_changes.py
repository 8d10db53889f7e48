"""Suppression list changes made by a person (dashboard) or an API key (API): each use
case of reputation/suppressions.py with its audit row, in one transaction, so both doors
store a change and its row together or not at all. ``actor`` is the label the list
itself keeps (who added or removed an entry)."""

from __future__ import annotations

from collections.abc import Sequence

from django.db import transaction
from django.http import HttpRequest

from domains import audit
from domains.models import Tenant
from reputation import suppressions
from reputation.models import Suppression
from sendmsg.write_turn import write_turn


def add(
    request: HttpRequest, *, tenant: Tenant, address: str, note: str, actor: str
) -> tuple[Suppression, bool]:
    """Add ``address``; the audit row only when it was not listed already."""
    with transaction.atomic():
        entry, created = suppressions.add(tenant=tenant, address=address, note=note, actor=actor)
        if created:
            audit.record(
                request,
                tenant=tenant,
                action="suppression.added",
                target=entry.address,
                note=entry.note,
            )
    return entry, created


def remove(request: HttpRequest, *, tenant: Tenant, entry: Suppression, actor: str) -> None:
    with transaction.atomic():
        suppressions.remove(tenant=tenant, entry=entry, actor=actor)
        audit.record(
            request,
            tenant=tenant,
            action="suppression.removed",
            target=entry.address,
            reason=entry.reason,
        )


def import_rows(
    request: HttpRequest,
    *,
    tenant: Tenant,
    rows: Sequence[suppressions.ImportRow],
    actor: str,
    source: str,
) -> suppressions.ImportResult:
    """Import ``rows`` (from ``source``, e.g. the file's name) with one audit row of the
    counts. The write turn is taken first, as import_rows takes it on its own."""
    with write_turn(), transaction.atomic():
        result = suppressions.import_rows(tenant=tenant, rows=rows, actor=actor)
        audit.record(
            request,
            tenant=tenant,
            action="suppression.imported",
            target=source,
            added=result.added,
            already_present=result.already_present,
            invalid=len(result.invalid),
        )
    return result
