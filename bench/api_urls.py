"""Bench-only urlconf: every route of sendmsg.urls, plus /bench/bare/, the framework's
ceiling for bench/api_send.py — a DRF APIView with no authentication, no permission
checks and no parsing that answers 201 with a small JSON body."""

from django.urls import include, path
from rest_framework.response import Response
from rest_framework.views import APIView


class BareView(APIView):
    authentication_classes: list = []
    permission_classes: list = []

    def post(self, request, *args, **kwargs):
        return Response({"id": "bare", "status": "accepted"}, status=201)


urlpatterns = [
    path("bench/bare/", BareView.as_view(), name="bench-bare"),
    path("", include("sendmsg.urls")),
]
