"""A scripted, real SMTP receiver for tests: the stand-in for a recipient's MX.

It is aiosmtpd's ``SMTP`` protocol on its own asyncio loop in a background thread, so a
synchronous test (or the platform's relay running in another process) talks real SMTP to
it over loopback. Tests script its replies (per-recipient RCPT replies, the reply after
DATA, the greeting) and its failures (hanging, dropping the connection mid-DATA), then
assert on exactly what crossed the wire::

    with SmtpReceiver("127.0.0.2", 0) as mx:
        mx.reply_rcpt("gone@dest.test", "550 5.1.1 no such user")
        ...  # let the platform relay to 127.0.0.2:mx.port
        [msg] = mx.wait_for(1)
        assert msg.rcpt_tos == ["ok@dest.test"]

Loopback addresses other than 127.0.0.1 (127.0.0.2, 127.0.0.3, ...) need no setup on
Linux, so several receivers can play several MX hosts on the same port.

aiosmtpd is pinned below 1.5 (pyproject.toml); the subclass below relies on a few of its
internals (``_handle_client``, ``_smtp_methods``, ``_reader``), named where used.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import re
import ssl
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, AnyStr, ClassVar, Self

from aiosmtpd.smtp import SMTP, Envelope, Session, TLSSetupException

log = logging.getLogger(__name__)

DATA_SIZE_LIMIT = 50 * 1024 * 1024
"""Advertised in EHLO SIZE and enforced (552) by aiosmtpd."""

# Pseudo-commands accepted by hang_after() besides real SMTP verbs.
HANG_CONNECT = "CONNECT"  # accept the TCP connection, never send the greeting
HANG_END_OF_DATA = "."  # read the whole message, never answer the final dot

_REPLY_RE = re.compile(r"^[2-5][0-9][0-9]( |-|$)")


@dataclass
class Received:
    """One message the receiver accepted (a 2xx reply after DATA)."""

    mail_from: str
    """Reverse-path without angle brackets; the null sender ``<>`` is recorded as ``""``."""
    rcpt_tos: list[str]
    """Only the recipients that got a 2xx RCPT reply, in the order they were sent."""
    data: bytes
    """Exactly what came over the wire after DATA (dot-unstuffed), CRLF preserved,
    without the terminating ``.<CRLF>``."""
    ehlo: str | None
    """Name the client gave in EHLO/HELO (the last one of the session)."""
    tls: bool
    """Whether STARTTLS was used in that session."""
    peer: str
    """Client IP address."""


def _check_reply(reply: str) -> str:
    # A typo such as "55O" would otherwise go out on the wire and confuse the client in
    # ways that look like a bug in the code under test.
    if not _REPLY_RE.match(reply):
        raise ValueError(f"not an SMTP reply (want '<2xx-5xx> text'): {reply!r}")
    return reply


class _Script:
    """The receiver's scripted behaviour; read by the loop thread, written by tests."""

    def __init__(self) -> None:
        self.rcpt: dict[str, str] = {}
        self.data: str | None = None
        self.greeting: str | None = None
        self.hang: str | None = None
        self.drop_in_data = False
        self.data_delay = 0.0
        self.pipelining = False


