"""The audit log page, mounted at /audit/."""

from django.urls import path

from domains import audit_views

app_name = "audit"
urlpatterns = [
    path("", audit_views.audit_list, name="list"),
]
