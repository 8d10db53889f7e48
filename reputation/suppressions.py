"""A tenant's suppression list: the addresses its mail is never sent to.

Every change a person makes to the list goes through here, from the dashboard and the API
alike: adding one address, removing one, importing many, and reading them back for a
page or an export. An import is all or nothing for the file: one that cannot be read, or
is over the limit, changes nothing; an address that is not valid is skipped and reported
with its row number, and the others are added in one transaction.

Addresses are kept the way the gate compares them (reputation/gate.py lower-cases each
recipient): the whole address in lower case, the domain in its ASCII (IDNA) form, which is
also how the send API writes a recipient's domain.

There is no audit table yet: each change is logged with who made it (a user or an API
key prefix) so an operator can trace it.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from django.conf import settings
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from domains.models import Tenant
from domains.names import InvalidDomain, normalize_domain
from reputation.models import Suppression, SuppressionReason
from sendmsg.write_turn import write_turn

if TYPE_CHECKING:
    from delivery.models import Event

log = logging.getLogger(__name__)

MAX_NOTE = 200  # Suppression.note
MAX_ROW_BYTES = 1024
"""Upload bytes allowed per row of the import limit: an exported row (address, reason,
note, time) is well under it."""
WRITE_BATCH = 500  # rows per INSERT and addresses per IN (…) lookup
EXPORT_CHUNK = 1000

# RFC 5322 atext, and any non-ASCII character for SMTPUTF8 local parts (RFC 6531), in
# dot-atoms; quoted local parts are not taken (the send API refuses them too).
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~\-\u0080-\U0010ffff]+"
LOCAL_PART = re.compile(rf"{_ATOM}(?:\.{_ATOM})*")


class SuppressionError(ValueError):
    """Input a tenant can fix; ``field`` names the input at fault when there is one."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class ImportTooLarge(SuppressionError):
    """More rows or bytes than one import may have; nothing was changed."""


# -- one address ---------------------------------------------------------------------------


def normalize_address(value: str) -> str:
    """``value`` as the list stores it: lower case, the domain's ASCII form; raises
    SuppressionError saying what is wrong."""
    address = value.strip()
    local, at, domain = address.rpartition("@")
    if not at or not local or not domain:
        raise SuppressionError(f"{_shown(value)} is not an email address.", field="address")
    if len(local.encode()) > 64 or not LOCAL_PART.fullmatch(local) or not local.isprintable():
        raise SuppressionError(f"{_shown(value)} is not a valid email address.", field="address")
    try:
        ascii_domain = normalize_domain(domain)
    except InvalidDomain as exc:
        raise SuppressionError(str(exc), field="address") from None
    return f"{local}@{ascii_domain}".lower()


def listed_as(address: str) -> str:
    """The form the list keeps ``address`` in, to match a recipient against it: lower
    case with the domain's ASCII form (an address that cannot be normalised is only
    lowered: it matches nothing the list could hold)."""
    if address.isascii():
        return address.lower()
    try:
        return normalize_address(address)
    except SuppressionError:
        return address.lower()


def add_after(
    event: Event, address: str, *, reason: SuppressionReason, note: str
) -> Suppression | None:
    """Put ``address`` on the tenant's list because of ``event`` (a bounce, a complaint,
    an unsubscribe), unless it is there already (an entry keeps its first reason);
    returns the entry added, or None."""
    listed = listed_as(address)
    entry, created = Suppression.objects.get_or_create(
        tenant_id=event.tenant_id,
        address=listed,
        defaults={
            "reason": reason,
            "note": note[:MAX_NOTE],
            "source_event": event,
            "created_at": event.created_at,
        },
    )
    if not created:
        return None
    log.info(
        "suppression added: tenant=%s address=%s reason=%s by event %s",
        event.tenant_id,
        listed,
        reason,
        event.pk,
    )
    return entry


def clean_note(note: str) -> str:
    note = note.strip()
    if len(note) > MAX_NOTE:
        raise SuppressionError(f"A note has at most {MAX_NOTE} characters.", field="note")
    if not note.isprintable():
        raise SuppressionError(
            "A note is one line of text, without control characters.", field="note"
        )
    return note


def _shown(value: str) -> str:
    return repr(value if len(value) <= 100 else value[:100] + "…")


def _spellings(address: str) -> set[str]:
    """The forms an entry for ``address`` may be stored under: the normal one, and as
    typed in lower case (an operator's entry from before the domain was IDNA-encoded)."""
    spellings = {address.strip().lower()}
    try:
        spellings.add(normalize_address(address))
    except SuppressionError:
        pass
    return spellings


def add(
    *,
    tenant: Tenant,
    address: str,
    note: str = "",
    actor: str,
    reason: SuppressionReason = SuppressionReason.MANUAL,
) -> tuple[Suppression, bool]:
    """Suppress ``address`` for the tenant from the next message on. An address already
    listed keeps its entry as it is (reason, note, date): returned with ``False``."""
    normalized = normalize_address(address)
    note = clean_note(note)
    entry, created = Suppression.objects.get_or_create(
        tenant=tenant, address=normalized, defaults={"reason": reason, "note": note}
    )
    if created:
        log.info("suppression added: tenant=%s address=%s by %s", tenant.pk, normalized, actor)
    return entry, created


def find(*, tenant: Tenant, address: str) -> Suppression | None:
    """The tenant's entry for ``address`` (any spelling of it), or None."""
    return Suppression.objects.filter(tenant=tenant, address__in=_spellings(address)).first()


