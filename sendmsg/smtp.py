"""What every SMTP listener of the platform shares: database calls off the event loop, an
error reply that is temporary and tells nothing about our internals, and a protocol
(``PlatformSMTP``) that puts an enhanced status code on every reply, limits connections
per client address and says goodbye when a session times out."""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import re
import zlib
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from functools import cache, wraps
from typing import Any, TypeVar

from aiosmtpd.smtp import SMTP
from django.conf import settings

from sendmsg import smtp_shutdown, smtp_status, thread_connections
from sendmsg.group_commit import GroupCommitExecutor

log = logging.getLogger(__name__)

T = TypeVar("T")

OK = "250 2.0.0 OK"
INTERNAL_ERROR = "451 4.3.0 Temporary server error; please try again later"


@cache
def database_executor() -> Executor:
    """The threads that run a listener's database work.

    SQLite takes one writer at a time: several threads would only sleep in its busy
    handler (tens of ms each), so one thread per process serves it, and commits the
    messages that arrive together at once (sendmsg/group_commit.py). A server database
    gets a pool.
    """
    if settings.DATABASES["default"]["ENGINE"].endswith("sqlite3"):
        return GroupCommitExecutor()
    return ThreadPoolExecutor(max_workers=8, thread_name_prefix="db")


def in_thread(func: Callable[..., T]) -> Callable[..., Any]:
    """Run a blocking (ORM, DNS, hashing) function off the event loop, on the database
    executor (not asgiref's sync_to_async: its default queues every call of every session
    on one main thread, and its context copying costs more than the calls here)."""

    def call(*args: Any, **kwargs: Any) -> T:
        thread_connections.refresh()
        return func(*args, **kwargs)

    async def run(*args: Any, **kwargs: Any) -> T:
        return await asyncio.wrap_future(database_executor().submit(call, *args, **kwargs))

    return wraps(func)(run)


@cache
def commit_executor() -> GroupCommitExecutor:
    """Where a listener's stores go: on SQLite its one database thread; on a server
    database a thread of its own beside the pool, so that the messages arriving together
    share one commit (one durable WAL flush) there too, while reads run in the pool."""
    executor = database_executor()
    return executor if isinstance(executor, GroupCommitExecutor) else GroupCommitExecutor()


async def in_group_batch(fn: Callable[[list], list], item: Any) -> Any:
    """``fn([item])``'s outcome for ``item``, off the event loop: the item is stored with
    the others waiting for ``fn`` at that moment, in one call of ``fn`` and one commit
    (GroupCommitExecutor.submit_batched), and the result comes only once committed."""
    return await asyncio.wrap_future(commit_executor().submit_batched(fn, item))


def in_worker(func: Callable[..., T]) -> Callable[..., Any]:
    """Run a short blocking call that needs no database (a cache lookup) off the event loop.

    Not on the database thread: there it would wait behind every queued commit.
    """

    async def call(*args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, lambda: func(*args, **kwargs))

    return wraps(func)(call)


