"""Bench-only urlconf: every route of sendmsg.urls, plus two baselines for
bench/api_send.py:

- /bench/bare/, the framework's ceiling: a DRF APIView with no authentication, no
  permission checks and no parsing that answers 201 with a small JSON body;
- /bench/commit/, the floor cost of "201 means stored": the same view, but it parses the
  JSON body and stores it in one row of its own table with one commit, on the platform's
  database and its settings (SQLite WAL, synchronous=FULL).
"""

import json

from django.db import connection, transaction
from django.urls import include, path
from rest_framework.response import Response
from rest_framework.views import APIView


class BareView(APIView):
    authentication_classes: list = []
    permission_classes: list = []

    def post(self, request, *args, **kwargs):
        return Response({"id": "bare", "status": "accepted"}, status=201)


class CommitView(BareView):
    table_ready = False

    def post(self, request, *args, **kwargs):
        if not CommitView.table_ready:
            with connection.cursor() as cursor:
                cursor.execute(
                    "CREATE TABLE IF NOT EXISTS bench_sink (id INTEGER PRIMARY KEY, body TEXT)"
                )
            CommitView.table_ready = True
        body = json.dumps(request.data)
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("INSERT INTO bench_sink (body) VALUES (%s)", [body])
            row_id = cursor.lastrowid
        return Response({"id": row_id, "status": "accepted"}, status=201)


urlpatterns = [
    path("bench/bare/", BareView.as_view(), name="bench-bare"),
    path("bench/commit/", CommitView.as_view(), name="bench-commit"),
    path("", include("sendmsg.urls")),
]