class SmtpReceiver:
    """A real SMTP server on ``host:port`` whose replies and failures tests script.

    ``port`` may be 0: the kernel picks a free port, readable as ``.port`` after
    ``start()``. ``tls_cert`` is ``(certfile, keyfile)``; with it the receiver offers
    STARTTLS (optional for the client), without it it does not advertise STARTTLS.
    Every scripting call is thread-safe and applies from the next command (greeting
    scripts from the next connection). The receiver can be stopped and started again on
    the same address, e.g. to play an MX that is down for a while.
    """

    observers: ClassVar[list[Callable[[SmtpReceiver, Received], None]]] = []
    """Called with the receiver and each message it records, for every receiver (in its
    loop thread): the suite checks the DKIM signatures of what they got (tests/conftest.py)."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        tls_cert: tuple[str, str] | None = None,
        hostname: str = "mx.dest.test",
    ) -> None:
        self.host = host
        self.port = port
        self.hostname = hostname
        self.tls_context: ssl.SSLContext | None = None
        if tls_cert is not None:
            # Server context: verify_mode stays CERT_NONE (no client certificates), which
            # is what aiosmtpd expects; anything stricter breaks ordinary clients.
            ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ctx.load_cert_chain(certfile=tls_cert[0], keyfile=tls_cert[1])
            self.tls_context = ctx

        self.messages: list[Received] = []
        self.attempts = 0
        """DATA commands received with at least one accepted recipient, whatever
        happened next (accepted, rejected, hung, dropped)."""
        self.connections = 0
        """TCP connections accepted (a STARTTLS upgrade is not a new connection)."""
        self.pipelined = 0
        """Transactions whose MAIL command arrived with its DATA command already behind it
        (a client pipelining, RFC 2920)."""
        self.holding = 0
        """Messages read to the final dot and held unanswered right now (``hang_after(".")``).
        A held message is never recorded: when its client goes away it is discarded, as
        a real MTA discards a transaction it has not answered. Not cleared by reset()."""

        self._lock = threading.Lock()
        # Signalled whenever a message is recorded or a hold starts or ends, so wait_for()
        # and wait_for_holding() need not poll.
        self._received = threading.Condition(self._lock)
        self._script = _Script()

        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._sessions: set[_ScriptedSMTP] = set()

    # ----------------------------------------------------------------- lifecycle

    def start(self) -> None:
        """Start listening; returns once the socket accepts connections.

        Raises the bind error (e.g. address in use) in the calling thread.
        """
        if self._thread is not None:
            raise RuntimeError("SmtpReceiver already started")
        loop = asyncio.new_event_loop()
        ready = threading.Event()
        failure: list[Exception] = []

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                self._server = loop.run_until_complete(
                    # asyncio sets SO_REUSEADDR on Unix, so a restart on the same port
                    # works even with connections of the previous run in TIME_WAIT.
                    loop.create_server(self._make_protocol, self.host, self.port)
                )
            except Exception as exc:  # noqa: BLE001 - re-raised by start() in the caller's thread
                failure.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.close()

        thread = threading.Thread(target=run, name=f"smtp-receiver-{self.host}", daemon=True)
        thread.start()
        ready.wait()
        if failure:
            thread.join()
            raise failure[0]
        assert self._server is not None
        self.port = self._server.sockets[0].getsockname()[1]
        self._loop, self._thread = loop, thread

    def stop(self) -> None:
        """Stop listening and cut every open session; idempotent."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        try:
            asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(timeout=10)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=10)
            self._loop = self._thread = self._server = None

    async def _shutdown(self) -> None:
        assert self._server is not None
        self._server.close()
        # abort(), not close(): a TLS close waits for the peer's close_notify, and a
        # scripted hang must not delay teardown.
        for session in list(self._sessions):
            session.abort()
        await self._server.wait_closed()
        current = asyncio.current_task()
        tasks = [t for t in asyncio.all_tasks() if t is not current]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _make_protocol(self) -> _ScriptedSMTP:
        return _ScriptedSMTP(
            _Handler(self),
            receiver=self,
            hostname=self.hostname,
            ident="ESMTP",
            tls_context=self.tls_context,
            data_size_limit=DATA_SIZE_LIMIT,
            enable_SMTPUTF8=True,  # also advertises 8BITMIME (decode_data stays False)
            loop=asyncio.get_running_loop(),
        )

    # ----------------------------------------------------------------- results

    def wait_for(self, count: int = 1, timeout: float = 30.0) -> list[Received]:
        """Block until at least ``count`` messages were accepted; return all of them.

        Raises TimeoutError naming what was received so far, so a failing test says
        whether nothing arrived or something else did.
        """
        with self._received:
            if self._received.wait_for(lambda: len(self.messages) >= count, timeout):
                return list(self.messages)
            summary = "\n".join(f"  {_describe(m)}" for m in self.messages) or "  (none)"
            raise TimeoutError(
                f"{self.host}:{self.port}: expected {count} message(s) within {timeout}s, "
                f"got {len(self.messages)} (DATA attempts {self.attempts}, "
                f"connections {self.connections}):\n{summary}"
            )

    def wait_for_holding(self, count: int = 1, timeout: float = 30.0) -> int:
        """Block until at least ``count`` messages are held at their final dot (see
        ``holding``), or with ``count=0`` until none is; return how many are held."""

        def reached() -> bool:
            return self.holding >= count if count else self.holding == 0

        with self._received:
            if not self._received.wait_for(reached, timeout):
                raise TimeoutError(
                    f"{self.host}:{self.port}: {self.holding} message(s) held after "
                    f"{timeout}s, waiting for {'none' if not count else count} "
                    f"(DATA attempts {self.attempts})"
                )
            return self.holding

    def _hold(self, delta: int) -> None:
        with self._received:
            self.holding += delta
            self._received.notify_all()

    def _record(self, message: Received) -> None:
        with self._received:
            self.messages.append(message)
            self._received.notify_all()
        for observer in list(self.observers):
            observer(self, message)

    def _count_connection(self) -> None:
        with self._lock:
            self.connections += 1

    def _count_pipelined(self) -> None:
        with self._lock:
            self.pipelined += 1

    def _count_attempt(self) -> None:
        with self._lock:
            self.attempts += 1

    # ----------------------------------------------------------------- scripting

    def reply_rcpt(self, address: str, reply: str | None) -> None:
        """Answer RCPT TO for ``address`` (case-insensitive) with ``reply``.

        E.g. ``"550 5.1.1 no such user"``; other recipients still get 250. A 2xx reply
        accepts the recipient. ``None`` restores the default for that address.
        """
        with self._lock:
            if reply is None:
                self._script.rcpt.pop(address.casefold(), None)
            else:
                self._script.rcpt[address.casefold()] = _check_reply(reply)

    def reply_data(self, reply: str | None) -> None:
        """Answer the end of DATA with ``reply``, e.g. ``"451 4.3.0 try later"``.

        Only messages answered 2xx are recorded in ``messages``. ``None`` restores the
        default ``"250 2.0.0 Ok: queued as <id>"``.
        """
        with self._lock:
            self._script.data = None if reply is None else _check_reply(reply)

    def reply_greeting(self, reply: str | None) -> None:
        """Greet new connections with ``reply``; a non-2xx greeting is followed by close.

        E.g. ``"421 4.3.2 busy"``. A 2xx reply replaces the normal greeting and the
        session goes on. ``None`` = normal ``"220 <hostname> ESMTP"``.
        """
        with self._lock:
            self._script.greeting = None if reply is None else _check_reply(reply)

    def hang_after(self, command: str | None) -> None:
        """Stop answering once the client sends ``command``; the client must time out.

        ``command`` is an SMTP verb (``"EHLO"``, ``"MAIL"``, ``"RCPT"``, ``"DATA"`` — no
        354 is sent —, ``"STARTTLS"``, ``"QUIT"``, ...) or a pseudo-command:
        ``"CONNECT"`` (no greeting) or ``"."`` (the whole message is read, the final dot
        is never answered: the case where the client cannot know whether the message was
        delivered). The connection stays open until the client gives up. ``None`` = off.
        """
        with self._lock:
            self._script.hang = None if command is None else command.upper()

    def offer_pipelining(self, on: bool) -> None:
        """Advertise PIPELINING in the EHLO reply (from the next EHLO)."""
        with self._lock:
            self._script.pipelining = on

    def delay_data(self, seconds: float) -> None:
        """Take ``seconds`` before answering the final dot of each message, as a slow or
        busy MX does (``0``: answer at once)."""
        with self._lock:
            self._script.data_delay = seconds

    def drop_in_data(self, on: bool) -> None:
        """If on, answer DATA with 354, read one line of the message, then close the
        connection without a reply."""
        with self._lock:
            self._script.drop_in_data = on

    def drop_connections(self) -> None:
        """Cut every open connection now, as a server dropping idle clients does; returns
        once they are gone (at most 5 s)."""
        for session in list(self._sessions):
            self._loop.call_soon_threadsafe(session.abort)
        deadline = time.monotonic() + 5
        while self._sessions and time.monotonic() < deadline:
            time.sleep(0.01)

    def reset(self) -> None:
        """Clear recorded messages, counters and every script (back to all-250)."""
        with self._lock:
            self.messages.clear()
            self.attempts = 0
            self.connections = 0
            self.pipelined = 0
            self._script = _Script()

    def _snapshot(self) -> _Script:
        """A consistent copy of the script for one decision in the loop thread."""
        with self._lock:
            copy = _Script()
            copy.__dict__.update(self._script.__dict__)
            copy.rcpt = dict(self._script.rcpt)
            return copy


