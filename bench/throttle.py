"""The reputation gate's cost per message, and recomputing a tenant's rates from its events.

    .venv/bin/python bench/throttle.py [-n 200000] [--events 1000000] [--rounds 3]
                                       [--database sqlite|postgres] [--json FILE]

Sets up a throwaway platform (temp data dir, `manage.py bootstrap`, a tenant with a
verified domain; SQLite, or the database in DATABASE_URL; --database sqlite forces
SQLite, --database postgres starts a throwaway PostgreSQL cluster, bench/database.py),
then in this process:

1. The throttle decision, as the accept path asks it per message in steady state:
   ``may_send`` (suspension, level, rate; no recipients, so no suppression lookup) then
   ``take_permit`` (one permit spent), -n times, with the production defaults
   (SENDMSG_STATE_CACHE_SECONDS=1, SENDMSG_QUOTA_LEASE=50): the leases written to the
   counter (one per 50 messages, each its own committed statement) are included in the
   figure. Next to it, in the same run and loop shape: a bare dictionary lookup. Prints
   microseconds per decision and the ratio; the target is under 50 µs.
2. Rates for a tenant with --events events: the events are written (one message, its
   recipients, delivered and bounced events spread over the 7 days of the window), then
   ``count_events`` adds them to the daily counts (the scheduled run's work when that
   many events arrive at once), then ``evaluate`` recomputes the tenant's level from the
   counts (what every later run does). Prints both times.

--json FILE also writes the headline figures for bench/suite.py. Nothing here touches
the network.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import database
import summary

ROOT = Path(__file__).resolve().parent.parent


def prepare_environment(data_dir: Path) -> None:
    for name in [k for k in os.environ if k.startswith("SENDMSG_")]:
        del os.environ[name]
    os.environ.update(
        SENDMSG_DATA_DIR=str(data_dir),
        SENDMSG_HOSTNAME="mta.bench.test",
        SENDMSG_DEFAULT_PLAN_RATE=str(10**12),  # never the limit: every decision is a yes
        DJANGO_SETTINGS_MODULE="sendmsg.settings",
    )
    subprocess.run(
        [sys.executable, "manage.py", "bootstrap"],
        cwd=ROOT,
        env=os.environ,
        check=True,
        capture_output=True,
        timeout=600,
    )
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()


def make_tenant():
    from django.utils import timezone

    from domains.models import Domain, DomainStatus
    from domains.tenancy import add_domain, create_tenant

    tenant = create_tenant(name="Bench", owner_email="owner@bench.test").tenant
    domain = add_domain(tenant=tenant, name="bench.test")
    # Verified a month ago: past its warm-up, as an established domain.
    Domain.objects.filter(pk=domain.pk).update(
        status=DomainStatus.VERIFIED, verified_at=timezone.now() - timedelta(days=30)
    )
    domain.refresh_from_db()
    return tenant, domain


def time_decisions(tenant_id: int, n: int) -> float:
    """Seconds per decision (may_send + take_permit), leases included."""
    from reputation.gate import may_send, take_permit

    for _ in range(1000):  # warm: the tenant's state read, the first lease taken
        may_send(tenant_id=tenant_id)
        take_permit(tenant_id=tenant_id)
    start = time.perf_counter()
    for _ in range(n):
        if not (may_send(tenant_id=tenant_id).allowed and take_permit(tenant_id=tenant_id).allowed):
            raise SystemExit("the gate refused a message; the bench expects none refused")
    return (time.perf_counter() - start) / n


def time_lookups(tenant_id: int, n: int) -> float:
    table = {tenant_id: object(), tenant_id + 1: object()}
    start = time.perf_counter()
    for _ in range(n):
        if table.get(tenant_id) is None:
            raise SystemExit("unreachable")
    return (time.perf_counter() - start) / n


def write_events(tenant, domain, count: int) -> None:
    """``count`` events for one message: 98% delivered, 2% bounced (hard), over the
    window."""
    from django.db import connection, transaction
    from django.utils import timezone

    from delivery.models import Event, EventType, Message, Recipient, RecipientState, Source

    message = Message.objects.create(
        tenant=tenant,
        domain=domain,
        source=Source.API,
        mail_from="news@bench.test",
        raw=b"Subject: s\r\n\r\nx\r\n",
        size=17,
    )
    recipient = Recipient.objects.create(
        message=message,
        tenant=tenant,
        address="r@dest.test",
        domain="dest.test",
        state=RecipientState.DELIVERED,
    )
    now = timezone.now()
    fields = [
        "tenant_id",
        "message_id",
        "recipient_id",
        "type",
        "created_at",
        "text",
        "enhanced",
        "mx_host",
        "bounce_class",
        "reason",
    ]
    table = connection.ops.quote_name(Event._meta.db_table)
    columns = ", ".join(connection.ops.quote_name(Event._meta.get_field(f).column) for f in fields)
    query = f"INSERT INTO {table} ({columns}) VALUES ({', '.join(['%s'] * len(fields))})"
    created = Event._meta.get_field("created_at")
    chunk = 20_000
    for start in range(0, count, chunk):
        rows = []
        for n in range(start, min(count, start + chunk)):
            bounced = n % 50 == 0
            kind = EventType.BOUNCED if bounced else EventType.DELIVERED
            when = now - timedelta(days=n % 7, seconds=n % 3600)
            value = created.get_db_prep_value(when, connection)
            failure = ["hard", "mailbox_unknown"] if bounced else ["", ""]
            rows.append([tenant.pk, message.pk, recipient.pk, kind, value, "", "", "", *failure])
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.executemany(query, rows)


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("-n", "--decisions", type=int, default=200_000, help="per round (200000)")
    p.add_argument("--events", type=int, default=1_000_000, help="events to recompute from")
    p.add_argument("--rounds", type=int, default=3, help="decision rounds (3)")
    database.add_arguments(p, default=None)
    summary.add_argument(p)
    args = p.parse_args()
    return database.run_in_this_process(args, run)


def run(args: argparse.Namespace) -> int:
    os.chdir(ROOT)
    tmp = Path(tempfile.mkdtemp(prefix="sendmsg-bench-throttle-"))
    try:
        print("setting up a throwaway platform in a temp dir", flush=True)
        prepare_environment(tmp / "data")
        from django.conf import settings

        tenant, domain = make_tenant()
        print(
            f"database {settings.DATABASES['default']['ENGINE'].rsplit('.', 1)[-1]}; "
            f"SENDMSG_STATE_CACHE_SECONDS={settings.SENDMSG_STATE_CACHE_SECONDS}, "
            f"SENDMSG_QUOTA_LEASE={settings.SENDMSG_QUOTA_LEASE}",
            flush=True,
        )
        gate, lookup = [], []
        for rnd in range(1, args.rounds + 1):
            lookup.append(time_lookups(tenant.pk, args.decisions))
            gate.append(time_decisions(tenant.pk, args.decisions))
            print(
                f"  round {rnd}: decision {gate[-1] * 1e6:.2f} µs, "
                f"dict lookup {lookup[-1] * 1e6:.3f} µs ({args.decisions:,} each)",
                flush=True,
            )
        decision, bare = statistics.median(gate), statistics.median(lookup)

        print(f"writing {args.events:,} events over 7 days", flush=True)
        write_events(tenant, domain, args.events)
        from reputation.levels import evaluate
        from reputation.stats import count_events

        start = time.perf_counter()
        count_events()
        counted = time.perf_counter() - start
        start = time.perf_counter()
        standing, _ = evaluate(tenant.pk)
        evaluated = time.perf_counter() - start
        print(f"  level {standing.level}: {standing.reason}")

        print("\n| what | figure | baseline in the same run | ratio |")
        print("|---|---|---|---|")
        print(
            f"| throttle decision per message (may_send + take_permit) | "
            f"{decision * 1e6:.2f} µs | dict lookup {bare * 1e6:.3f} µs | "
            f"{decision / bare:.0f}x |"
        )
        print(f"| count {args.events:,} new events into daily counts | {counted:.2f} s | | |")
        print(f"| recompute the tenant's level from its counts | {evaluated * 1000:.2f} ms | | |")
        print(f"\ntarget: decision under 50 µs: {'met' if decision < 50e-6 else 'NOT met'}")
        summary.write(
            args.json,
            bench="throttle",
            database=database.vendor(),
            size=f"-n {args.decisions} --rounds {args.rounds}, {args.events:,} events",
            checks_passed=True,  # a refused decision stops the bench before this
            results=[
                summary.result(
                    "throttle decision",
                    decision * 1e6,
                    "µs",
                    baseline="dictionary lookup",
                    baseline_figure=bare * 1e6,
                    higher_is_better=False,
                    floor=("figure", "<", 50.0),
                ),
                summary.result(
                    f"count {args.events:,} events into daily counts",
                    counted,
                    "s",
                    higher_is_better=False,
                ),
            ],
        )
        return 0 if decision < 50e-6 else 1
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
