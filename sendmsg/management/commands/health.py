"""Liveness of one process kind, as an exit status (0 healthy, 1 not) and one line.

For systemd watchdog scripts and compose healthchecks:

    manage.py health web      GET /readyz on this host's web port answers 200
    manage.py health smtp     an SMTP process published its status lately, and every
                              listener greets with 220
    manage.py health workers  a django-q2 cluster reported itself lately
"""

from __future__ import annotations

import socket
import urllib.request

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from sendmsg import smtp_status

TIMEOUT = 5.0
LISTENER_PORTS = {
    "submission": "SENDMSG_SUBMISSION_PORT",
    "submission-tls": "SENDMSG_SUBMISSION_TLS_PORT",
    "inbound": "SENDMSG_INBOUND_PORT",
}


def local_host() -> str:
    """Where this host's listeners answer: their bind address, or loopback for 0.0.0.0."""
    bind = settings.SENDMSG_BIND
    return {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(bind, bind)


def check_web() -> str:
    url = f"http://{local_host()}:{settings.SENDMSG_WEB_PORT}/readyz"
    # Asked by a name the site answers to (ALLOWED_HOSTS), whatever address it listens on.
    names = [h.lstrip(".") for h in settings.ALLOWED_HOSTS if h not in ("*", "")]
    request = urllib.request.Request(url, headers={"Host": names[0] if names else "localhost"})
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as response:  # noqa: S310 (local)
            return f"web ready ({response.status})"
    except OSError as exc:
        raise CommandError(f"web not ready: {url}: {exc}") from None


def greets(port: int) -> bool:
    """Whether an SMTP listener on ``port`` answers with a 220 greeting (the implicit
    TLS port greets only after a handshake: a connection accepted is enough there)."""
    with socket.create_connection((local_host(), port), timeout=TIMEOUT) as conn:
        if port == settings.SENDMSG_SUBMISSION_TLS_PORT:
            return True
        conn.settimeout(TIMEOUT)
        return conn.recv(512).startswith(b"220")


def check_smtp() -> str:
    sessions = smtp_status.open_sessions()
    if not sessions:
        raise CommandError("smtp not alive: no SMTP process published its status lately")
    for name in sessions:
        port = getattr(settings, LISTENER_PORTS[name])
        try:
            if not greets(port):
                raise CommandError(f"smtp not alive: {name} on port {port} does not greet")
        except OSError as exc:
            raise CommandError(f"smtp not alive: {name} on port {port}: {exc}") from None
    return "smtp alive: " + ", ".join(f"{name} {n} open" for name, n in sorted(sessions.items()))


def check_workers() -> str:
    from django_q.status import Stat

    clusters = Stat.get_all()
    if not clusters:
        raise CommandError("workers not alive: no django-q2 cluster reported lately")
    return "workers alive: " + ", ".join(f"{c.cluster_id} {c.status}" for c in clusters)


CHECKS = {"web": check_web, "smtp": check_smtp, "workers": check_workers}


class Command(BaseCommand):
    help = "Exit 0 if this host's web, smtp or workers process is alive, else 1."

    def add_arguments(self, parser) -> None:
        parser.add_argument("process", choices=sorted(CHECKS))

    def handle(self, *args, process: str, **options) -> None:
        self.stdout.write(CHECKS[process]())
