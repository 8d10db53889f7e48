"""The tenant's Settings page, mounted at /settings/."""

from django.urls import path

from domains import settings_views

app_name = "settings"
urlpatterns = [
    path("", settings_views.settings_page, name="page"),
]
