"""Dashboard URLs of the message log, mounted at /messages/."""

from django.urls import path

from delivery import log_views

app_name = "message_log"
urlpatterns = [
    path("", log_views.message_list, name="list"),
    path("<str:queue_id>/", log_views.message_detail, name="detail"),
]
