"""The public deliverability check page (no login). Its API route lives in delivery/api/urls.py:
``path("public/check/", PublicCheckView.as_view(), name="public-check")``."""

from django.urls import path

from domains import public_views

app_name = "public"
urlpatterns = [
    path("check/", public_views.check_page, name="check"),
]
