"""The message log's page time with a tenant holding 1,000,000 messages.

    .venv/bin/python bench/message_log.py [-n 1000000] [--gets 20] [--time-limit 30]
                                          [--build-limit 900] [--keep]
                                          [--database sqlite|postgres] [--json FILE]

Sets up a throwaway platform (temp data dir, `manage.py bootstrap`, a tenant with a
verified domain; SQLite, or the database in DATABASE_URL; --database sqlite forces
SQLite, --database postgres starts a throwaway PostgreSQL cluster, bench/database.py),
then in this process:

1. Writes -n messages for the tenant, each with one recipient and one event, spread over
   the last 90 days (95% delivered, 3% bounced, 1% deferred, 1% queued; recipients at 50
   domains; every tenth message tagged), with executemany in batches, one transaction a
   batch, then ANALYZE. Prints the time it took (bounded by --build-limit).
2. Times the message log page's server time: GETs through Django's test Client (the
   whole request: middleware, session, view, queries, template), logged in as the owner,
   for each case: the first page, a search by part of an address, a search by a whole
   address, a filter by state, a filter by tag, a date range, the next page (the first
   page's Older link, ``?before=``) and a deep page (page 10,000: the page after message
   499,950, by keyset as Older links lead there); and GET /api/v1/messages/ (first
   page, state, part of an address) with an API key. --gets GETs a case (after one
   untimed GET), or fewer if a case runs past --time-limit seconds. Prints median and p95 per case.
   The Overview page (domains/overview.py) is timed the same way: its queue and recent
   failures read the same recipients.
3. The baseline, in the same run: the page of one message found by its queue id (a unique
   index lookup: the least any page of the log can cost), and one ORM read of a message
   by primary key.

--json FILE also writes the headline figures (the first page, the slowest case and the
Overview against the baseline page) for bench/suite.py. Nothing here touches the network.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import database
import summary
from throttle import make_tenant, prepare_environment

ROOT = Path(__file__).resolve().parent.parent
BATCH = 50_000
DAYS = 90
RCPT_DOMAINS = 50


def state_of(n: int) -> tuple[str, str, int | None, str, str]:
    """(recipient state, event type, code, enhanced, text) of message ``n``."""
    m = n % 100
    if m < 95:
        return "delivered", "delivered", 250, "2.0.0", "OK: queued as X"
    if m < 98:
        return "bounced", "bounced", 550, "5.1.1", "No such user here"
    if m < 99:
        return "deferred", "deferred", 451, "4.7.1", "Greylisted, try again later"
    return "queued", "accepted", None, "", ""


def address_of(n: int) -> str:
    return f"user{n}@rcpt{n % RCPT_DOMAINS}.example"


def insert_sql(model, fields: list[str]) -> str:
    from django.db import connection

    quote = connection.ops.quote_name
    table = quote(model._meta.db_table)
    columns = ", ".join(quote(model._meta.get_field(f).column) for f in fields)
    return f"INSERT INTO {table} ({columns}) VALUES ({', '.join(['%s'] * len(fields))})"


def build(tenant, domain, count: int, limit: float) -> float:
    """Write ``count`` messages with a recipient and an event each; returns the seconds."""
    from django.db import connection, transaction
    from django.utils import timezone

    from delivery.models import Event, Message, Recipient

    message_sql = insert_sql(
        Message,
        [
            "id",
            "tenant",
            "domain",
            "queue_id",
            "source",
            "mail_from",
            "header_from",
            "subject",
            "message_id",
            "raw",
            "size",
            "tags",
            "metadata",
            "unsubscribe",
            "created_at",
        ],
    )
    recipient_sql = insert_sql(
        Recipient,
        [
            "id",
            "message",
            "tenant",
            "address",
            "domain",
            "state",
            "attempts",
            "next_attempt_at",
            "lease_token",
            "last_code",
            "last_enhanced",
            "last_text",
            "mx_host",
            "updated_at",
        ],
    )
    event_sql = insert_sql(
        Event,
        [
            "id",
            "tenant",
            "message",
            "recipient",
            "type",
            "created_at",
            "code",
            "enhanced",
            "text",
            "mx_host",
            "bounce_class",
            "reason",
        ],
    )
    created = Message._meta.get_field("created_at")
    # Ids above whatever bootstrap wrote (the platform's own tenant may have some).
    base = max(
        (model.objects.order_by("-pk").values_list("pk", flat=True).first() or 0)
        for model in (Message, Recipient, Event)
    )
    now = timezone.now()
    span = timedelta(days=DAYS).total_seconds()
    raw = b"From: news@bench.test\r\nTo: x\r\nSubject: Bench\r\n\r\nHello.\r\n"
    start = time.perf_counter()
    for first in range(0, count, BATCH):
        messages, recipients, events = [], [], []
        for n in range(first, min(count, first + BATCH)):
            pk = base + n + 1
            # Oldest first, so ids grow with time as they do in production.
            when = created.get_db_prep_value(
                now - timedelta(seconds=span * (count - n) / count), connection
            )
            state, kind, code, enhanced, text = state_of(n)
            address = address_of(n)
            tags = '["bench"]' if n % 10 == 0 else "[]"
            messages.append(
                [
                    pk,
                    tenant.pk,
                    domain.pk,
                    f"B{pk:015d}",
                    "api",
                    "news@bench.test",
                    "news@bench.test",
                    f"Newsletter {n % 1000}",
                    f"<{pk}@bench.test>",
                    raw,
                    len(raw),
                    tags,
                    "{}",
                    False,
                    when,
                ]
            )
            recipients.append(
                [
                    pk,
                    pk,
                    tenant.pk,
                    address,
                    address.rpartition("@")[2],
                    state,
                    0 if state == "queued" else 1,
                    when,
                    "",
                    code,
                    enhanced,
                    text,
                    "" if code is None else "mx.example",
                    when,
                ]
            )
            events.append([pk, tenant.pk, pk, pk, kind, when, code, enhanced, text, "", "", ""])
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.executemany(message_sql, messages)
            cursor.executemany(recipient_sql, recipients)
            cursor.executemany(event_sql, events)
        done = min(count, first + BATCH)
        elapsed = time.perf_counter() - start
        print(f"  {done:,} messages written ({elapsed:.0f} s)", flush=True)
        if elapsed > limit and done < count:
            raise SystemExit(f"building took over --build-limit ({limit:.0f} s); stopped")
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            for model in (Message, Recipient, Event):
                cursor.execute(
                    "SELECT setval(pg_get_serial_sequence(%s, 'id'), %s)",
                    [model._meta.db_table, base + count + 1],
                )
    return time.perf_counter() - start


def timed_gets(client, url: str, gets: int, limit: float) -> tuple[list[float], int, int]:
    """Seconds of each GET of ``url`` (after one untimed), the status, the body size."""
    response = client.get(url)
    status, size = response.status_code, len(response.content)
    times: list[float] = []
    began = time.perf_counter()
    while len(times) < gets and time.perf_counter() - began < limit:
        start = time.perf_counter()
        response = client.get(url)
        times.append(time.perf_counter() - start)
        if response.status_code != status:
            raise SystemExit(f"{url}: {response.status_code} after {status}")
    return times, status, size


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("-n", "--messages", type=int, default=1_000_000, help="messages (1000000)")
    p.add_argument("--gets", type=int, default=20, help="timed GETs a case (20)")
    p.add_argument("--time-limit", type=float, default=30.0, help="seconds a case, at most")
    p.add_argument("--build-limit", type=float, default=900.0, help="seconds to build, at most")
    p.add_argument("--keep", action="store_true", help="keep the temp dir (prints its path)")
    database.add_arguments(p, default=None)
    summary.add_argument(p)
    args = p.parse_args()
    return database.run_in_this_process(args, run)


def run(args: argparse.Namespace) -> int:
    os.chdir(ROOT)
    tmp = Path(tempfile.mkdtemp(prefix="sendmsg-bench-log-"))
    try:
        print("setting up a throwaway platform in a temp dir", flush=True)
        prepare_environment(tmp / "data")
        from django.conf import settings
        from django.db import connection
        from django.test import Client
        from django.test.utils import setup_test_environment

        from delivery.credentials import create_api_key
        from delivery.message_log import Cursor
        from delivery.models import Message
        from domains.models import Membership

        setup_test_environment()  # the test Client's host is allowed; nothing else changes
        tenant, domain = make_tenant()
        owner = Membership.objects.select_related("user").get(tenant=tenant).user
        engine = settings.DATABASES["default"]["ENGINE"].rsplit(".", 1)[-1]
        print(f"database {engine}; writing {args.messages:,} messages", flush=True)
        built = build(tenant, domain, args.messages, args.build_limit)
        size = ""
        if connection.vendor == "sqlite":
            db = Path(settings.DATABASES["default"]["NAME"])
            size = f", database {db.stat().st_size / 2**20:,.0f} MiB"
        print(f"built in {built:.1f} s{size}", flush=True)

        client = Client()
        client.force_login(owner)
        middle = Message.objects.filter(tenant=tenant).order_by("pk")[args.messages // 2]
        one = address_of(args.messages // 2 + 1)
        part = one.split("@")[0] + "@"
        deep = max(1, min(10_000, args.messages // 50 // 2))
        day = (middle.created_at).date().isoformat()
        newest = Message.objects.filter(tenant=tenant).order_by("-created_at", "-pk")
        # Pages run from a message (?before=): the Older link of the first page, and the
        # page a reader reaches after following Older deep - 1 times.
        second = Cursor.of(newest[49]).encode()
        deep_from = Cursor.of(newest[(deep - 1) * 50 - 1]).encode() if deep > 1 else second
        cases = [
            ("first page", "/messages/"),
            ("search: part of an address", f"/messages/?recipient_contains={part}"),
            ("search: a whole address", f"/messages/?recipient={one}"),
            ("filter: state bounced", "/messages/?status=bounced"),
            ("filter: tag", "/messages/?tag=bench"),
            ("filter: one day", f"/messages/?since={day}&until={day}"),
            ("next page (Older, keyset)", f"/messages/?before={second}"),
            (f"deep page ({deep:,}, keyset)", f"/messages/?before={deep_from}"),
            ("API: first page", "/api/v1/messages/"),
            ("API: filter: state bounced", "/api/v1/messages/?status=bounced"),
            ("API: search: part of an address", f"/api/v1/messages/?recipient_contains={part}"),
            ("Overview (chart, queue, recent failures)", "/"),
            ("baseline: one message by queue id", f"/messages/{middle.queue_id}/"),
        ]
        key = create_api_key(tenant=tenant)[1]
        api = Client(headers={"Authorization": f"Bearer {key}"})
        rows = []
        for label, url in cases:
            who = api if url.startswith("/api/") else client
            times, status, length = timed_gets(who, url, args.gets, args.time_limit)
            rows.append((label, url, times, status, length))
            print(
                f"  {label}: median {statistics.median(times) * 1000:.1f} ms, "
                f"p95 {p95(times) * 1000:.1f} ms ({len(times)} GETs, {status})",
                flush=True,
            )
        reads = []
        for _ in range(200):
            start = time.perf_counter()
            Message.objects.only("pk", "queue_id").get(pk=middle.pk)
            reads.append(time.perf_counter() - start)

        base = statistics.median(rows[-1][2])
        print(f"\n{args.messages:,} messages; built in {built:.1f} s{size}")
        print("\n| page | median ms | p95 ms | GETs | ratio to baseline |")
        print("|---|---|---|---|---|")
        for label, _url, times, _status, _length in rows:
            median = statistics.median(times)
            print(
                f"| {label} | {median * 1000:.1f} | {p95(times) * 1000:.1f} | {len(times)} | "
                f"{median / base:.1f} |"
            )
        print(f"| one ORM read by primary key | {statistics.median(reads) * 1000:.3f} | | 200 | |")
        bad = [f"{label}: status {status}" for label, _u, _t, status, _l in rows if status != 200]
        medians = {label: statistics.median(times) * 1000 for label, _u, times, *_ in rows}
        cases_only = {k: v for k, v in medians.items() if not k.startswith("baseline")}
        slowest = max(cases_only, key=cases_only.get)
        headline = ["first page", slowest, "Overview (chart, queue, recent failures)"]
        summary.write(
            args.json,
            bench="message_log",
            database=database.vendor(),
            size=f"{args.messages:,} messages, {args.gets} GETs a case",
            checks_passed=not bad,
            problems=bad,
            results=[
                summary.result(
                    f"message log ({args.messages:,} messages): {label}"
                    + (" (slowest case)" if label == slowest else ""),
                    medians[label],
                    "ms",
                    baseline="one message by queue id",
                    baseline_figure=base * 1000,
                    higher_is_better=False,
                )
                for label in dict.fromkeys(headline)
            ],
        )
        return 0 if not bad else 1
    finally:
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
