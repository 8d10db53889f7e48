"""REST API views: each reads through the key's tenant, so other tenants' rows are 404."""

from rest_framework import viewsets

from delivery.api.serializers import DomainSerializer, MessageSerializer
from delivery.models import Message
from domains.models import Domain


class DomainViewSet(viewsets.ReadOnlyModelViewSet):
    serializer_class = DomainSerializer

    def get_queryset(self):
        return Domain.objects.for_tenant(self.request.auth.tenant).prefetch_related("dkim_keys")


class MessageViewSet(viewsets.ReadOnlyModelViewSet):
    serializer_class = MessageSerializer
    lookup_field = "queue_id"

    def get_queryset(self):
        return Message.objects.filter(tenant=self.request.auth.tenant).prefetch_related(
            "recipients__events"
        )
