"""The message log: finding a tenant's messages by filters, and reading one message's
recipients, attempts, event timeline and header section (never its body).

The dashboard and the API are thin adapters around this module: both validate their
query string with MessageFilterForm, list with ``page_of(...)`` (the dashboard: pages
that run from a message, newest first) or ``search(...)`` (the API: limit and offset),
and read one message with ``message_for(...)``. Every query starts from a tenant.

A list never counts every match, and a filter never reads every message of a large
tenant: a state or whole address that few recipients have is read from the recipient
indexes (at most RARE_LIMIT message ids); one that many have, part of an address and a
tag are tested message by message, newest first, and a page tests at most SCAN_LIMIT
messages, then says where it stopped (``searched_to`` / ``searched_since``) so the
reader can search on. Nothing is ever left out without saying so.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from django import forms
from django.db import connection
from django.db.models import (
    BooleanField,
    Exists,
    F,
    Func,
    OuterRef,
    Prefetch,
    Q,
    QuerySet,
    Value,
)
from django.db.models.functions import Lower, Substr
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from delivery.models import Event, EventType, Message, Recipient, RecipientState
from domains.models import Tenant
from domains.names import InvalidDomain, normalize_domain

HEADER_READ_LIMIT = 256 * 1024
"""Bytes of a message read to show its header section; a longer section is cut there."""

ATTEMPT_TYPES = (EventType.DELIVERED, EventType.DEFERRED, EventType.BOUNCED)
"""Events that record the outcome of a delivery attempt (or a later bounce report)."""

HEADER_END = b"\r\n\r\n"
# C0 controls but tab, CR and LF, and DEL: shown as U+FFFD, never passed to a page.
CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")

RARE_LIMIT = 5_000
"""A recipient filter matching at most this many recipients is read from the recipient
index (an id list); more matches are found by testing messages newest first."""

SCAN_LIMIT = 25_000
"""Messages a page reads at most when each one must be tested (part of an address, a tag,
a common state): then the page says where it stopped and offers to search on."""

COUNT_LIMIT = 10_000
"""The API's ``count`` counts this many matches at most."""


# -- filters ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class MessageFilter:
    """What a tenant asked for; every field left empty matches all messages.

    ``status`` and the recipient fields apply to the same recipient: a message matches
    when one of its recipients has that state and that address.
    """

    status: str = ""  # a RecipientState
    recipient: str = ""  # exact address, any case
    recipient_contains: str = ""  # part of an address, any case
    sender_domain: str = ""  # ASCII (normalize_domain)
    tag: str = ""
    since: datetime | None = None  # inclusive
    until: datetime | None = None  # exclusive

    @property
    def per_recipient(self) -> bool:
        return bool(self.status or self.recipient or self.recipient_contains)

    def recipient_q(self) -> Q:
        """The condition on one recipient (state, address) this filter asks for."""
        recipients = Q()
        if self.status:
            recipients &= Q(state=self.status)
        if self.recipient:
            recipients &= Q(address_lower=Lower(Value(self.recipient)))
        if self.recipient_contains:
            recipients &= Q(address__icontains=self.recipient_contains)
        return recipients

    def plan(self, tenant: Tenant) -> Plan:
        """How to run this filter for ``tenant``: from the recipient index when few
        recipients match (one query of at most RARE_LIMIT + 1 message ids), else by
        reading messages newest first and testing each (a scan, which callers bound)."""
        if self.recipient or (self.status and not self.recipient_contains):
            # Both have an index: (tenant, LOWER(address), message) and, read alone,
            # (tenant, state, updated_at, message), which holds the message id too.
            candidates = (
                Recipient.objects.alias(address_lower=Lower("address"))
                .filter(self.recipient_q(), tenant=tenant)
                .values_list("message_id", flat=True)
            )
            found = list(candidates[: RARE_LIMIT + 1])
            if len(found) <= RARE_LIMIT:
                return Plan(message_ids=frozenset(found), scans=False)
            return Plan(message_ids=None, scans=True)
        # Part of an address or a tag: tested message by message.
        return Plan(message_ids=None, scans=bool(self.recipient_contains or self.tag))

    def apply(self, messages: QuerySet[Message], plan: Plan | None = None) -> QuerySet[Message]:
        """``messages`` narrowed to this filter; with ``plan`` (from ``plan()``) the
        recipient conditions use the message ids it found, when it found them."""
        if plan is not None and plan.message_ids is not None:
            messages = messages.filter(pk__in=sorted(plan.message_ids))
        elif self.per_recipient:
            # EXISTS, not a join: a message with two matching recipients is listed once.
            messages = messages.filter(
                Exists(
                    Recipient.objects.alias(address_lower=Lower("address")).filter(
                        self.recipient_q(), message=OuterRef("pk")
                    )
                )
            )
        if self.sender_domain:
            messages = messages.filter(domain__name=self.sender_domain)
        if self.tag:
            messages = with_tag(messages, self.tag)
        return self.in_range(messages)

    def in_range(self, messages: QuerySet[Message]) -> QuerySet[Message]:
        if self.since is not None:
            messages = messages.filter(created_at__gte=self.since)
        if self.until is not None:
            messages = messages.filter(created_at__lt=self.until)
        return messages


