"""The events API: a filtered, cursor-paginated list and a streamed export of a time range.

Both speak the one event shape of delivery.api.event_schema (webhooks send it too); the
CSV export flattens that same data into columns. The reading itself (filters, cursor,
chunks) is delivery.event_queries.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterable, Iterator
from typing import Any

from django.http import StreamingHttpResponse
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_field
from rest_framework import serializers
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response
from rest_framework.utils.encoders import JSONEncoder
from rest_framework.utils.urls import replace_query_param
from rest_framework.views import APIView

from delivery.api.event_schema import EVENT_RELATED, EventReplySerializer, EventSerializer
from delivery.api.send_serializers import ErrorSerializer
from delivery.api.views import TenantScoped
from delivery.event_queries import EventFilter, InvalidCursor, Position, page, walk
from delivery.models import Event, EventType
from domains.names import InvalidDomain, normalize_domain

DEFAULT_LIMIT = 50
MAX_LIMIT = 500

# -- query parameters ------------------------------------------------------------------------


UNENCODED_PLUS = re.compile(r"(\d\d:\d\d(?::\d\d(?:\.\d+)?)?) (\d\d(?::?\d\d)?)$")


class TimestampField(serializers.DateTimeField):
    """ISO 8601; a timestamp without an offset is UTC.

    An unencoded "+01:00" in a query string arrives as " 01:00"; it is read as meant.
    """

    def to_internal_value(self, value):
        if isinstance(value, str):
            value = UNENCODED_PLUS.sub(r"\1+\2", value.strip())
        return super().to_internal_value(value)


@extend_schema_field({"type": "array", "items": {"type": "string", "enum": EventType.values}})
class EventTypesField(serializers.ListField):
    """One or more event types: repeated (type=a&type=b) or comma-separated (type=a,b)."""

    child = serializers.CharField()

    def to_internal_value(self, data) -> frozenset[EventType]:
        names = [
            part.strip() for item in super().to_internal_value(data) for part in item.split(",")
        ]
        unknown = [name for name in names if name and name not in EventType.values]
        if unknown:
            raise serializers.ValidationError(
                f"Unknown event type {unknown[0]!r}; one of: {', '.join(EventType.values)}."
            )
        return frozenset(EventType(name) for name in names if name)


class EventQuerySerializer(serializers.Serializer):
    """The filters both endpoints take; every one given must match (AND)."""

    type = EventTypesField(
        required=False,
        help_text="Event types, repeated or comma-separated, e.g. delivered,bounced.",
    )
    message = serializers.CharField(
        required=False, max_length=32, help_text="A message's queue id."
    )
    recipient = serializers.CharField(
        required=False, max_length=320, help_text="A recipient address (any letter case)."
    )
    recipient_id = serializers.IntegerField(
        required=False, min_value=1, max_value=2**63 - 1, help_text="A recipient's id."
    )
    domain = serializers.CharField(
        required=False, max_length=253, help_text="The sending domain of the message."
    )
    since = TimestampField(
        required=False, help_text="Events at or after this time (ISO 8601; UTC if no offset)."
    )
    until = TimestampField(
        required=False, help_text="Events before this time (ISO 8601; UTC if no offset)."
    )

    def validate_domain(self, value: str) -> str:
        try:
            return normalize_domain(value)
        except InvalidDomain as exc:
            raise serializers.ValidationError(str(exc)) from None

    def validate(self, data: dict) -> dict:
        since, until = data.get("since"), data.get("until")
        if since is not None and until is not None and until <= since:
            raise serializers.ValidationError({"until": "until must be later than since."})
        return data

    def event_filter(self) -> EventFilter:
        data = self.validated_data
        return EventFilter(
            types=data.get("type"),
            queue_id=data.get("message"),
            recipient_address=data.get("recipient"),
            recipient_id=data.get("recipient_id"),
            domain=data.get("domain"),
            since=data.get("since"),
            until=data.get("until"),
        )


class EventListQuerySerializer(EventQuerySerializer):
    cursor = serializers.CharField(
        required=False,
        max_length=200,
        help_text="Where to go on from: a `cursor` (or the `next` link) of an earlier page.",
    )
    limit = serializers.IntegerField(
        required=False,
        min_value=1,
        default=DEFAULT_LIMIT,
        help_text=f"Events per page (default {DEFAULT_LIMIT}, at most {MAX_LIMIT}).",
    )

    def validate_cursor(self, value: str) -> Position:
        try:
            return Position.decode(value)
        except InvalidCursor as exc:
            raise serializers.ValidationError(str(exc)) from None

    def validate_limit(self, value: int) -> int:
        return min(value, MAX_LIMIT)


class ExportFormat:
    JSONL = "jsonl"
    CSV = "csv"


class EventExportQuerySerializer(EventQuerySerializer):
    format = serializers.ChoiceField(
        choices=[ExportFormat.JSONL, ExportFormat.CSV],
        default=ExportFormat.JSONL,
        help_text="jsonl: one event (the Event schema) per line; csv: one event per row.",
    )
    since = TimestampField(help_text="Start of the range, inclusive (ISO 8601; UTC if no offset).")
    until = TimestampField(
        required=False,
        help_text="End of the range, exclusive (ISO 8601; UTC if no offset). Default: now.",
    )

    def validate(self, data: dict) -> dict:
        data = super().validate(data)
        # A fixed end: events written while the export streams are not part of it.
        data.setdefault("until", timezone.now())
        return data


def _query(serializer_class: type[EventQuerySerializer], request) -> EventQuerySerializer:
    query = serializer_class(data=request.query_params)
    query.is_valid(raise_exception=True)
    return query


# -- responses -------------------------------------------------------------------------------


class EventPageSerializer(serializers.Serializer):
    results = EventSerializer(many=True, help_text="Oldest first: by created_at, then id.")
    next = serializers.URLField(
        allow_null=True, help_text="The next page, or null when there are no more events yet."
    )
    cursor = serializers.CharField(
        allow_null=True,
        help_text=(
            "Position after this page's last event. Pass it back as ?cursor= with the same "
            "filters to get only events after it, also later to follow new events."
        ),
    )


ERRORS = {
    400: OpenApiResponse(ErrorSerializer, description="A bad filter value: see error.field."),
    401: OpenApiResponse(ErrorSerializer, description="No valid API key."),
}


class EventViewMixin(TenantScoped):
    model = Event

    def events(self):
        return self.tenant_queryset().select_related(*EVENT_RELATED)


class EventListView(EventViewMixin, APIView):
    @extend_schema(
        operation_id="list_events",
        summary="List events",
        description=(
            "The tenant's events, oldest first, filtered. Follow `next` to walk them all: "
            "each event appears exactly once, even while new events are written (they "
            "come on later pages)."
        ),
        parameters=[EventListQuerySerializer],
        responses={200: EventPageSerializer, **ERRORS},
    )
    def get(self, request):
        query = _query(EventListQuerySerializer, request)
        found = page(
            query.event_filter().apply(self.events()),
            position=query.validated_data.get("cursor"),
            limit=query.validated_data["limit"],
        )
        cursor = found.position.encode() if found.position else None
        return Response(
            {
                "results": EventSerializer(found.events, many=True).data,
                "next": (
                    replace_query_param(request.build_absolute_uri(), "cursor", cursor)
                    if found.more
                    else None
                ),
                "cursor": cursor,
            }
        )


class EventExportView(EventViewMixin, APIView):
    def perform_content_negotiation(self, request, force=False):
        # The export reads ?format= itself and streams that; only errors go through a
        # renderer, and they are JSON as everywhere in the API (DRF would answer an
        # unknown ?format= with 404 before the view could say 400).
        renderer = JSONRenderer()
        return renderer, renderer.media_type

    @extend_schema(
        operation_id="export_events",
        summary="Export events of a time range",
        description=(
            "Streams every event from `since` (inclusive) to `until` (exclusive) that "
            "matches the filters, oldest first. jsonl: one Event object per line, as the "
            "list returns them. csv: a header row, then one row per event; nested fields "
            "become dotted columns (message.id, recipient.address, reply.code …), lists "
            "and objects are JSON, null is empty, and a cell that a spreadsheet would run "
            "as a formula (starting with = + - @) gets a leading '."
        ),
        parameters=[EventExportQuerySerializer],
        responses={
            (200, "application/x-ndjson"): OpenApiResponse(
                EventSerializer, description="One Event per line."
            ),
            (200, "text/csv"): OpenApiResponse(OpenApiTypes.STR, description="CSV, RFC 4180."),
            **ERRORS,
        },
    )
    def get(self, request):
        query = _query(EventExportQuerySerializer, request)
        chunks = walk(query.event_filter().apply(self.events()))
        export_format = query.validated_data["format"]
        if export_format == ExportFormat.CSV:
            body, content_type = csv_lines(chunks), "text/csv; charset=utf-8"
        else:
            body, content_type = jsonl_lines(chunks), "application/x-ndjson; charset=utf-8"
        response = StreamingHttpResponse(body, content_type=content_type)
        response["Content-Disposition"] = f'attachment; filename="events.{export_format}"'
        return response


# -- export formats --------------------------------------------------------------------------


def jsonl_lines(chunks: Iterable[list[Event]]) -> Iterator[str]:
    """One JSON object a line, exactly as the list serializes each event."""
    for chunk in chunks:
        yield "".join(
            json.dumps(row, cls=JSONEncoder, ensure_ascii=False, separators=(",", ":")) + "\n"
            for row in EventSerializer(chunk, many=True).data
        )


def csv_columns() -> list[str]:
    """The event's fields, with each nested object's fields as dotted columns."""
    columns = []
    for name, field in EventSerializer().fields.items():
        nested = EventReplySerializer() if name == "reply" else field  # reply is a method
        if isinstance(nested, serializers.Serializer):
            columns += [f"{name}.{sub}" for sub in nested.fields]
        else:
            columns.append(name)
    return columns


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list | dict):
        value = json.dumps(value, cls=JSONEncoder, ensure_ascii=False, separators=(",", ":"))
    value = str(value)
    # A remote server's reply text or a subject must not become a formula in a
    # spreadsheet (CSV injection): such a cell is quoted as text.
    return "'" + value if value.startswith(FORMULA_STARTS) else value


def csv_row(data: dict, columns: list[str]) -> list[str]:
    row = []
    for column in columns:
        name, _, sub = column.partition(".")
        value = data.get(name)
        if sub:
            value = None if value is None else value.get(sub)
        row.append(csv_cell(value))
    return row


class _Line:
    """What csv.writer writes to: each writerow() returns its line instead of storing it."""

    def write(self, line: str) -> str:
        return line


def csv_lines(chunks: Iterable[list[Event]]) -> Iterator[str]:
    columns = csv_columns()
    writer = csv.writer(_Line())
    yield writer.writerow(columns)
    for chunk in chunks:
        yield "".join(
            writer.writerow(csv_row(row, columns)) for row in EventSerializer(chunk, many=True).data
        )