# RFC 3463 codes for aiosmtpd's own replies, which carry none (RFC 2034 wants one on every
# 2xx/4xx/5xx reply once ENHANCEDSTATUSCODES is offered).
DEFAULT_ENHANCED = {
    "220": "2.0.0",  # "Ready to start TLS"; the greeting comes before EHLO and gets none
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
# aiosmtpd replies whose code alone would pick the wrong enhanced code.
SPECIFIC_ENHANCED = {
    b"500 Line too long": "5.6.0",  # a line of the message (DATA), not a command
    b"554 Command refused due to lack of security": "5.7.0",
}
SINGLE_LINE = re.compile(rb"^([245]\d\d) (?![245]\.\d{1,3}\.\d{1,3}\b)")
EHLO_LAST_LINE = b"250 HELP"  # the EHLO reply's last line lists a keyword, not a status

# <local@domain> with a dot-atom local part and an LDH domain: the address nearly every
# MAIL and RCPT carries, which aiosmtpd's full RFC 5322 parser reads the same (and slowly).
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
SIMPLE_ANGLE_ADDRESS = re.compile(
    rf"\s*<({_ATEXT}(?:\.{_ATEXT})*@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
    # after the ">", blanks are skipped as aiosmtpd's parser does; a comment goes to it
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*)>[ \t]*+(?!\()(.*)",
    re.DOTALL,
)

TOO_MANY_CONNECTIONS = "421 4.7.0 Too many connections from your address; try again later"
TIMED_OUT = "421 4.4.2 {host} Error: timeout exceeded; closing connection"


def with_enhanced_code(reply: bytes) -> bytes:
    """``reply`` with a default enhanced code if it is a final reply that lacks one."""
    match = SINGLE_LINE.match(reply)
    if not match or reply == EHLO_LAST_LINE:
        return reply
    enhanced = next(
        (code for prefix, code in SPECIFIC_ENHANCED.items() if reply.startswith(prefix)),
        DEFAULT_ENHANCED.get(match.group(1).decode()),
    )
    if enhanced is None:
        return reply
    return reply[:4] + enhanced.encode() + b" " + reply[4:]


class ConnectionLimit:
    """Open connections per client address, shared by the listeners of one process.

    Only the event loop's thread touches it, so it needs no lock.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.open: Counter[str] = Counter()

    def admit(self, address: str) -> bool:
        if self.open[address] >= self.limit:
            return False
        self.open[address] += 1
        return True

    def release(self, address: str) -> None:
        self.open[address] -= 1
        if self.open[address] <= 0:
            del self.open[address]


class SharedConnectionLimit:
    """Open connections per client address, counted across the SMTP processes forked
    from one parent (create it before the fork), in shared memory.

    Addresses hash into SLOTS counters: two addresses share a count only when their
    hashes collide, which is rare and then only stricter.
    """

    SLOTS = 65536

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.counts = multiprocessing.Array("i", self.SLOTS)

    def _slot(self, address: str) -> int:
        return zlib.crc32(address.encode()) % self.SLOTS

    def admit(self, address: str) -> bool:
        slot = self._slot(address)
        with self.counts.get_lock():
            if self.counts[slot] >= self.limit:
                return False
            self.counts[slot] += 1
            return True

    def release(self, address: str) -> None:
        slot = self._slot(address)
        with self.counts.get_lock():
            self.counts[slot] = max(0, self.counts[slot] - 1)


def client_address(peer: Any) -> str:
    """The IP address of a ``peername`` (IPv4 or IPv6 tuple), or "unknown"."""
    if isinstance(peer, tuple) and peer:
        return str(peer[0])
    return "unknown"


class PlatformSMTP(SMTP):
    """aiosmtpd's SMTP protocol, as the platform's listeners need it.

    - Every final reply after EHLO carries an enhanced status code (RFC 2034), aiosmtpd's
      built-in replies included.
    - A reply with code 421 closes the connection, as RFC 5321 §3.8 says it does.
    - With ``connections``, a client address over its limit gets ``421 4.7.0`` instead of
      the greeting.
    - ``timeout`` is an idle timeout: it runs from our last reply, and while a message is
      being received, from the last bytes of it (aiosmtpd counts from the last command,
      so a long upload or a slow commit would be cut). When it expires the client gets
      ``421 4.4.2`` before the connection closes (aiosmtpd just closes).

    - When the listener stops, the session ends with ``421 4.3.2`` at its first moment
      outside a mail transaction (sendmsg/smtp_shutdown.py).
    """

    def __init__(
        self,
        handler: Any,
        *,
        connections: ConnectionLimit | SharedConnectionLimit | None = None,
        listener: str = "",
        **kwargs,
    ):
        super().__init__(handler, **kwargs)
        self._connections = connections
        self._listener = listener  # its name in sendmsg/smtp_status.py's session counts
        self._counted = False
        self._admitted: str | None = None  # the address counted in _connections
        self._refused = False
        self._receiving_data = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self.transport is None:
            smtp_shutdown.opened(self)
        # Called again with the TLS transport after STARTTLS: count the TCP connection once.
        if self.transport is None and self._listener and not self._counted:
            smtp_status.opened(self._listener)
            self._counted = True
        if self.transport is None and self._connections is not None:
            address = client_address(transport.get_extra_info("peername"))
            if self._connections.admit(address):
                self._admitted = address
            else:
                self._refused = True
                log.warning("connection refused: %s has too many open", address)
        super().connection_made(transport)

    def connection_lost(self, error: Exception | None) -> None:
        smtp_shutdown.closed(self)
        if self._counted:
            smtp_status.closed(self._listener)
            self._counted = False
        if self._admitted is not None and self._connections is not None:
            self._connections.release(self._admitted)
            self._admitted = None
        super().connection_lost(error)

    async def _handle_client(self) -> None:  # aiosmtpd < 1.5 internal: greets, then loops
        if self._refused:
            await self.push(TOO_MANY_CONNECTIONS)
            return
        await super()._handle_client()

    def data_received(self, data: bytes) -> None:
        if self._receiving_data:
            self._reset_timeout()
        super().data_received(data)

    def _timeout_cb(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            reply = TIMED_OUT.format(host=self.hostname)
            self.transport.write(reply.encode("ascii") + b"\r\n")
        super()._timeout_cb()

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:  # aiosmtpd < 1.5 internal
        """aiosmtpd's, with a fast path for the common ``<local@domain>`` (a third of
        the listener's CPU per message went to the general parser and a class aiosmtpd
        makes on every call); anything else goes to aiosmtpd's parser."""
        match = SIMPLE_ANGLE_ADDRESS.fullmatch(arg) if arg else None
        if match is None:
            return super()._getaddr(arg)
        address, rest = match.groups()
        if self.local_part_limit and len(address.rpartition("@")[0]) > self.local_part_limit:
            return None, None
        return address, rest

    async def smtp_DATA(self, arg: str) -> None:
        self._receiving_data = True
        try:
            await super().smtp_DATA(arg)
        finally:
            self._receiving_data = False
        if smtp_shutdown.draining():
            self.end_if_idle()

    def in_transaction(self) -> bool:
        """Between MAIL and the reply to DATA (or RSET)."""
        return self._receiving_data or getattr(self.envelope, "mail_from", None) is not None

    def end_if_idle(self) -> None:
        """Say ``421`` and close, unless a mail transaction is under way: then this is
        asked again once it has its reply."""
        if self.transport is None or self.transport.is_closing() or self.in_transaction():
            return
        reply = smtp_shutdown.SHUTTING_DOWN.format(host=self.hostname)
        self.transport.write(reply.encode("ascii") + b"\r\n")
        self.transport.close()

    async def push(self, status: str | bytes) -> None:
        if isinstance(status, str):
            status = status.encode("utf-8" if self.enable_SMTPUTF8 else "ascii")
        if self.session is not None and self.session.extended_smtp:
            status = with_enhanced_code(status)
        await super().push(status)
        if status.startswith(b"421 ") and self.transport is not None:
            self.transport.close()
        elif self.transport is not None:
            self._reset_timeout()
            if smtp_shutdown.draining() and not status.startswith(b"354"):
                self.end_if_idle()


class BaseHandler:
    async def handle_EHLO(self, server, session, envelope, hostname: str, responses: list[str]):
        session.host_name = hostname
        return [*responses[:-1], "250-PIPELINING", "250-ENHANCEDSTATUSCODES", responses[-1]]

    async def handle_exception(self, error: Exception) -> str:
        # aiosmtpd's default answers "500 Error: (Exception) text": permanent and leaky.
        log.error("SMTP handler error", exc_info=error)
        return INTERNAL_ERROR
