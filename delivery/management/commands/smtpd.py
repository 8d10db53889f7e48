"""Run the platform's SMTP listeners: submission (STARTTLS), submission-tls, inbound MX."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import socket

from django import db
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from delivery import wake
from delivery.submission import SubmissionHandler
from reputation.inbound import InboundHandler
from sendmsg import smtp_shutdown, smtp_status
from sendmsg.smtp import ConnectionLimit, SharedConnectionLimit, commit_executor
from sendmsg.smtp import PlatformSMTP as SMTP
from sendmsg.tls import server_context

log = logging.getLogger(__name__)

LISTENERS = ("submission", "submission-tls", "inbound")
SHUTDOWN_GRACE_SECONDS = 30  # for a transaction under way; the units allow 60 s


def smtp_factory(name: str, connections: ConnectionLimit | SharedConnectionLimit | None = None):
    """A protocol factory for one listener, and the ssl context for implicit TLS (or None).

    ``connections`` counts open connections per client address; the two submission
    listeners share one count.
    """
    context = server_context()
    common = {
        "hostname": settings.SENDMSG_HOSTNAME,
        "ident": "sendmsg ESMTP",
        "data_size_limit": settings.SENDMSG_MESSAGE_SIZE_LIMIT,
        "enable_SMTPUTF8": True,
        "decode_data": False,
        "timeout": settings.SENDMSG_SMTP_TIMEOUT,
        "listener": name,
    }
    if name == "submission":
        handler = SubmissionHandler()
        return (
            lambda: SMTP(
                handler,
                tls_context=context,
                require_starttls=True,
                auth_required=True,
                auth_require_tls=True,
                connections=connections,
                **common,
            ),
            None,
        )
    if name == "submission-tls":
        handler = SubmissionHandler()
        # With implicit TLS aiosmtpd does not count the session as TLS for
        # auth_require_tls, but the whole connection is encrypted.
        return (
            lambda: SMTP(
                handler,
                auth_required=True,
                auth_require_tls=False,
                connections=connections,
                **common,
            ),
            context,
        )
    handler = InboundHandler()
    return lambda: SMTP(handler, tls_context=context, **common), None


def port_of(name: str) -> int:
    return {
        "submission": settings.SENDMSG_SUBMISSION_PORT,
        "submission-tls": settings.SENDMSG_SUBMISSION_TLS_PORT,
        "inbound": settings.SENDMSG_INBOUND_PORT,
    }[name]


def listening_sockets(names: list[str]) -> dict[str, socket.socket]:
    """Bound and listening before any fork, so every process accepts on the same ones."""
    return {
        name: socket.create_server((settings.SENDMSG_BIND, port_of(name)), backlog=511)
        for name in names
    }


async def serve(
    sockets: dict[str, socket.socket], connections: ConnectionLimit | SharedConnectionLimit
) -> None:
    """Serve ``sockets`` until SIGTERM or SIGINT; ``connections`` counts the submission
    listeners' open connections per client address (both listeners share one count)."""
    if settings.SENDMSG_BROKER == "orm":
        # A wake-up is then a row in the database: it rides along with the messages'
        # commit. On Redis the waker's own thread pushes it, outside any transaction.
        wake.enqueue_through(commit_executor().submit_grouped)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    servers = []
    for name, sock in sockets.items():
        factory, ssl_context = smtp_factory(
            name, connections if name.startswith("submission") else None
        )
        servers.append(await loop.create_server(factory, sock=sock, ssl=ssl_context))
        log.info("%s listening on %s:%d pid=%d", name, *sock.getsockname()[:2], os.getpid())
    status = asyncio.create_task(smtp_status.publish(list(sockets), stop))
    await stop.wait()
    log.info("stopping SMTP listeners: no new connections, open sessions drain")
    for server in servers:
        server.close()
    smtp_shutdown.drain()
    cut = await smtp_shutdown.drained(SHUTDOWN_GRACE_SECONDS)
    if cut:
        log.warning("cut %d SMTP sessions still in a transaction at shutdown", cut)
    # Wake-ups gathered but not yet handed to the broker go now (the sweeper would find
    # them, but later); then the database thread has nothing left to commit.
    await loop.run_in_executor(None, wake.waker().flush)
    await status


def stop_with_parent(parent: int) -> None:
    """Have the kernel send this process SIGTERM when its parent dies (Linux), so that a
    parent killed without a chance to forward signals leaves no listener behind."""
    PR_SET_PDEATHSIG = 1
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM) != 0:
        log.warning("cannot ask to be stopped with the parent: errno %d", ctypes.get_errno())
    if os.getppid() != parent:  # it died before the request above took effect
        os.kill(os.getpid(), signal.SIGTERM)


def run_processes(
    sockets: dict[str, socket.socket], connections: SharedConnectionLimit, count: int
) -> int:
    """Fork ``count`` processes that serve the same sockets (each with its own event loop
    and database thread: one Python process uses one core); forward SIGTERM and SIGINT to
    them. If one exits, the others are stopped too and its exit code is returned."""
    db.connections.close_all()  # no database connection may be shared across a fork
    parent = os.getpid()
    children = []
    for _ in range(count):
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                stop_with_parent(parent)
                asyncio.run(serve(sockets, connections))
            except BaseException:
                log.exception("SMTP process failed")
                code = 1
            finally:
                logging.shutdown()
                os._exit(code)
        children.append(pid)
    for sock in sockets.values():  # the children serve them; once they stop, none listens
        sock.close()

    def forward(signum, frame) -> None:
        for child in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    code = 0
    while children:
        pid, status = os.wait()
        if pid in children:
            children.remove(pid)
            code = code or os.waitstatus_to_exitcode(status)
            forward(signal.SIGTERM, None)
    return code


class Command(BaseCommand):
    help = "Run SMTP listeners: submission (STARTTLS), submission-tls (implicit TLS), inbound MX."

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "listeners", nargs="*", help=f"Any of {', '.join(LISTENERS)}; default all three."
        )
        parser.add_argument(
            "--processes",
            type=int,
            default=settings.SENDMSG_SMTP_PROCESSES,
            help="Processes serving the listeners (default SENDMSG_SMTP_PROCESSES).",
        )

    def handle(self, *args, listeners: list[str], processes: int, **options) -> None:
        unknown = sorted(set(listeners) - set(LISTENERS))
        if unknown:
            raise CommandError(
                f"Unknown listener {unknown[0]!r}; choose from {', '.join(LISTENERS)}."
            )
        if processes < 1:
            raise CommandError("--processes must be at least 1.")
        sockets = listening_sockets(listeners or list(LISTENERS))
        limit = settings.SENDMSG_SMTP_MAX_CONNECTIONS_PER_ADDRESS
        if processes == 1:
            asyncio.run(serve(sockets, ConnectionLimit(limit)))
            return
        code = run_processes(sockets, SharedConnectionLimit(limit), processes)
        if code:
            raise CommandError(f"an SMTP process exited with code {code}")