def _describe(message: Received) -> str:
    match = re.search(rb"^Subject:[ \t]*(.*?)\r?$", message.data, re.MULTILINE | re.IGNORECASE)
    subject = match.group(1).decode("utf-8", "replace") if match else None
    return (
        f"from={message.mail_from!r} to={message.rcpt_tos!r} subject={subject!r} "
        f"bytes={len(message.data)} tls={message.tls}"
    )


class _Handler:
    """aiosmtpd handler hooks: the RCPT and DATA replies come from the script."""

    def __init__(self, receiver: SmtpReceiver) -> None:
        self.receiver = receiver

    async def handle_EHLO(
        self, server: SMTP, session: Session, envelope: Envelope, hostname: str, responses: list
    ) -> list[str]:
        session.host_name = hostname
        if self.receiver._snapshot().pipelining:
            return [*responses[:-1], "250-PIPELINING", responses[-1]]
        return responses

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        reply = self.receiver._snapshot().rcpt.get(address.casefold())
        if reply is None or reply.startswith("2"):
            # Returning a status means aiosmtpd leaves the envelope to us.
            envelope.rcpt_tos.append(address)
            envelope.rcpt_options.extend(rcpt_options)
        return reply or "250 2.1.5 Ok"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        script = self.receiver._snapshot()
        if script.hang == HANG_END_OF_DATA:
            assert isinstance(server, _ScriptedSMTP)
            self.receiver._hold(+1)
            try:
                await server.hang()  # only ends by cancellation: the message is not recorded
            finally:
                self.receiver._hold(-1)
        if script.data_delay:
            await asyncio.sleep(script.data_delay)
        reply = script.data or f"250 2.0.0 Ok: queued as {uuid.uuid4().hex[:12].upper()}"
        if reply.startswith("2"):
            mail_from = envelope.mail_from or ""
            assert session.peer is not None
            self.receiver._record(
                Received(
                    mail_from="" if mail_from == "<>" else mail_from,
                    rcpt_tos=list(envelope.rcpt_tos),
                    data=envelope.original_content or b"",
                    ehlo=session.host_name,
                    # aiosmtpd sets session.ssl only after a STARTTLS handshake.
                    tls=session.ssl is not None,
                    peer=str(session.peer[0]),
                )
            )
        return reply

    async def handle_exception(self, error: Exception) -> str:
        # aiosmtpd's default answers "500 Error: (Exception) text", a permanent failure
        # that would make the client bounce; a bug in this test peer should show up as a
        # logged traceback and a temporary failure instead.
        if isinstance(error, TLSSetupException):
            # A client refusing our certificate is an expected test outcome, not a bug
            # here; aiosmtpd closes the connection without sending this reply.
            log.info("SmtpReceiver: TLS handshake failed: %r", error.__cause__)
        else:
            log.exception("SmtpReceiver handler error", exc_info=error)
        return "451 4.3.0 test receiver error"


