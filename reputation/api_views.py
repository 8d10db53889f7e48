"""The suppression list over the API: list and search, add one, read or remove one by its
address, import many (CSV or JSON), export all as CSV. Thin adapters over
reputation.suppressions; entries are addressed by their address, so another tenant's
entry for the same address is simply not found (404)."""

from __future__ import annotations

import io

from django.http import StreamingHttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.generics import GenericAPIView
from rest_framework.parsers import BaseParser, JSONParser, MultiPartParser
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from delivery.api.errors import ApiError
from delivery.api.send_serializers import ErrorSerializer
from domains.models import Tenant
from domains.roles import Capability
from reputation import suppression_changes as changes
from reputation import suppressions
from reputation.models import Suppression, SuppressionReason
from reputation.suppression_csv import export_lines, read_csv
from reputation.suppressions import ImportRow, ImportTooLarge, SuppressionError

# -- shapes --------------------------------------------------------------------------------


class SuppressionSerializer(serializers.ModelSerializer):
    address = serializers.CharField(
        read_only=True, help_text="Lower case, the domain in its ASCII (IDNA) form."
    )

    class Meta:
        model = Suppression
        fields = ["address", "reason", "note", "created_at"]
        read_only_fields = fields


class SuppressionAddSerializer(serializers.Serializer):
    address = serializers.CharField(
        max_length=320, help_text="Any letter case; a Unicode domain is stored in ASCII form."
    )
    note = serializers.CharField(
        max_length=suppressions.MAX_NOTE,
        required=False,
        allow_blank=True,
        default="",
        help_text="Why, for you and your colleagues; one line.",
    )


class SuppressionQuerySerializer(serializers.Serializer):
    q = serializers.CharField(
        required=False, allow_blank=True, max_length=320, help_text="Part of an address."
    )
    reason = serializers.ChoiceField(
        choices=SuppressionReason.choices,
        required=False,
        help_text="Only entries added for this reason.",
    )


class InvalidRowSerializer(serializers.Serializer):
    row = serializers.IntegerField(
        source="number", help_text="The line of the CSV file, or the position in the JSON array."
    )
    value = serializers.CharField(help_text="The address as given (at most 100 characters).")
    reason = serializers.CharField(help_text="Why it was not added.")


class ImportResultSerializer(serializers.Serializer):
    added = serializers.IntegerField()
    already_present = serializers.IntegerField(
        help_text="Listed before, or earlier in the same import; left as they were."
    )
    invalid = serializers.SerializerMethodField(help_text="Rows not added: see invalid_rows.")
    invalid_rows = InvalidRowSerializer(source="invalid", many=True)

    def get_invalid(self, result: suppressions.ImportResult) -> int:
        return len(result.invalid)


class CsvBodyParser(BaseParser):
    """A CSV file sent as the request body (``Content-Type: text/csv``): its bytes."""

    media_type = "text/csv"

    def parse(self, stream, media_type=None, parser_context=None) -> bytes:
        return stream.read()


ERRORS = {
    400: OpenApiResponse(ErrorSerializer, description="Bad input: see error.field."),
    401: OpenApiResponse(ErrorSerializer, description="No valid API key."),
}
NOT_FOUND = {
    404: OpenApiResponse(ErrorSerializer, description="Not on your suppression list."),
}
ADDRESS = OpenApiParameter(
    "address",
    OpenApiTypes.STR,
    OpenApiParameter.PATH,
    description="The address, in any letter case; a / in it is sent as %2F.",
)


def actor_of(request: Request) -> str:
    """Who made a change, for the log: the API key's prefix (never the key)."""
    return f"api key {request.auth.prefix}"


def tenant_of(request: Request) -> Tenant:
    return request.auth.tenant


def query_of(request: Request) -> dict:
    query = SuppressionQuerySerializer(data=request.query_params)
    query.is_valid(raise_exception=True)
    return {
        "query": query.validated_data.get("q", ""),
        "reason": query.validated_data.get("reason", ""),
    }


