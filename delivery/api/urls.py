from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework.routers import DefaultRouter

from delivery.api.credential_views import ApiKeyViewSet, SmtpCredentialViewSet
from delivery.api.domain_views import DomainViewSet
from delivery.api.event_views import EventExportView, EventListView
from delivery.api.postal import PostalSendMessageView, PostalSendRawView
from delivery.api.send_views import BatchSendView, RawSendView, SendView
from delivery.api.views import MessageViewSet
from delivery.api.webhook_views import WebhookEndpointViewSet
from domains.public_views import PublicCheckView

router = DefaultRouter()
router.register("domains", DomainViewSet, basename="domain")
router.register("messages", MessageViewSet, basename="message")
router.register("smtp-credentials", SmtpCredentialViewSet, basename="smtp-credential")
router.register("api-keys", ApiKeyViewSet, basename="api-key")
router.register("webhooks", WebhookEndpointViewSet, basename="webhook")

urlpatterns = [
    path(
        "schema/",
        SpectacularAPIView.as_view(authentication_classes=[], permission_classes=[]),
        name="schema",
    ),
    path(
        "docs/",
        SpectacularSwaggerView.as_view(
            url_name="schema", authentication_classes=[], permission_classes=[]
        ),
        name="api-docs",
    ),
    path("public/check/", PublicCheckView.as_view(), name="public-check"),
    path("send/", SendView.as_view(), name="send"),
    path("send/batch/", BatchSendView.as_view(), name="send-batch"),
    path("send/mime/", RawSendView.as_view(), name="send-mime"),
    # Postal's paths, without a trailing slash as in Postal
    path("send/message", PostalSendMessageView.as_view(), name="postal-send-message"),
    path("send/raw", PostalSendRawView.as_view(), name="postal-send-raw"),
    path("events/", EventListView.as_view(), name="event-list"),
    path("events/export/", EventExportView.as_view(), name="event-export"),
    path("", include(router.urls)),
]