class _ScriptedSMTP(SMTP):
    """aiosmtpd's SMTP protocol plus scripted greetings, hangs and mid-DATA drops."""

    def __init__(self, handler: _Handler, *, receiver: SmtpReceiver, **kwargs: Any) -> None:
        # aiosmtpd keeps command_size_limits on the class and grows it on every EHLO; an
        # instance copy keeps this receiver from changing the limits of the platform's
        # own SMTP server when both run in the test process.
        self.command_size_limits = collections.defaultdict(lambda: SMTP.command_size_limit)
        super().__init__(handler, **kwargs)
        self.receiver = receiver
        self._greeting_override: str | None = None
        # Wrap every command (private dict, built by SMTP.__init__) so hang_after() works
        # for any verb without copying aiosmtpd's command handling.
        for name, method in list(self._smtp_methods.items()):
            self._smtp_methods[name] = self._scripted(name, method)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Called again with the TLS transport after STARTTLS; count the TCP connection once.
        if self._original_transport is None:
            self.receiver._count_connection()
            self.receiver._sessions.add(self)
        super().connection_made(transport)

    def connection_lost(self, error: Exception | None) -> None:
        self.receiver._sessions.discard(self)
        super().connection_lost(error)

    def abort(self) -> None:
        """Cut the connection at once (receiver shutdown)."""
        for transport in (self.transport, self._original_transport):
            if transport is not None:
                transport.abort()  # type: ignore[attr-defined]

    async def hang(self) -> None:
        """Wait, silently, until the client disconnects (or aiosmtpd's idle timeout)."""
        # connection_lost() cancels the session task, which ends this wait.
        await self.loop.create_future()

    async def push(self, status: AnyStr) -> None:
        # The first push of a session is the greeting (see _handle_client).
        override, self._greeting_override = self._greeting_override, None
        if override is not None:
            await super().push(override)
        else:
            await super().push(status)

    async def _handle_client(self) -> None:
        script = self.receiver._snapshot()
        if script.hang == HANG_CONNECT:
            await self.hang()
            return
        if script.greeting is not None and not script.greeting.startswith("2"):
            await self.push(script.greeting)
            assert self.transport is not None
            self.transport.close()
            return
        self._greeting_override = script.greeting
        await super()._handle_client()

    def _scripted(self, name: str, method: Any) -> Any:
        async def scripted(arg: str | None) -> None:
            script = self.receiver._snapshot()
            starts_data = bool(
                name == "DATA"
                and not arg
                and self.session is not None
                and self.session.host_name
                and self.envelope is not None
                and self.envelope.rcpt_tos
            )
            if starts_data:
                self.receiver._count_attempt()
            if name == "MAIL" and b"DATA\r\n" in bytes(self._reader._buffer).upper():
                self.receiver._count_pipelined()  # what the client sent in one go
            if script.hang == name:
                await self.hang()
                return
            if starts_data and script.drop_in_data:
                await self._drop_in_data()
                return
            await method(arg)

        return scripted

    async def _drop_in_data(self) -> None:
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        # A line longer than the limit is data too; we are dropping anyway.
        with contextlib.suppress(asyncio.LimitOverrunError):
            await self._reader.readuntil(b"\r\n")
        # close() with unread input makes Linux send RST: the client sees a reset or EOF.
        assert self.transport is not None
        self.transport.close()
        await self.hang()
