"""The all-in-one runner: every process of the platform in one foreground group."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand

STOP_GRACE_SECONDS = 40  # past the SMTP listeners' own 30 s


def processes() -> dict[str, list[str]]:
    manage = [sys.executable, str(Path(settings.BASE_DIR) / "manage.py")]
    bind = f"{settings.SENDMSG_BIND}:{settings.SENDMSG_WEB_PORT}"
    return {
        "web": [
            sys.executable,
            "-m",
            "gunicorn",
            "sendmsg.wsgi",
            "--bind",
            bind,
            "--workers",
            str(settings.SENDMSG_WEB_WORKERS),
            "--access-logfile",
            "-",
            "--chdir",
            str(settings.BASE_DIR),
        ],
        "smtp": [*manage, "smtpd"],
        "workers": [*manage, "qcluster"],
    }


class Command(BaseCommand):
    help = "Set up once, then run web, SMTP listeners and workers until Ctrl-C."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--no-bootstrap", action="store_true")

    def handle(self, *args, **options) -> None:
        if not options["no_bootstrap"]:
            call_command("bootstrap")
        children = {name: subprocess.Popen(cmd) for name, cmd in processes().items()}
        host = settings.SENDMSG_BIND
        self.stdout.write(
            "\nsendmsg is starting:\n"
            f"  dashboard  http://{host}:{settings.SENDMSG_WEB_PORT}/\n"
            f"  admin      http://{host}:{settings.SENDMSG_WEB_PORT}/admin/\n"
            f"  API schema http://{host}:{settings.SENDMSG_WEB_PORT}/api/v1/schema/"
            f"  (docs: /api/v1/docs/)\n"
            f"  submission smtp://{host}:{settings.SENDMSG_SUBMISSION_PORT} (STARTTLS, then AUTH)\n"
            f"  submission smtps://{host}:{settings.SENDMSG_SUBMISSION_TLS_PORT} (implicit TLS)\n"
            f"  inbound MX smtp://{host}:{settings.SENDMSG_INBOUND_PORT} (bounces only)\n"
            "  workers    django-q2 cluster\n"
            "Press Ctrl-C to stop.\n"
        )
        stopping = False

        def stop(signum, frame) -> None:
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)
        failed = None
        while not stopping:
            for name, child in children.items():
                if child.poll() is not None:
                    failed = name
                    stopping = True
            time.sleep(0.2)
        for child in children.values():
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        for child in children.values():
            try:
                child.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        if failed:
            self.stderr.write(f"The {failed} process exited; everything was stopped.")
            sys.exit(1)
        self.stdout.write("sendmsg stopped.")
