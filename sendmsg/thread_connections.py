"""Database connections of long-lived worker threads (the SMTP listeners' database
threads): checked as Django checks a request's, but at most once a second.

``close_old_connections()`` drops a connection that is too old or broke, and with
CONN_HEALTH_CHECKS makes the next query begin with a health check (``SELECT 1``: a round
trip on PostgreSQL). Run before every call of a thread that serves hundreds a second, it
adds a round trip to each; checked once a second instead, a connection that has just
broken fails that second's calls with a temporary error (451), then is replaced.
"""

from __future__ import annotations

import threading
import time

from django.db import close_old_connections

CHECK_SECONDS = 1.0

_checked = threading.local()


def refresh() -> None:
    """close_old_connections() for this thread, unless done less than a second ago."""
    now = time.monotonic()
    if now - getattr(_checked, "at", -CHECK_SECONDS) >= CHECK_SECONDS:
        close_old_connections()
        _checked.at = now
