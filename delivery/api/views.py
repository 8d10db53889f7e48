"""REST API views: each reads through the key's tenant, so other tenants' rows are 404."""

from django.db import transaction
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import viewsets
from rest_framework.decorators import action
from rest_framework.pagination import LimitOffsetPagination
from rest_framework.response import Response
from rest_framework.utils.urls import replace_query_param

from delivery import message_log, queue_control
from delivery.api.errors import ApiError
from delivery.api.message_serializers import MessageDetailSerializer, MessageSummarySerializer
from delivery.api.send_serializers import ErrorSerializer
from delivery.api.serializers import CancelResultSerializer, MessageSerializer
from delivery.models import Message, Recipient, RecipientState
from domains import audit
from domains.roles import Capability


class TenantScoped:
    """Querysets start from the API key's tenant; schema generation sees an empty one."""

    model = None

    def tenant_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return self.model.objects.none()
        return self.model.objects.filter(tenant=self.request.auth.tenant)


def _filter_parameters() -> list[OpenApiParameter]:
    """The message log's filters (delivery.message_log.MessageFilterForm) as documented
    query parameters."""
    form = message_log.MessageFilterForm()
    described = {
        "status": "A recipient state: messages with at least one recipient in it. Combined "
        "with recipient or recipient_contains, the same recipient must match both.",
        "since": "Accepted at or after: an ISO 8601 date or date and time (UTC if no offset).",
        "until": "Accepted before: an ISO 8601 date and time, or a date (then that whole "
        "day is included).",
    }
    return [
        OpenApiParameter(
            name,
            OpenApiTypes.STR,
            OpenApiParameter.QUERY,
            description=described.get(name, str(field.help_text)),
            enum=RecipientState.values if name == "status" else None,
        )
        for name, field in form.fields.items()
    ]


class MessageLogPagination(LimitOffsetPagination):
    """``limit``/``offset`` pages as before, without counting every match: the page
    reads ``limit + 1`` rows to know whether ``next`` exists, and ``count`` counts at
    most COUNT_LIMIT matches (COUNT_LIMIT means "at least that many") among those
    searched. ``searched_since`` says where a filter that tests each message stopped;
    ``next`` then goes on below it."""

    searched_since = None

    def paginate_queryset(self, queryset, request, view=None):
        self.request = request
        self.limit = self.get_limit(request)
        self.offset = self.get_offset(request)
        rows = list(queryset[self.offset : self.offset + self.limit + 1])
        self.more = len(rows) > self.limit
        rows = rows[: self.limit]
        if not self.more and (rows or self.offset == 0):
            self.count = self.offset + len(rows)  # the end is on this page: exact
        else:
            self.count = queryset[: message_log.COUNT_LIMIT].count()
        self.searched_since = getattr(view, "searched_since", None)
        return rows

    def get_next_link(self):
        # Not from count, which may be capped below the rows that follow.
        url = self.request.build_absolute_uri()
        url = replace_query_param(url, self.limit_query_param, self.limit)
        if self.more:
            return replace_query_param(url, self.offset_query_param, self.offset + self.limit)
        if self.searched_since is not None:
            # The search stopped there: next searches the older messages, so a client
            # that follows next to the end gets every match, as before.
            url = replace_query_param(url, "until", self.searched_since.isoformat())
            return replace_query_param(url, self.offset_query_param, 0)
        return None

    def get_paginated_response(self, data):
        response = super().get_paginated_response(data)
        since = self.searched_since
        response.data["searched_since"] = since.isoformat() if since else None
        return response

    def get_paginated_response_schema(self, schema):
        schema = super().get_paginated_response_schema(schema)
        schema["properties"]["count"]["description"] = (
            f"Matching messages, counted up to {message_log.COUNT_LIMIT:,} "
            f"({message_log.COUNT_LIMIT:,} means at least that many)."
        )
        schema["properties"]["searched_since"] = {
            "type": "string",
            "format": "date-time",
            "nullable": True,
            "description": "Set when a filter that tests each message (recipient_contains, "
            f"tag, a status or recipient matching more than {message_log.RARE_LIMIT:,} "
            f"recipients) searched only the newest {message_log.SCAN_LIMIT:,} messages: "
            "those accepted at or after this time (count counts among them). next then "
            "searches the older ones (until set to this time).",
        }
        return schema


