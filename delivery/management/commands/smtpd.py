"""Run the platform's SMTP listeners: submission (STARTTLS), submission-tls, inbound MX."""

from __future__ import annotations

import asyncio
import logging
import signal

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from delivery.submission import SubmissionHandler
from reputation.inbound import InboundHandler
from sendmsg.smtp import ConnectionLimit
from sendmsg.smtp import PlatformSMTP as SMTP
from sendmsg.tls import server_context

log = logging.getLogger(__name__)

LISTENERS = ("submission", "submission-tls", "inbound")
SHUTDOWN_GRACE_SECONDS = 10


def smtp_factory(name: str, connections: ConnectionLimit | None = None):
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


async def serve(names: list[str]) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    servers = []
    submission_connections = ConnectionLimit(settings.SENDMSG_SMTP_MAX_CONNECTIONS_PER_ADDRESS)
    for name in names:
        factory, ssl_context = smtp_factory(
            name, submission_connections if name.startswith("submission") else None
        )
        server = await loop.create_server(
            factory, host=settings.SENDMSG_BIND, port=port_of(name), ssl=ssl_context
        )
        servers.append(server)
        log.info("%s listening on %s:%d", name, settings.SENDMSG_BIND, port_of(name))
    await stop.wait()
    log.info("stopping SMTP listeners")
    for server in servers:
        server.close()
    await asyncio.wait_for(
        asyncio.gather(*(s.wait_closed() for s in servers)), SHUTDOWN_GRACE_SECONDS
    )


class Command(BaseCommand):
    help = "Run SMTP listeners: submission (STARTTLS), submission-tls (implicit TLS), inbound MX."

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "listeners", nargs="*", help=f"Any of {', '.join(LISTENERS)}; default all three."
        )

    def handle(self, *args, listeners: list[str], **options) -> None:
        unknown = sorted(set(listeners) - set(LISTENERS))
        if unknown:
            raise CommandError(
                f"Unknown listener {unknown[0]!r}; choose from {', '.join(LISTENERS)}."
            )
        asyncio.run(serve(listeners or list(LISTENERS)))
