from django.urls import path

from domains import overview_views, views

app_name = "dashboard"
urlpatterns = [
    path("", views.overview, name="overview"),
    path("send-test/", overview_views.send_test, name="send-test"),
    path("domains/", views.domain_list, name="domains"),
    path("domains/<int:pk>/", views.domain_detail, name="domain"),
    path("domains/<int:pk>/check/", views.check_now, name="domain-check"),
    path("domains/<int:pk>/disable/", views.disable, name="domain-disable"),
    path("domains/<int:pk>/enable/", views.enable, name="domain-enable"),
    path("domains/<int:pk>/require-tls/", views.require_tls, name="domain-require-tls"),
    path("domains/<int:pk>/delete/", views.delete, name="domain-delete"),
    path("domains/<int:pk>/rotate-key/", views.rotate_key, name="domain-rotate-key"),
    path("switch/", views.switch, name="switch"),
]
