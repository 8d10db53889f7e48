"""The database a bench runs sendmsg on: SQLite (the platform's default: WAL,
synchronous=FULL) or a throwaway PostgreSQL cluster, chosen with --database.

Every bench that stores mail takes the same two options (add_arguments) and starts the
same cluster (throwaway_database): tests/peers/postgres.py's cluster in a 0755 temp dir,
listening on 127.0.0.1 only, but with PostgreSQL's durable defaults (DurablePostgres:
fsync, synchronous_commit and full_page_writes on), so that a 250 or a 201 means durably
stored, as with SQLite and Postfix; --pg-no-fsync runs it as the test suite does
(fsync and synchronous_commit off) instead. The cluster is stopped with `pg_ctl stop` of
its own data directory and its directory removed.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
from tests.peers.postgres import PostgresCluster  # noqa: E402

CHOICES = ("sqlite", "postgres")


class DurablePostgres(PostgresCluster):
    """tests/peers/postgres.py's throwaway cluster with PostgreSQL's durable defaults
    (fsync, synchronous_commit and full_page_writes on): the test cluster turns them off,
    which no production platform would, and Postfix and SQLite fsync before their 250."""

    def start(self) -> None:
        if self.as_user:
            shutil.chown(self.root, "postgres", "postgres")
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "--no-sync")
        options = (
            f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.root} -c max_connections=200"
        )
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.root / "log"), "-w", "start",
                  "-o", options)  # fmt: skip


def add_arguments(parser: argparse.ArgumentParser, *, default: str | None = "sqlite") -> None:
    """--database sqlite|postgres and --pg-no-fsync. With default=None the option may be
    left out, and the bench then runs on whatever DATABASE_URL says (SQLite if unset)."""
    what = (
        f"default {default}"
        if default
        else "default: DATABASE_URL if set, else SQLite in the throwaway data dir"
    )
    parser.add_argument(
        "--database",
        choices=CHOICES,
        default=default,
        help=f"sqlite, or postgres: a throwaway PostgreSQL cluster, fsync on ({what})",
    )
    parser.add_argument(
        "--pg-no-fsync",
        action="store_true",
        help="PostgreSQL as the test suite runs it (fsync and synchronous_commit off)",
    )


@contextlib.contextmanager
def throwaway_database(args: argparse.Namespace) -> Iterator[PostgresCluster | None]:
    """The cluster --database asks for, started, and stopped on the way out (None for
    SQLite). Its URL is ``cluster.url``; put it in the platform's DATABASE_URL."""
    if args.database != "postgres":
        yield None
        return
    cluster = PostgresCluster() if args.pg_no_fsync else DurablePostgres()
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


def server_pid(cluster: PostgresCluster | None) -> int | None:
    """The postmaster's PID (its children serve the platform's connections), for CPU
    accounting; None for SQLite."""
    if cluster is None:
        return None
    return int((cluster.data / "postmaster.pid").read_text().split()[0])


def run_in_this_process(args: argparse.Namespace, run: Callable[[argparse.Namespace], int]) -> int:
    """``run(args)`` for the benches that run Django in their own process (throttle.py,
    message_log.py), on the database --database asks for: DATABASE_URL points at a
    throwaway cluster, or is dropped for --database sqlite, or (without --database) is
    left as it is. The process's connections are closed before the cluster stops."""
    with throwaway_database(args) as cluster:
        if cluster is not None:
            os.environ["DATABASE_URL"] = cluster.url
        elif args.database == "sqlite":
            os.environ.pop("DATABASE_URL", None)
        try:
            return run(args)
        finally:
            close_connections()


def close_connections() -> None:
    """Close this process's database connections (before its cluster is stopped)."""
    if "django.db" in sys.modules:
        from django.db import connections

        connections.close_all()


def vendor() -> str:
    """The database this process's Django uses, as --database names it."""
    from django.db import connection

    return "postgres" if connection.vendor == "postgresql" else connection.vendor


def platform_env(cluster: PostgresCluster | None) -> dict[str, str]:
    """This process's environment without any SENDMSG_* setting or DATABASE_URL, plus
    DATABASE_URL of ``cluster`` when there is one: the base of a throwaway platform's
    environment, so nothing of the caller's own platform leaks into the bench."""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("SENDMSG_") and k != "DATABASE_URL"
    }
    if cluster is not None:
        env["DATABASE_URL"] = cluster.url
    return env
