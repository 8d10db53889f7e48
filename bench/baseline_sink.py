"""Baseline for bench/submission.py: the floor cost of "250 means stored".

A bare aiosmtpd server with the same front door as sendmsg's submission listener
(STARTTLS required, then AUTH PLAIN/LOGIN required; any login is accepted) that commits
each message in its own transaction to an SQLite WAL database with synchronous=FULL
before it answers 250. The commits run on one writer thread, like the platform's
database calls run off the event loop; there is no batching, so every 250 waits for its
own fsync.

    python bench/baseline_sink.py --port P --db FILE --tls-cert CERT --tls-key KEY

Loopback only. Stops on SIGTERM/SIGINT or after --max-seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import logging
import signal
import sqlite3
import ssl
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from aiosmtpd.smtp import SMTP, AuthResult


class StoreHandler:
    def __init__(self, path: str) -> None:
        self.path = path
        self.db: sqlite3.Connection | None = None
        # One writer thread: SQLite has one writer anyway, and each message is its own
        # transaction (no group commit).
        self.writer = ThreadPoolExecutor(max_workers=1, initializer=self._open)

    def _open(self) -> None:
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute(
            "CREATE TABLE IF NOT EXISTS message (id INTEGER PRIMARY KEY, mail_from TEXT,"
            " rcpt_tos TEXT, received REAL, size INTEGER, raw BLOB)"
        )
        self.db = db

    def _store(self, mail_from: str, rcpt_tos: list[str], raw: bytes) -> int:
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            cur = db.execute(
                "INSERT INTO message (mail_from, rcpt_tos, received, size, raw) VALUES (?,?,?,?,?)",
                (mail_from, ",".join(rcpt_tos), time.time(), len(raw), raw),
            )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return cur.lastrowid

    async def handle_DATA(self, server, session, envelope) -> str:
        loop = asyncio.get_running_loop()
        raw = envelope.original_content or envelope.content or b""
        try:
            row_id = await loop.run_in_executor(
                self.writer, self._store, envelope.mail_from, list(envelope.rcpt_tos), raw
            )
        except Exception:
            logging.exception("store failed")
            return "451 4.3.0 Temporary server error"
        return f"250 2.0.0 Ok: queued as {row_id}"


def accept_any_login(server, session, envelope, mechanism, auth_data) -> AuthResult:
    return AuthResult(success=True, handled=False)


async def serve(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(args.tls_cert, args.tls_key)
    handler = StoreHandler(args.db)
    await loop.run_in_executor(handler.writer, lambda: None)  # open the database now

    def factory() -> SMTP:
        return SMTP(
            handler,
            hostname="baseline.bench.test",
            ident="baseline ESMTP",
            tls_context=context,
            require_starttls=True,
            auth_required=True,
            auth_require_tls=True,
            authenticator=accept_any_login,
            decode_data=False,
            data_size_limit=25 * 1024 * 1024,
        )

    server = await loop.create_server(factory, host=args.host, port=args.port, backlog=1024)
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        await asyncio.wait_for(stop.wait(), args.max_seconds)
    except TimeoutError:
        print("baseline_sink: --max-seconds reached, stopping", file=sys.stderr)
    server.close()
    await server.wait_closed()
    handler.writer.shutdown(wait=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--db", required=True)
    p.add_argument("--tls-cert", required=True)
    p.add_argument("--tls-key", required=True)
    p.add_argument("--max-seconds", type=float, default=1800.0)
    args = p.parse_args()
    if not ipaddress.ip_address(args.host).is_loopback:
        raise SystemExit("baseline_sink binds loopback addresses only")
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("mail.log").setLevel(logging.ERROR)  # one warning per AUTH otherwise
    asyncio.run(serve(args))


if __name__ == "__main__":
    main()