class MessageViewSet(TenantScoped, viewsets.ReadOnlyModelViewSet):
    """The message log: the key's tenant's messages, never their bodies."""

    model = Message
    serializer_class = MessageSerializer
    lookup_field = "queue_id"
    pagination_class = MessageLogPagination
    searched_since = None
    capability = Capability.SEND  # cancelling queued mail is a queue action

    def get_serializer_class(self):
        if self.action == "list":
            return MessageSummarySerializer
        if self.action == "retrieve":
            return MessageDetailSerializer
        return super().get_serializer_class()

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return Message.objects.none()
        tenant = self.request.auth.tenant
        if self.action == "list":
            form = message_log.MessageFilterForm(self.request.query_params)
            if not form.is_valid():
                field, message = form.first_error()
                raise ApiError("invalid_request", message, field=field)
            found = message_log.search(tenant, form.filters())
            self.searched_since = found.searched_since
            return found.messages
        if self.action == "retrieve":
            return message_log.records_for(tenant)
        return self.tenant_queryset()

    @extend_schema(
        summary="List messages",
        description=(
            "The message log, newest first, filtered by the parameters below (all "
            "optional, combined with AND). Each message lists its recipients and their "
            "states; events, attempts and headers are in the message's own record."
        ),
        parameters=_filter_parameters(),
        responses={
            200: MessageSummarySerializer(many=True),
            400: OpenApiResponse(ErrorSerializer, description="A filter is not valid."),
        },
    )
    def list(self, request, *args, **kwargs):
        return super().list(request, *args, **kwargs)

    @extend_schema(
        summary="Read a message",
        description=(
            "One message by its queue id: each recipient with its state, attempts (the "
            "receiving servers' replies) and events, the message's event timeline and its "
            "header section. The body is never returned; body_removed_at says when "
            "retention removed it."
        ),
        responses={
            200: MessageDetailSerializer,
            404: OpenApiResponse(ErrorSerializer, description="No such message."),
        },
    )
    def retrieve(self, request, *args, **kwargs):
        return super().retrieve(request, *args, **kwargs)

    @extend_schema(
        operation_id="cancel_message",
        summary="Cancel a queued message",
        description=(
            "Recipients not sent yet (queued, deferred or held) are cancelled and never "
            "sent. One being sent right now, or already final, is left as it is and "
            "listed under not_cancelled. 409 when no recipient could be cancelled."
        ),
        request=None,
        responses={
            200: CancelResultSerializer,
            409: OpenApiResponse(ErrorSerializer, description="Nothing left to cancel."),
        },
    )
    @action(detail=True, methods=["post"])
    def cancel(self, request, queue_id=None):
        message = self.get_object()
        with transaction.atomic():
            outcome = queue_control.apply(
                queue_control.Action.CANCEL, Recipient.objects.filter(message=message)
            )
            if outcome.moved:
                audit.record(
                    request,
                    tenant=message.tenant_id,
                    action="message.cancelled",
                    target=message.queue_id,
                    recipients=len(outcome.moved),
                )
        if not outcome.moved:
            raise ApiError(
                "conflict",
                "Nothing to cancel: every recipient is sent, being sent or final already.",
            )
        return Response(
            {
                "id": message.queue_id,
                "cancelled": [_state(r) for r in outcome.moved],
                "not_cancelled": [_state(r) for r in outcome.left],
            }
        )


def _state(recipient: Recipient) -> dict:
    return {"id": recipient.pk, "address": recipient.address, "state": recipient.state}
