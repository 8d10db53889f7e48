"""django-q2's qcluster, with a graceful stop for deliveries (sendmsg/worker_shutdown.py).

It replaces django-q2's command of the same name (the sendmsg app comes before django_q
in INSTALLED_APPS), so deploy files and habits keep `manage.py qcluster`. The platform
runs one queue, so django-q2's `--name` (several named clusters) is not offered.
"""

from __future__ import annotations

from django.conf import settings
from django.core.management.base import BaseCommand
from django_q import cluster

from sendmsg import worker_shutdown


class Cluster(cluster.Cluster):
    """On SIGTERM or SIGINT, the worker processes hear first (worker_shutdown.STOP_SIGNAL),
    then django-q2's own stop runs: no new tasks, the fetched ones run, then exit."""

    def sig_handler(self, signum, frame) -> None:
        if self.sentinel is not None and self.sentinel.is_alive():
            worker_shutdown.tell_workers()
        super().sig_handler(signum, frame)


class Command(BaseCommand):
    help = "Start the delivery workers (django-q2); SIGTERM lets deliveries in hand finish."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--run-once", action="store_true", help="Start, then stop.")

    def handle(self, *args, run_once: bool, **options) -> None:
        if not settings.SECRET_KEY:  # task payloads are signed with it
            raise ValueError("SECRET_KEY is not set")
        worker_shutdown.ignore_in_children()
        workers = Cluster()
        workers.start()
        if run_once:
            workers.stop()
        # Otherwise this process waits for the cluster's sentinel as it exits
        # (multiprocessing joins its children), and SIGTERM reaches sig_handler meanwhile.
