"""Dashboard URLs for webhook endpoints, mounted at /webhooks/."""

from django.urls import path

from delivery.webhooks import views

app_name = "webhooks"
urlpatterns = [
    path("", views.endpoint_list, name="list"),
    path("<int:pk>/", views.endpoint_detail, name="detail"),
    path("<int:pk>/rotate-secret/", views.rotate_secret, name="rotate-secret"),
    path("<int:pk>/test/", views.send_test, name="test"),
    path("<int:pk>/delete/", views.delete, name="delete"),
]
