"""Dashboard URL of the Reputation page, mounted at /reputation/."""

from django.urls import path

from reputation import page_views

app_name = "reputation"
urlpatterns = [
    path("", page_views.reputation, name="page"),
]
