"""Webhook endpoints over the API: registered, listed (never with their secret), changed,
deleted; the secret is in the create and rotate-secret responses only. Each endpoint's
attempts are listed, and a test ping can be sent. Thin adapters over
delivery.webhooks.endpoints."""

from __future__ import annotations

from django.db import transaction
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response

from delivery.api.views import TenantScoped
from delivery.models import (
    WEBHOOK_EVENT_CHOICES,
    WebhookAttempt,
    WebhookDeliveryState,
    WebhookEndpoint,
)
from delivery.webhooks import endpoints
from delivery.webhooks.endpoints import WebhookError
from domains import audit
from domains.roles import Capability


class WebhookEndpointSerializer(serializers.ModelSerializer):
    url = serializers.CharField(
        max_length=2000,
        help_text="http:// or https:// URL on a public address; events are POSTed to it.",
    )
    event_types = serializers.ListField(
        child=serializers.ChoiceField(choices=WEBHOOK_EVENT_CHOICES),
        allow_empty=False,
        help_text="The event types to send; at least one.",
    )
    previous_secret_until = serializers.DateTimeField(
        read_only=True,
        allow_null=True,
        help_text="After a rotation, the previous secret also signs until then.",
    )

    class Meta:
        model = WebhookEndpoint
        fields = [
            "id",
            "url",
            "description",
            "event_types",
            "active",
            "previous_secret_until",
            "created_at",
            "updated_at",
        ]
        read_only_fields = ["id", "created_at", "updated_at"]


class NewWebhookSecretSerializer(WebhookEndpointSerializer):
    secret = serializers.CharField(
        read_only=True,
        help_text="The signing secret, shown only in this response: keep it now.",
    )

    class Meta(WebhookEndpointSerializer.Meta):
        fields = [*WebhookEndpointSerializer.Meta.fields, "secret"]


class RotateSecretSerializer(serializers.Serializer):
    keep_previous_hours = serializers.IntegerField(
        required=False,
        default=endpoints.DEFAULT_KEEP_PREVIOUS_HOURS,
        min_value=0,
        max_value=endpoints.MAX_KEEP_PREVIOUS_HOURS,
        help_text="Hours the old secret goes on signing too (a second v1); 0 stops it now.",
    )


class WebhookAttemptSerializer(serializers.ModelSerializer):
    delivery_id = serializers.IntegerField(read_only=True)
    event_id = serializers.IntegerField(
        source="delivery.event_id",
        read_only=True,
        allow_null=True,
        help_text="Null: a test, or a notice that is not a message event (see event_type).",
    )
    event_type = serializers.SerializerMethodField()
    delivery_state = serializers.ChoiceField(
        source="delivery.state", choices=WebhookDeliveryState.choices, read_only=True
    )
    next_attempt_at = serializers.SerializerMethodField(
        help_text="When the delivery is tried again, if it will be."
    )

    class Meta:
        model = WebhookAttempt
        fields = [
            "id",
            "delivery_id",
            "event_id",
            "event_type",
            "number",
            "started_at",
            "duration_ms",
            "status_code",
            "error",
            "response_excerpt",
            "succeeded",
            "delivery_state",
            "next_attempt_at",
        ]
        read_only_fields = fields

    def get_event_type(self, attempt: WebhookAttempt) -> str:
        event = attempt.delivery.event
        return event.type if event is not None else attempt.delivery.kind or "test"

    def get_next_attempt_at(self, attempt: WebhookAttempt) -> str | None:
        delivery = attempt.delivery
        if delivery.state != WebhookDeliveryState.PENDING:
            return None
        return serializers.DateTimeField().to_representation(delivery.next_attempt_at)


def _refusal(exc: WebhookError) -> ValidationError:
    return ValidationError({exc.field or "non_field_errors": [str(exc)]})


def _with_secret(endpoint: WebhookEndpoint, secret: str) -> dict:
    endpoint.secret = secret
    return NewWebhookSecretSerializer(endpoint).data


def endpoint_detail(endpoint: WebhookEndpoint) -> dict:
    """What the audit log keeps of an endpoint: never its secret."""
    return {
        "event_types": list(endpoint.event_types),
        "active": endpoint.active,
        "description": endpoint.description,
    }


