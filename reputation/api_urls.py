"""API URLs of the suppression list, mounted at /api/v1/suppressions/ by the project.

Entries are addressed by their address; the list's own paths come first, so only a path
that is none of them is read as an address (which always has an "@").
"""

from django.urls import path, re_path

from reputation import api_views

urlpatterns = [
    path("", api_views.SuppressionListView.as_view(), name="suppression-list"),
    path("import/", api_views.SuppressionImportView.as_view(), name="suppression-import"),
    path("export/", api_views.SuppressionExportView.as_view(), name="suppression-export"),
    # An address may hold a "/" (it is atext): the route takes everything up to the last.
    re_path(
        r"^(?P<address>[^/].*)/$",
        api_views.SuppressionDetailView.as_view(),
        name="suppression-detail",
    ),
]
