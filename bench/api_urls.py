"""Bench-only urlconf: every route of sendmsg.urls, plus two baselines for
bench/api_send.py:

- /bench/bare/, the framework's ceiling: a DRF APIView with no authentication, no
  permission checks and no parsing that answers 201 with a small JSON body;
- /bench/commit/, the floor cost of "201 means stored": the same view, but it parses the
  JSON body and stores it in one row of its own table with one commit, on the platform's
  database and its settings (SQLite WAL, synchronous=FULL; or PostgreSQL).
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


def create_sink_table() -> None:
    """The commit endpoint's table, on SQLite or PostgreSQL (bench/api_send.py creates it
    before the web server starts)."""
    key = "BIGSERIAL PRIMARY KEY" if connection.vendor == "postgresql" else "INTEGER PRIMARY KEY"
    with connection.cursor() as cursor:
        cursor.execute(f"CREATE TABLE IF NOT EXISTS bench_sink (id {key}, body TEXT)")


class CommitView(BareView):
    table_ready = False

    def post(self, request, *args, **kwargs):
        if not CommitView.table_ready:
            create_sink_table()
            CommitView.table_ready = True
        body = json.dumps(request.data)
        with transaction.atomic(), connection.cursor() as cursor:
            # One statement on both databases (lastrowid is SQLite's only).
            cursor.execute("INSERT INTO bench_sink (body) VALUES (%s) RETURNING id", [body])
            row_id = cursor.fetchone()[0]
        return Response({"id": row_id, "status": "accepted"}, status=201)


urlpatterns = [
    path("bench/bare/", BareView.as_view(), name="bench-bare"),
    path("bench/commit/", CommitView.as_view(), name="bench-commit"),
    path("", include("sendmsg.urls")),
]
