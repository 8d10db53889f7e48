"""REST API views: each reads through the key's tenant, so other tenants' rows are 404."""

from rest_framework import viewsets

from delivery.api.serializers import MessageSerializer
from delivery.models import Message


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
