"""Holding a database's write lock from another connection, as a test's outside writer."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator

import psycopg
from django.conf import settings
from django.db.models import Model

from tests.conftest import database_url


@contextlib.contextmanager
def write_lock_held(model: type[Model]) -> Iterator[str]:
    """Another connection holds the lock that writing ``model`` needs (on SQLite, the
    whole database's); yields what a writer that gave up waiting logs about it."""
    db = settings.DATABASES["default"]
    if db["ENGINE"].endswith("sqlite3"):
        lock = sqlite3.connect(db["NAME"], isolation_level=None)
        lock.execute("BEGIN IMMEDIATE")
        try:
            yield "database is locked"
        finally:
            lock.execute("ROLLBACK")
            lock.close()
        return
    with psycopg.connect(database_url().replace("postgres://", "postgresql://")) as lock:
        lock.execute(f"LOCK TABLE {model._meta.db_table} IN ACCESS EXCLUSIVE MODE")
        try:
            yield "lock timeout"
        finally:
            lock.rollback()
