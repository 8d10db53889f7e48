"""What every aiosmtpd handler of the platform shares: database calls off the event loop,
and an error reply that is temporary and tells nothing about our internals."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import cache, wraps
from typing import Any, TypeVar

from aiosmtpd.smtp import SMTP
from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import close_old_connections

log = logging.getLogger(__name__)

T = TypeVar("T")

OK = "250 2.0.0 OK"
INTERNAL_ERROR = "451 4.3.0 Temporary server error; please try again later"


@cache
def database_executor() -> ThreadPoolExecutor:
    """The threads that run a listener's database work.

    SQLite takes one writer at a time: several threads would only sleep in its busy
    handler (tens of ms each), so one thread per process serves it fastest. A server
    database gets a pool.
    """
    sqlite = settings.DATABASES["default"]["ENGINE"].endswith("sqlite3")
    return ThreadPoolExecutor(max_workers=1 if sqlite else 8, thread_name_prefix="db")


def in_thread(func: Callable[..., T]) -> Callable[..., Any]:
    """Run a blocking (ORM, DNS, hashing) function off the event loop.

    Not asgiref's default (thread_sensitive=True), where every call of every session
    queues on the one main thread whatever the database.
    """

    def call(*args: Any, **kwargs: Any) -> T:
        close_old_connections()
        return func(*args, **kwargs)

    return wraps(func)(sync_to_async(call, thread_sensitive=False, executor=database_executor()))


# RFC 3463 codes for aiosmtpd's own replies, which carry none (RFC 2034 wants one on every
# 2xx/4xx/5xx reply once ENHANCEDSTATUSCODES is offered).
DEFAULT_ENHANCED = {
    "221": "2.0.0",
    "235": "2.7.0",
    "250": "2.0.0",
    "251": "2.1.5",
    "252": "2.5.0",
    "421": "4.3.0",
    "432": "4.7.12",
    "451": "4.3.0",
    "452": "4.5.3",
    "454": "4.7.0",
    "455": "4.5.0",
    "500": "5.5.2",
    "501": "5.5.4",
    "502": "5.5.1",
    "503": "5.5.1",
    "504": "5.5.4",
    "530": "5.7.0",
    "534": "5.7.9",
    "535": "5.7.8",
    "538": "5.7.11",
    "550": "5.0.0",
    "552": "5.3.4",
    "553": "5.1.3",
    "554": "5.0.0",
    "555": "5.5.4",
}
SINGLE_LINE = re.compile(rb"^([245]\d\d) (?![245]\.\d{1,3}\.\d{1,3}\b)")


def with_enhanced_code(reply: bytes) -> bytes:
    """``reply`` with a default enhanced code if it is a final reply that lacks one."""
    match = SINGLE_LINE.match(reply)
    if not match or reply == b"250 HELP":  # the EHLO reply's last line lists no status
        return reply
    code = match.group(1).decode()
    enhanced = DEFAULT_ENHANCED.get(code)
    if enhanced is None or code == "220":
        return reply
    return reply[:4] + enhanced.encode() + b" " + reply[4:]


class PlatformSMTP(SMTP):
    """aiosmtpd's SMTP with an enhanced status code on every final reply."""

    async def push(self, status: str | bytes) -> None:
        if isinstance(status, str):
            status = status.encode("utf-8" if self.enable_SMTPUTF8 else "ascii")
        if self.session is not None and self.session.extended_smtp:
            status = with_enhanced_code(status)
        await super().push(status)


class BaseHandler:
    async def handle_EHLO(self, server, session, envelope, hostname: str, responses: list[str]):
        session.host_name = hostname
        return [*responses[:-1], "250-PIPELINING", "250-ENHANCEDSTATUSCODES", responses[-1]]

    async def handle_exception(self, error: Exception) -> str:
        # aiosmtpd's default answers "500 Error: (Exception) text": permanent and leaky.
        log.error("SMTP handler error", exc_info=error)
        return INTERNAL_ERROR
