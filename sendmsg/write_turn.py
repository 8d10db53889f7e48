"""Writers of one SQLite database take turns through a lock file beside it.

SQLite lets one writer in at a time. A writer that finds the database locked sleeps in
SQLite's busy handler (1, 2, 5, 10, ... up to 100 ms a try), so under load the writers of
different processes (the listeners' group commits, the delivery workers' claims and
outcomes) lose most of their time sleeping past the moment the lock was free. Each of
those write transactions holds an flock on ``<database>.write-lock`` instead: the next
writer wakes as soon as the previous one has committed. Re-entrant within a thread;
nothing to do on PostgreSQL or an in-memory database.

The turn is taken before the transaction begins, never inside one: a transaction that
holds SQLite's lock while it waits for the turn, and a writer that holds the turn while
it waits for SQLite's lock, would wait on each other until the busy timeout. Inside a
transaction already, write_turn() takes no turn.
"""

from __future__ import annotations

import contextlib
import fcntl
import threading
from collections.abc import Iterator
from pathlib import Path

from django.conf import settings
from django.db import connection

_held = threading.local()


def lock_path() -> Path | None:
    database = settings.DATABASES["default"]
    if not database["ENGINE"].endswith("sqlite3"):
        return None
    name = str(database["NAME"])
    if name == ":memory:" or "mode=memory" in name:
        return None
    return Path(name).with_suffix(".write-lock")


@contextlib.contextmanager
def write_turn() -> Iterator[None]:
    """Wait for this process's turn to write; hold it until the block ends."""
    path = lock_path()
    if path is None or getattr(_held, "depth", 0) or connection.in_atomic_block:
        _held.depth = getattr(_held, "depth", 0) + 1
        try:
            yield
        finally:
            _held.depth -= 1
        return
    with open(path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        _held.depth = 1
        try:
            yield
        finally:
            _held.depth = 0
            fcntl.flock(lock, fcntl.LOCK_UN)
