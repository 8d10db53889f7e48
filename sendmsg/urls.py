from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from sendmsg import health_views

urlpatterns = [
    path("healthz", health_views.healthz, name="healthz"),
    path("readyz", health_views.readyz, name="readyz"),
    path("metrics", health_views.prometheus, name="metrics"),
    path("admin/", admin.site.urls),
    path("login/", auth_views.LoginView.as_view(), name="login"),
    path("account/", include("domains.account_urls")),  # sign-up, password reset, invitations
    path("team/", include("domains.team_urls")),
    path("audit/", include("domains.audit_urls")),
    path("settings/", include("domains.settings_urls")),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    # reputation's part of the API is mounted here: delivery does not import reputation.
    path("api/v1/suppressions/", include("reputation.api_urls")),
    path("api/v1/", include("delivery.api.urls")),
    path("credentials/", include("delivery.urls")),
    path("webhooks/", include("delivery.webhooks.urls")),
    path("messages/", include("delivery.log_urls")),
    path("suppressions/", include("reputation.urls")),
    path("reputation/", include("reputation.page_urls")),
    path("u/", include("reputation.unsubscribe_urls")),  # one-click unsubscribe (RFC 8058)
    path("", include("domains.public_urls")),
    path("", include("domains.urls")),
]
