"""The message log: finding a tenant's messages by filters, and reading one message's
recipients, attempts, event timeline and header section (never its body).

The dashboard and the API are thin adapters around this module: both validate their
query string with MessageFilterForm, list with ``messages_for(...)`` and read one
message with ``message_for(...)``. Every query starts from a tenant.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
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
from django.db.models.functions import Substr
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

    def apply(self, messages: QuerySet[Message]) -> QuerySet[Message]:
        recipients = Q()
        if self.status:
            recipients &= Q(state=self.status)
        if self.recipient:
            recipients &= Q(address__iexact=self.recipient)
        if self.recipient_contains:
            recipients &= Q(address__icontains=self.recipient_contains)
        if recipients:
            # EXISTS, not a join: a message with two matching recipients is listed once.
            messages = messages.filter(
                Exists(Recipient.objects.filter(recipients, message=OuterRef("pk")))
            )
        if self.sender_domain:
            messages = messages.filter(domain__name=self.sender_domain)
        if self.tag:
            messages = with_tag(messages, self.tag)
        if self.since is not None:
            messages = messages.filter(created_at__gte=self.since)
        if self.until is not None:
            messages = messages.filter(created_at__lt=self.until)
        return messages


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


def messages_for(tenant: Tenant, filters: MessageFilter | None = None) -> QuerySet[Message]:
    """The tenant's messages matching ``filters``, newest first, each with its sending
    domain and recipients (no events) and without its bytes."""
    messages = (
        Message.objects.filter(tenant=tenant)
        .select_related("domain")
        .defer("raw", "metadata")
        .prefetch_related(Prefetch("recipients", queryset=Recipient.objects.order_by("pk")))
        .order_by("-created_at", "-pk")
    )
    return (filters or MessageFilter()).apply(messages)


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
