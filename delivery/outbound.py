"""Connections to MX hosts kept open between messages, as Postfix's connection cache does.

A worker relays messages one after another; when consecutive messages go to the same MX
host, the connection (TCP, TLS, EHLO) of the first carries the next ones too, also from
one deliver task to the next (``kept_connections``: one cache per worker thread). A
connection is kept only after a transaction ended cleanly, for at most
SENDMSG_RELAY_REUSE_LIMIT transactions and SENDMSG_RELAY_REUSE_IDLE_SECONDS of idle time
(older ones are closed when the worker next looks), and only for the same TLS terms (the
key includes them).
"""

from __future__ import annotations

import contextlib
import smtplib
import threading
import time
from collections.abc import Hashable
from dataclasses import dataclass, field

from django.conf import settings


@dataclass
class Connection:
    """An open SMTP client session, ready for MAIL."""

    client: smtplib.SMTP
    host: str
    reused: bool = False
    transactions: int = 0
    idle_since: float = field(default_factory=time.monotonic)

    def close(self) -> None:
        try:
            self.client.quit()
        except (OSError, smtplib.SMTPException):
            self.client.close()


class ConnectionCache:
    """Idle connections by key (address, port, TLS terms); one per key is enough, since a
    task sends one message at a time."""

    def __init__(self) -> None:
        self._idle: dict[Hashable, Connection] = {}

    def take(self, key: Hashable) -> Connection | None:
        self.prune()
        connection = self._idle.pop(key, None)
        if connection is not None:
            connection.reused = True
        return connection

    def prune(self) -> None:
        """Close the connections idle for longer than SENDMSG_RELAY_REUSE_IDLE_SECONDS."""
        limit = time.monotonic() - settings.SENDMSG_RELAY_REUSE_IDLE_SECONDS
        for key, connection in list(self._idle.items()):
            if connection.idle_since < limit:
                del self._idle[key]
                with contextlib.suppress(Exception):
                    connection.close()

    def give(self, key: Hashable, connection: Connection) -> None:
        """Keep a connection whose last transaction ended cleanly, or close it."""
        connection.transactions += 1
        if connection.transactions >= settings.SENDMSG_RELAY_REUSE_LIMIT:
            connection.close()
            return
        connection.idle_since = time.monotonic()
        previous = self._idle.pop(key, None)
        if previous is not None:
            previous.close()
        self._idle[key] = connection

    def close(self) -> None:
        for connection in self._idle.values():
            with contextlib.suppress(Exception):
                connection.close()
        self._idle.clear()

    def __enter__(self) -> ConnectionCache:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


_local = threading.local()


def kept_connections() -> ConnectionCache:
    """This worker thread's kept connections (stale ones closed)."""
    cache = getattr(_local, "cache", None)
    if cache is None:
        cache = _local.cache = ConnectionCache()
    cache.prune()
    return cache