@dataclass(frozen=True)
class Plan:
    """How a filter runs: ``message_ids`` are every message one of whose recipients
    matches (None: not looked up); ``scans`` when each message is read and tested, so
    a page must bound how many it reads."""

    message_ids: frozenset[int] | None
    scans: bool


class JsonArrayHas(Func):
    """SQLite: whether the JSON array in a column holds a string (Django's JSONField
    ``contains`` lookup does not run on SQLite)."""

    output_field = BooleanField()

    def __init__(self, column: str, value: str) -> None:
        super().__init__(F(column), Value(value))

    def as_sql(self, compiler, connection, **extra_context):
        array, array_params = compiler.compile(self.source_expressions[0])
        value, value_params = compiler.compile(self.source_expressions[1])
        sql = f"EXISTS (SELECT 1 FROM json_each({array}) AS tag WHERE tag.value = {value})"
        return sql, (*array_params, *value_params)


def with_tag(messages: QuerySet[Message], tag: str) -> QuerySet[Message]:
    """The messages whose tags include ``tag`` (exactly)."""
    if connection.vendor == "sqlite":
        return messages.filter(JsonArrayHas("tags", tag))
    return messages.filter(tags__contains=[tag])


class DateOrDateTimeField(forms.CharField):
    """An ISO 8601 date (``2025-01-31``) or date and time (``2025-01-31T08:00:00Z``).

    Cleans to a ``date`` or an aware ``datetime`` (a time without an offset is UTC).
    """

    def to_python(self, value: Any) -> date | datetime | None:
        text = super().to_python(value).strip()
        if not text:
            return None
        try:
            if ISO_DATE.fullmatch(text):
                return date.fromisoformat(text)
            parsed = parse_datetime(text)
        except ValueError:
            parsed = None
        if parsed is None:
            raise forms.ValidationError(
                "Enter a date (YYYY-MM-DD) or a date and time (YYYY-MM-DDTHH:MM:SSZ).",
                code="invalid",
            )
        if timezone.is_naive(parsed):
            parsed = timezone.make_aware(parsed, timezone.get_current_timezone())
        return parsed


def start_of(day: date) -> datetime:
    return timezone.make_aware(datetime.combine(day, time.min), timezone.get_current_timezone())