def get_entry(*, tenant: Tenant | None, pk: int) -> Suppression | None:
    """The tenant's entry with this id; another tenant's is None, like a missing one."""
    if tenant is None:
        return None
    return Suppression.objects.filter(tenant=tenant, pk=pk).first()


def remove(*, tenant: Tenant, entry: Suppression, actor: str) -> None:
    """Take ``entry`` off the tenant's list: the next message to the address is sent."""
    if entry.tenant_id != tenant.pk:  # the callers fetch through the tenant; be sure
        raise Suppression.DoesNotExist(entry.pk)
    entry.delete()
    log.info("suppression removed: tenant=%s address=%s by %s", tenant.pk, entry.address, actor)


def entries(*, tenant: Tenant, query: str = "", reason: str = "") -> QuerySet[Suppression]:
    """The tenant's entries, newest first; ``query`` is part of an address (any case)."""
    rows = Suppression.objects.filter(tenant=tenant)
    if query.strip():
        rows = rows.filter(address__contains=query.strip().lower())
    if reason:
        rows = rows.filter(reason=reason)
    return rows.order_by("-created_at", "-pk")


def export_chunks(
    *, tenant: Tenant, query: str = "", reason: str = ""
) -> Iterator[list[Suppression]]:
    """Every matching entry, by address, a chunk at a time: a streamed export holds no
    cursor open between chunks, and each chunk is one short query (keyset on address,
    unique per tenant)."""
    rows = entries(tenant=tenant, query=query, reason=reason).order_by("address")
    last = None
    while True:
        chunk = list((rows if last is None else rows.filter(address__gt=last))[:EXPORT_CHUNK])
        if not chunk:
            return
        yield chunk
        last = chunk[-1].address


# -- imports -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImportRow:
    """One row to import: its number (a file's line, a list's position, from 1)."""

    number: int
    address: str
    note: str = ""
    problem: str = ""  # set when the row could not even be read as an address and note


@dataclass(frozen=True)
class InvalidRow:
    number: int
    value: str
    reason: str


@dataclass
class ImportResult:
    added: int = 0
    already_present: int = 0  # on the list before, or earlier in the same import
    invalid: list[InvalidRow] = field(default_factory=list)


def import_limit() -> int:
    """Rows one import may have."""
    return settings.SENDMSG_SUPPRESSION_IMPORT_ROWS


def check_size(nbytes: int) -> None:
    """Refuse an upload over the limit before reading it."""
    limit = import_limit() * MAX_ROW_BYTES
    if nbytes > limit:
        raise ImportTooLarge(
            f"The upload has {nbytes} bytes; an import may have at most {limit} "
            f"({MAX_ROW_BYTES} per row of the {import_limit()}-row limit). Split it."
        )


def check_rows(count: int) -> None:
    if count > import_limit():
        raise ImportTooLarge(
            f"An import may have at most {import_limit()} rows; this one has more. Split it."
        )


def rows_from_json(items: object) -> list[ImportRow]:
    """The rows of a JSON import: a list of addresses, or of ``{"address", "note"}``."""
    if not isinstance(items, list):
        raise SuppressionError(
            'Send a JSON array of addresses, or of {"address": …, "note": …} objects.'
        )
    check_rows(len(items))
    rows = []
    for number, item in enumerate(items, 1):
        if isinstance(item, str):
            rows.append(ImportRow(number, item))
        elif (
            isinstance(item, dict)
            and isinstance(item.get("address"), str)
            and isinstance(item.get("note", ""), str)
        ):
            rows.append(ImportRow(number, item["address"], item.get("note", "")))
        else:
            problem = 'neither an address nor an {"address", "note"} object of strings'
            rows.append(ImportRow(number, str(item)[:100], problem=problem))
    return rows


def import_rows(*, tenant: Tenant, rows: Sequence[ImportRow], actor: str) -> ImportResult:
    """Add every valid address of ``rows`` that is not listed yet, in one transaction;
    invalid rows are reported, never added. Over the limit: ImportTooLarge, nothing added."""
    check_rows(len(rows))
    result = ImportResult()
    wanted: dict[str, str] = {}  # address -> note, the first row of each address
    for row in rows:
        try:
            if row.problem:
                raise SuppressionError(row.problem)
            address = normalize_address(row.address)
            note = clean_note(row.note)
        except SuppressionError as exc:
            result.invalid.append(InvalidRow(row.number, row.address[:100], exc.message))
            continue
        if address in wanted:
            result.already_present += 1
        else:
            wanted[address] = note
    addresses = list(wanted)
    now = timezone.now()
    with write_turn(), transaction.atomic():
        listed: set[str] = set()
        for start in range(0, len(addresses), WRITE_BATCH):
            batch = addresses[start : start + WRITE_BATCH]
            listed.update(
                Suppression.objects.filter(tenant=tenant, address__in=batch).values_list(
                    "address", flat=True
                )
            )
        new = [
            Suppression(
                tenant=tenant,
                address=address,
                reason=SuppressionReason.MANUAL,
                note=note,
                created_at=now,
            )
            for address, note in wanted.items()
            if address not in listed
        ]
        # An entry added meanwhile (a bounce, another import) is kept as it is.
        Suppression.objects.bulk_create(new, batch_size=WRITE_BATCH, ignore_conflicts=True)
    result.added = len(new)
    result.already_present += len(listed)
    log.info(
        "suppressions imported: tenant=%s added=%s already=%s invalid=%s by %s",
        tenant.pk,
        result.added,
        result.already_present,
        len(result.invalid),
        actor,
    )
    return result
