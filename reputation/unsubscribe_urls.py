"""Mounted at ``u/`` (sendmsg/urls.py): unsubscribe links are ``/u/<token>``, no slash."""

from django.urls import path

from reputation import unsubscribe_views

app_name = "unsubscribe"
urlpatterns = [
    path("<str:token>", unsubscribe_views.unsubscribe_page, name="page"),
]