class MessageFilterForm(forms.Form):
    """The message log's filters, as query-string fields (dashboard and API alike)."""

    status = forms.ChoiceField(
        choices=[("", "Any state"), *RecipientState.choices],
        required=False,
        help_text="A recipient's state: the message has at least one recipient in it.",
    )
    recipient = forms.CharField(
        max_length=320,
        required=False,
        label="Recipient is",
        help_text="A recipient's whole address (any case).",
    )
    recipient_contains = forms.CharField(
        max_length=320,
        required=False,
        label="Recipient contains",
        help_text="Part of a recipient's address, e.g. a domain.",
    )
    sender_domain = forms.CharField(
        max_length=253,
        required=False,
        label="Sending domain",
        help_text="The domain the message was sent from.",
    )
    tag = forms.CharField(max_length=128, required=False, help_text="One of the message's tags.")
    since = DateOrDateTimeField(
        required=False,
        label="From",
        help_text="Accepted at or after this date (or date and time, UTC).",
    )
    until = DateOrDateTimeField(
        required=False,
        label="To",
        help_text="Accepted before this time; a date alone includes that whole day.",
    )

    def clean_sender_domain(self) -> str:
        value = self.cleaned_data["sender_domain"].strip()
        if not value:
            return ""
        try:
            return normalize_domain(value)
        except InvalidDomain as exc:
            raise forms.ValidationError(str(exc), code="invalid") from None

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        since, until = self.bounds(data)
        if since is not None and until is not None and since >= until:
            self.add_error("until", "“To” must be after “From”.")
        return data

    @staticmethod
    def bounds(data: dict[str, Any]) -> tuple[datetime | None, datetime | None]:
        since, until = data.get("since"), data.get("until")
        if isinstance(since, date) and not isinstance(since, datetime):
            since = start_of(since)
        if isinstance(until, date) and not isinstance(until, datetime):
            until = start_of(until + timedelta(days=1))
        return since, until

    def filters(self) -> MessageFilter:
        """The filter the valid form asks for."""
        data = self.cleaned_data
        since, until = self.bounds(data)
        return MessageFilter(
            status=data["status"],
            recipient=data["recipient"].strip(),
            recipient_contains=data["recipient_contains"].strip(),
            sender_domain=data["sender_domain"],
            tag=data["tag"],
            since=since,
            until=until,
        )

    def first_error(self) -> tuple[str, str]:
        """The first invalid field and its message (the API reports one)."""
        for name, errors in self.errors.items():
            return name, str(errors[0])
        return "", "The filters are not valid."


# -- reading ---------------------------------------------------------------------------------


def listed(tenant: Tenant) -> QuerySet[Message]:
    """The tenant's messages as a list shows them: each with its sending domain and
    recipients (no events), without its bytes."""
    return (
        Message.objects.filter(tenant=tenant)
        .select_related("domain")
        .defer("raw", "metadata")
        .prefetch_related(Prefetch("recipients", queryset=Recipient.objects.order_by("pk")))
    )


def messages_for(tenant: Tenant, filters: MessageFilter | None = None) -> QuerySet[Message]:
    """The tenant's messages matching ``filters``, newest first, each with its sending
    domain and recipients (no events) and without its bytes. Unbounded: a filter that
    tests each message reads them all (``search`` and ``page_of`` bound it)."""
    filters = filters or MessageFilter()
    return filters.apply(listed(tenant), filters.plan(tenant)).order_by(*NEWEST_FIRST)


NEWEST_FIRST = ("-created_at", "-pk")
OLDEST_FIRST = ("created_at", "pk")


