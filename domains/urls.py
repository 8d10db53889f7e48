from django.urls import path

from domains import views

app_name = "dashboard"
urlpatterns = [
    path("", views.overview, name="overview"),
    path("domains/<int:pk>/", views.domain_detail, name="domain"),
    path("switch/", views.switch, name="switch"),
]