class WebhookEndpointViewSet(TenantScoped, viewsets.ModelViewSet):
    model = WebhookEndpoint
    serializer_class = WebhookEndpointSerializer
    capability = Capability.MANAGE_WEBHOOKS

    def get_queryset(self):
        return self.tenant_queryset().order_by("-created_at", "-pk")

    def record(self, endpoint: WebhookEndpoint, action: str, **detail) -> None:
        audit.record(
            self.request, tenant=endpoint.tenant_id, action=action, target=endpoint.url, **detail
        )

    @extend_schema(responses={201: NewWebhookSecretSerializer})
    def create(self, request):
        form = WebhookEndpointSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        data = form.validated_data
        try:
            # The URL's DNS check runs before the first statement, so the transaction
            # holds nothing while it waits.
            with transaction.atomic():
                endpoint, secret = endpoints.create_endpoint(
                    tenant=request.auth.tenant,
                    url=data["url"],
                    event_types=data["event_types"],
                    description=data.get("description", ""),
                    active=data.get("active", True),
                )
                self.record(endpoint, "webhook.created", **endpoint_detail(endpoint))
        except WebhookError as exc:
            raise _refusal(exc) from None
        return Response(_with_secret(endpoint, secret), status=status.HTTP_201_CREATED)

    def update(self, request, pk=None, partial=False):
        endpoint = self.get_object()
        form = WebhookEndpointSerializer(endpoint, data=request.data, partial=partial)
        form.is_valid(raise_exception=True)
        data = form.validated_data
        try:
            with transaction.atomic():  # as in create: the DNS check comes first
                endpoints.update_endpoint(
                    endpoint,
                    url=data.get("url"),
                    event_types=data.get("event_types"),
                    description=data.get("description"),
                    active=data.get("active"),
                )
                self.record(endpoint, "webhook.updated", **endpoint_detail(endpoint))
        except WebhookError as exc:
            raise _refusal(exc) from None
        return Response(WebhookEndpointSerializer(endpoint).data)

    def partial_update(self, request, pk=None):
        return self.update(request, pk=pk, partial=True)

    def perform_destroy(self, endpoint: WebhookEndpoint) -> None:
        with transaction.atomic():
            self.record(endpoint, "webhook.deleted")
            endpoint.delete()

    @extend_schema(
        operation_id="webhooks_rotate_secret",
        summary="Rotate the signing secret",
        request=RotateSecretSerializer,
        responses={200: NewWebhookSecretSerializer},
    )
    @action(detail=True, methods=["post"], url_path="rotate-secret")
    def rotate_secret(self, request, pk=None):
        endpoint = self.get_object()
        form = RotateSecretSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        keep_hours = form.validated_data["keep_previous_hours"]
        try:
            with transaction.atomic():
                secret = endpoints.rotate_secret(endpoint, keep_previous_hours=keep_hours)
                self.record(endpoint, "webhook.secret_rotated", keep_previous_hours=keep_hours)
        except WebhookError as exc:
            raise _refusal(exc) from None
        return Response(_with_secret(endpoint, secret))

    @extend_schema(
        operation_id="webhooks_attempts",
        summary="Recent delivery attempts, newest first",
        responses={200: WebhookAttemptSerializer(many=True)},
    )
    @action(detail=True, methods=["get"])
    def attempts(self, request, pk=None):
        endpoint = self.get_object()
        page = self.paginate_queryset(endpoints.recent_attempts(endpoint))
        return self.get_paginated_response(WebhookAttemptSerializer(page, many=True).data)

    @extend_schema(
        operation_id="webhooks_test",
        summary="Send a test ping now",
        description=(
            'POSTs an event-shaped body with "type": "test" and "id": 0, signed like every '
            "delivery, and answers with the attempt (succeeded or not). Not retried."
        ),
        request=None,
        responses={200: WebhookAttemptSerializer},
    )
    @action(detail=True, methods=["post"])
    def test(self, request, pk=None):
        endpoint = self.get_object()
        # An HTTP request to the tenant's URL: recorded after it, never inside a transaction.
        attempt = endpoints.send_test(endpoint)
        self.record(
            endpoint,
            "webhook.test_sent",
            succeeded=attempt.succeeded,
            status_code=attempt.status_code,
        )
        return Response(WebhookAttemptSerializer(attempt).data)
