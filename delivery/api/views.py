"""REST API views: each reads through the key's tenant, so other tenants' rows are 404."""

from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from delivery import queue_control
from delivery.api.errors import ApiError
from delivery.api.send_serializers import ErrorSerializer
from delivery.api.serializers import CancelResultSerializer, MessageSerializer
from delivery.models import Message, Recipient


class TenantScoped:
    """Querysets start from the API key's tenant; schema generation sees an empty one."""

    model = None

    def tenant_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return self.model.objects.none()
        return self.model.objects.filter(tenant=self.request.auth.tenant)


class MessageViewSet(TenantScoped, viewsets.ReadOnlyModelViewSet):
    model = Message
    serializer_class = MessageSerializer
    lookup_field = "queue_id"

    def get_queryset(self):
        return self.tenant_queryset().prefetch_related("recipients__events")

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
        outcome = queue_control.apply(
            queue_control.Action.CANCEL, Recipient.objects.filter(message=message)
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