def refusal(exc: SuppressionError) -> ApiError:
    if isinstance(exc, ImportTooLarge):
        return ApiError("import_too_large", exc.message)
    code = "invalid_address" if exc.field == "address" else "invalid_request"
    return ApiError(code, exc.message, field=exc.field)


# -- views ---------------------------------------------------------------------------------


class SuppressionListView(GenericAPIView):
    serializer_class = SuppressionSerializer
    capability = Capability.MANAGE_SUPPRESSIONS

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return Suppression.objects.none()
        return suppressions.entries(tenant=tenant_of(self.request))

    @extend_schema(
        operation_id="list_suppressions",
        summary="List the suppression list",
        description=(
            "Your suppressed addresses, newest first: mail to them is not sent (each "
            "recipient ends as `suppressed`). Entries come from hard bounces, complaints, "
            "unsubscribes and your own additions and imports (reason `manual`)."
        ),
        parameters=[SuppressionQuerySerializer],
        responses={200: SuppressionSerializer(many=True), **ERRORS},
    )
    def get(self, request: Request) -> Response:
        rows = suppressions.entries(tenant=tenant_of(request), **query_of(request))
        page = self.paginate_queryset(rows)
        return self.get_paginated_response(SuppressionSerializer(page, many=True).data)

    @extend_schema(
        operation_id="add_suppression",
        summary="Suppress an address",
        description=(
            "Adds the address with reason `manual`: 201 with the new entry. An address "
            "already on the list is left as it is (reason, note and date kept): 200 with "
            "the existing entry. Either way the next message to it is not sent."
        ),
        request=SuppressionAddSerializer,
        responses={
            201: OpenApiResponse(SuppressionSerializer, description="Added."),
            200: OpenApiResponse(SuppressionSerializer, description="Already on the list."),
            **ERRORS,
        },
    )
    def post(self, request: Request) -> Response:
        form = SuppressionAddSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        tenant = tenant_of(request)
        try:
            entry, created = changes.add(
                request,
                tenant=tenant,
                address=form.validated_data["address"],
                note=form.validated_data["note"],
                actor=actor_of(request),
            )
        except SuppressionError as exc:
            raise refusal(exc) from None
        return Response(
            SuppressionSerializer(entry).data,
            status=status.HTTP_201_CREATED if created else status.HTTP_200_OK,
        )


class SuppressionDetailView(APIView):
    capability = Capability.MANAGE_SUPPRESSIONS

    def entry(self, request: Request, address: str) -> Suppression:
        entry = suppressions.find(tenant=tenant_of(request), address=address)
        if entry is None:
            raise ApiError("not_found", f"{address} is not on your suppression list.")
        return entry

    @extend_schema(
        operation_id="get_suppression",
        summary="Is this address suppressed?",
        parameters=[ADDRESS],
        responses={200: SuppressionSerializer, 401: ERRORS[401], **NOT_FOUND},
    )
    def get(self, request: Request, address: str) -> Response:
        return Response(SuppressionSerializer(self.entry(request, address)).data)

    @extend_schema(
        operation_id="remove_suppression",
        summary="Remove an address from the list",
        description="Whatever its reason: the next message to the address is sent again.",
        parameters=[ADDRESS],
        responses={204: None, 401: ERRORS[401], **NOT_FOUND},
    )
    def delete(self, request: Request, address: str) -> Response:
        entry = self.entry(request, address)
        changes.remove(request, tenant=tenant_of(request), entry=entry, actor=actor_of(request))
        return Response(status=status.HTTP_204_NO_CONTENT)


