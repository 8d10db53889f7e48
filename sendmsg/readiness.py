"""Whether this process can serve: its database answers and its schema is current."""

from __future__ import annotations

from django.db import DEFAULT_DB_ALIAS, DatabaseError, connections
from django.db.migrations.executor import MigrationExecutor

_migrated = False  # once current, a running process's schema stays current


def problems() -> list[str]:
    """What stands in the way, in words (empty: ready)."""
    global _migrated
    connection = connections[DEFAULT_DB_ALIAS]
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
        if not _migrated:
            executor = MigrationExecutor(connection)
            pending = executor.migration_plan(executor.loader.graph.leaf_nodes())
            if pending:
                return [f"{len(pending)} migration(s) not applied: run manage.py migrate"]
            _migrated = True
    except DatabaseError as exc:
        return [f"database unavailable: {type(exc).__name__}"]
    return []
