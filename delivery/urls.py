"""Dashboard URLs for SMTP logins and API keys, mounted at /credentials/."""

from django.urls import path

from delivery import views

app_name = "credentials"
urlpatterns = [
    path("", views.credential_list, name="list"),
    path("smtp/", views.smtp_create, name="smtp-create"),
    path("smtp/<int:pk>/rotate/", views.smtp_rotate, name="smtp-rotate"),
    path("smtp/<int:pk>/revoke/", views.smtp_revoke, name="smtp-revoke"),
    path("api-keys/", views.api_key_create, name="api-key-create"),
    path("api-keys/<int:pk>/rotate/", views.api_key_rotate, name="api-key-rotate"),
    path("api-keys/<int:pk>/revoke/", views.api_key_revoke, name="api-key-revoke"),
]