class SuppressionImportView(APIView):
    parser_classes = [JSONParser, MultiPartParser, CsvBodyParser]
    capability = Capability.MANAGE_SUPPRESSIONS

    @extend_schema(
        operation_id="import_suppressions",
        summary="Import addresses",
        description=(
            "Adds many addresses (reason `manual`) in one transaction. Send a CSV file as "
            "the multipart field `file` or as a `text/csv` body: a header line naming an "
            "`address` column (and maybe `note`; other columns, such as an export's, are "
            "ignored), or one address a line. Or send a JSON array of addresses or of "
            '`{"address", "note"}` objects. At most SENDMSG_SUPPRESSION_IMPORT_ROWS rows '
            "(100,000 by default) and 1 KiB per row: more is 413 and nothing is added. A "
            "file that cannot be read (not UTF-8, no address column) is 400 and nothing is "
            "added. Invalid addresses are skipped and listed with their row."
        ),
        request={
            "multipart/form-data": {
                "type": "object",
                "properties": {"file": {"type": "string", "format": "binary"}},
                "required": ["file"],
            },
            "text/csv": OpenApiTypes.STR,
            "application/json": {
                "type": "array",
                "items": {
                    "oneOf": [
                        {"type": "string"},
                        {
                            "type": "object",
                            "properties": {
                                "address": {"type": "string"},
                                "note": {"type": "string"},
                            },
                            "required": ["address"],
                        },
                    ]
                },
            },
        },
        examples=[
            OpenApiExample(
                "JSON",
                value=["alice@example.com", {"address": "bob@example.com", "note": "asked"}],
                request_only=True,
                media_type="application/json",
            )
        ],
        responses={
            200: ImportResultSerializer,
            **ERRORS,
            413: OpenApiResponse(ErrorSerializer, description="Over the import limit."),
        },
    )
    def post(self, request: Request) -> Response:
        try:
            suppressions.check_size(_content_length(request))  # before the body is read
            rows = self.rows(request)
            result = changes.import_rows(
                request,
                tenant=tenant_of(request),
                rows=rows,
                actor=actor_of(request),
                source=f"{len(rows)} rows",
            )
        except SuppressionError as exc:
            raise refusal(exc) from None
        return Response(ImportResultSerializer(result).data)

    def rows(self, request: Request) -> list[ImportRow]:
        data = request.data
        if isinstance(data, bytes):
            return read_csv(io.BytesIO(data), limit=suppressions.import_limit())
        if isinstance(data, list):
            return suppressions.rows_from_json(data)
        upload = request.FILES.get("file")
        if upload is None:
            raise SuppressionError(
                "Send a CSV file as the multipart field “file” or as a text/csv body, or a "
                "JSON array of addresses.",
                field="file",
            )
        suppressions.check_size(upload.size)
        return read_csv(upload, limit=suppressions.import_limit())


def _content_length(request: Request) -> int:
    try:
        return int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return 0


class SuppressionExportView(APIView):
    def perform_content_negotiation(self, request, force=False):
        # The body is always CSV; only errors go through a renderer, as JSON.
        renderer = JSONRenderer()
        return renderer, renderer.media_type

    @extend_schema(
        operation_id="export_suppressions",
        summary="Export the suppression list as CSV",
        description=(
            "Streams every entry (or those matching q and reason), by address: a header "
            "line `address,reason,note,created_at`, then one line per entry, created_at in "
            "ISO 8601 UTC. A cell a spreadsheet would run as a formula gets a leading '. "
            "The file imports back as it is."
        ),
        parameters=[SuppressionQuerySerializer],
        responses={
            (200, "text/csv"): OpenApiResponse(OpenApiTypes.STR, description="CSV, RFC 4180."),
            **ERRORS,
        },
    )
    def get(self, request: Request) -> StreamingHttpResponse:
        chunks = suppressions.export_chunks(tenant=tenant_of(request), **query_of(request))
        response = StreamingHttpResponse(
            export_lines(chunks), content_type="text/csv; charset=utf-8"
        )
        response["Content-Disposition"] = 'attachment; filename="suppressions.csv"'
        return response