@dataclass(frozen=True)
class Cursor:
    """A place in the log: the message accepted at ``created_at`` with id ``pk``. Pages
    run from one (exclusive), so messages with equal times are neither lost nor repeated."""

    created_at: datetime
    pk: int

    @classmethod
    def of(cls, message: Message) -> Cursor:
        return cls(created_at=message.created_at, pk=message.pk)

    def encode(self) -> str:
        stamp = self.created_at.astimezone(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
        return f"{stamp}_{self.pk}"

    @classmethod
    def decode(cls, text: str | None) -> Cursor | None:
        """The cursor in ``text``, or None for an empty or mangled one (the first page)."""
        stamp, _, pk = (text or "").partition("_")
        try:
            created_at = datetime.strptime(stamp, "%Y%m%dT%H%M%S.%fZ").replace(tzinfo=UTC)
            number = int(pk)
        except ValueError:
            return None
        return cls(created_at=created_at, pk=number) if 0 < number < 2**63 else None

    def older(self) -> Q:
        """Messages listed after this one (older, or as old with a lower id)."""
        return Q(created_at__lte=self.created_at) & (
            Q(created_at__lt=self.created_at) | Q(pk__lt=self.pk)
        )

    def newer(self) -> Q:
        return Q(created_at__gte=self.created_at) & (
            Q(created_at__gt=self.created_at) | Q(pk__gt=self.pk)
        )

    # A range the index can stop at: never NOT(...), which a planner tests row by row.
    def this_or_newer(self) -> Q:
        return Q(created_at__gte=self.created_at) & (
            Q(created_at__gt=self.created_at) | Q(pk__gte=self.pk)
        )

    def this_or_older(self) -> Q:
        return Q(created_at__lte=self.created_at) & (
            Q(created_at__lt=self.created_at) | Q(pk__lte=self.pk)
        )


def scan_end(
    tenant: Tenant, filters: MessageFilter, *, before: Cursor | None, after: Cursor | None
) -> Cursor | None:
    """The last message a scan from ``before`` (or up from ``after``) may read: the
    SCAN_LIMIT-th of the tenant's messages in the filter's date range, or None when
    fewer are left. Read from the (tenant, created_at) index alone."""
    messages = filters.in_range(Message.objects.filter(tenant=tenant))
    if after is not None:
        messages = messages.filter(after.newer()).order_by(*OLDEST_FIRST)
    else:
        messages = messages.filter(before.older()) if before else messages
        messages = messages.order_by(*NEWEST_FIRST)
    row = messages.values_list("created_at", "pk")[SCAN_LIMIT - 1 : SCAN_LIMIT].first()
    return Cursor(*row) if row else None


@dataclass
class LogPage:
    """One page of the log, newest first. ``newer`` and ``older`` are where the pages
    beside it start (None: none there). ``searched_to`` is set when the filter tests each
    message and this page stopped after SCAN_LIMIT of them: messages past that time were
    not searched (``older``/``newer`` search on from there)."""

    messages: list[Message]
    newer: Cursor | None = None
    older: Cursor | None = None
    searched_to: datetime | None = None
    upwards: bool = False  # read towards newer messages (from ?after=)
    whole: bool = False  # every match is on this page: its length is the count


def page_of(
    tenant: Tenant,
    filters: MessageFilter,
    *,
    before: Cursor | None = None,
    after: Cursor | None = None,
    size: int = 50,
) -> LogPage:
    """The page of ``size`` messages just older than ``before``, or just newer than
    ``after``, or the newest. Reads ``size + 1`` rows to know whether more follow, never
    counts, and tests at most SCAN_LIMIT messages when the filter tests each one."""
    plan = filters.plan(tenant)
    messages = filters.apply(listed(tenant), plan)
    end = scan_end(tenant, filters, before=before, after=after) if plan.scans else None
    if after is not None:
        if end is not None:
            messages = messages.filter(end.this_or_older())
        rows = list(messages.filter(after.newer()).order_by(*OLDEST_FIRST)[: size + 1])
        more = len(rows) > size
        if not more and end is None:
            # Nothing newer past this page: the newest page, full.
            return page_of(tenant, filters, size=size)
        rows = rows[:size][::-1]
        return LogPage(
            messages=rows,
            newer=Cursor.of(rows[0]) if more else end,
            older=Cursor.of(rows[-1]) if rows else after,
            searched_to=None if more or end is None else end.created_at,
            upwards=True,
        )
    if end is not None:
        messages = messages.filter(end.this_or_newer())
    if before is not None:
        messages = messages.filter(before.older())
    rows = list(messages.order_by(*NEWEST_FIRST)[: size + 1])
    more = len(rows) > size
    rows = rows[:size]
    return LogPage(
        messages=rows,
        newer=(Cursor.of(rows[0]) if rows else before) if before is not None else None,
        older=Cursor.of(rows[-1]) if more else end,
        searched_to=None if more or end is None else end.created_at,
        whole=before is None and not more and end is None,
    )


@dataclass(frozen=True)
class Search:
    """The API's list: ``messages`` newest first; ``searched_since`` is set when the
    filter tests each message and only those accepted at or after it were searched
    (pass it as ``until`` to search the older ones)."""

    messages: QuerySet[Message]
    searched_since: datetime | None


def search(tenant: Tenant, filters: MessageFilter) -> Search:
    """The tenant's messages matching ``filters``, newest first; a filter that tests
    each message reads the newest SCAN_LIMIT of the date range (ties at the last one's
    time included, so ``until`` set to ``searched_since`` continues without a gap)."""
    plan = filters.plan(tenant)
    messages = filters.apply(listed(tenant), plan).order_by(*NEWEST_FIRST)
    end = scan_end(tenant, filters, before=None, after=None) if plan.scans else None
    if end is None:
        return Search(messages=messages, searched_since=None)
    return Search(
        messages=messages.filter(created_at__gte=end.created_at),
        searched_since=end.created_at,
    )


def message_for(tenant: Tenant, queue_id: str) -> Message | None:
    """One of the tenant's messages with all the log shows of it, or None (another
    tenant's message is None too)."""
    return records_for(tenant).filter(queue_id=queue_id).first()


def records_for(tenant: Tenant) -> QuerySet[Message]:
    """The tenant's messages, each read with all the log shows of one: recipients with
    their events, the event timeline, and only the start of ``raw`` (``head``): enough
    for the header section."""
    return (
        Message.objects.filter(tenant=tenant)
        .select_related("domain")
        .defer("raw")
        .annotate(head=Substr("raw", 1, HEADER_READ_LIMIT + len(HEADER_END)))
        .prefetch_related(
            Prefetch(
                "recipients",
                queryset=Recipient.objects.order_by("pk").prefetch_related(
                    Prefetch("events", queryset=Event.objects.order_by("created_at", "pk"))
                ),
            ),
            Prefetch(
                "events",
                queryset=Event.objects.select_related("recipient").order_by("created_at", "pk"),
            ),
        )
    )


def attempts_of(recipient: Recipient) -> list[Event]:
    """The recipient's delivery attempts (and bounce reports), oldest first, from its
    prefetched events."""
    return [event for event in recipient.events.all() if event.type in ATTEMPT_TYPES]


# -- the header section ----------------------------------------------------------------------


def header_section(data: bytes) -> bytes | None:
    """The header section of a CRLF message with the blank line that ends it, or None
    when ``data`` holds no end of the header section (it may be cut short)."""
    if data.startswith(b"\r\n"):  # no header fields at all
        return b"\r\n"
    end = data.find(HEADER_END)
    return None if end < 0 else data[: end + len(HEADER_END)]


@dataclass
class Headers:
    """A message's header section as text for people and clients."""

    raw: str  # CRLF line endings, without the blank line after it
    fields: list[dict[str, str]] = field(default_factory=list)  # name, value (unfolded)
    truncated: bool = False  # longer than HEADER_READ_LIMIT: only its start is here


def headers_of(message: Message) -> Headers:
    """The header section of ``message``, decoded so that any bytes are safe to show:
    UTF-8 (RFC 6532) where it decodes, U+FFFD elsewhere and for control characters.
    Encoded-words are left as sent."""
    cached = getattr(message, "_log_headers", None)
    if cached is not None:
        return cached
    data = getattr(message, "head", None)
    data = bytes(data) if data is not None else bytes(message.raw)
    section = header_section(data)
    truncated = section is None and len(data) > HEADER_READ_LIMIT
    if section is None:
        # No blank line: a message of headers only, or a header section past the limit.
        section = data[:HEADER_READ_LIMIT]
        line_end = section.rfind(b"\r\n")
        if truncated and line_end >= 0:  # cut after the last whole line
            section = section[: line_end + 2]
    text = CONTROL.sub("\ufffd", section.decode("utf-8", errors="replace"))
    text = text.removesuffix("\r\n\r\n").removesuffix("\r\n")
    headers = Headers(raw=text, fields=unfold(text), truncated=truncated)
    message._log_headers = headers
    return headers


def unfold(text: str) -> list[dict[str, str]]:
    """Header fields in order (RFC 5322 2.2.3: a line starting with white space continues
    the field before it). A line that is no field keeps an empty name."""
    fields: list[dict[str, str]] = []
    for line in text.split("\r\n") if text else []:
        if line[:1] in (" ", "\t") and fields:
            fields[-1]["value"] += line
            continue
        name, colon, value = line.partition(":")
        if colon and name and " " not in name:
            fields.append({"name": name, "value": value.lstrip(" \t")})
        else:
            fields.append({"name": "", "value": line})
    return fields
