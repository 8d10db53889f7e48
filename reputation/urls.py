"""Dashboard URLs of the suppression list, mounted at /suppressions/."""

from django.urls import path

from reputation import views

app_name = "suppressions"
urlpatterns = [
    path("", views.suppression_list, name="list"),
    path("import/", views.suppression_import, name="import"),
    path("export/", views.suppression_export, name="export"),
    path("<int:pk>/remove/", views.suppression_remove, name="remove"),
]
