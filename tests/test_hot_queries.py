"""Every hot query is served by an index, on SQLite and on PostgreSQL.

Each case runs the platform's own code (the accept path, the relay's claim, the API's
reads …) against a small tenant, records every statement it sends to the database
(``connection.execute_wrapper``: the exact SQL and parameters, nothing of ours patched),
and asks the database for each statement's plan. Every table a statement reads must be
looked up through an index, except the few small tables in SMALL_TABLES:

- PostgreSQL: ``EXPLAIN`` inside a transaction with ``SET LOCAL enable_seqscan = off``,
  so the planner never prefers a sequential scan of these tiny test tables when an
  index could serve the query: a ``Seq Scan`` that remains means no usable index exists.
  (A whole index walked in order passes here: on tables this small the planner takes
  one over a lookup on a tie of costs. SQLite, below, catches those.)
- SQLite: ``EXPLAIN QUERY PLAN``; any ``SCAN <table>`` fails: without an index it reads
  the table, and ``USING (COVERING) INDEX`` reads all of that index (only ``SEARCH``
  looks up). SQLite plans without statistics here, by the indexes alone.

Claims must also lock ``FOR UPDATE SKIP LOCKED`` on PostgreSQL (DESIGN.md, STYLE.md #5).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection, transaction
from django.db.models import Q
from django.test import RequestFactory
from django.utils import timezone
from rest_framework.parsers import JSONParser
from rest_framework.request import Request
from rest_framework.test import force_authenticate

from delivery import event_queries, message_log, retention, verp
from delivery.accept import Sender, accept_message, verified_domain
from delivery.api.event_schema import EVENT_RELATED
from delivery.api.send_views import IDEMPOTENCY_HEADER, Idempotency
from delivery.credentials import (
    check_api_key,
    check_smtp_login,
    create_api_key,
    create_smtp_credential,
)
from delivery.models import (
    Event,
    EventType,
    IdempotencyKey,
    Message,
    Outcome,
    Recipient,
    RecipientState,
    Source,
    WebhookAttempt,
    WebhookDelivery,
    WebhookDeliveryState,
    WebhookEndpoint,
    WebhookOutbox,
    finish_all,
)
from delivery.replies import SmtpReply
from delivery.tasks import sweep
from delivery.webhooks import outbox, sender
from domains.models import Domain, DomainStatus, Role, Tenant
from reputation import gate, levels, stats
from reputation.bounce_processing import soft_bounces
from reputation.complaints import message_by_ref
from reputation.models import (
    DailyStats,
    InboundReport,
    Level,
    SendCounter,
    Standing,
    Suppression,
    SuppressionReason,
)
from sendmsg import metrics

pytestmark = pytest.mark.django_db

SMALL_TABLES = {
    # Tables a plan may walk: a row per tenant, sending domain or URL, never per message.
    Tenant._meta.db_table: "held_senders() reads the suspended tenants at each claim",
    Standing._meta.db_table: "held_senders() reads the levels 4 and 5 at each claim",
    WebhookEndpoint._meta.db_table: "the outbox reads the active endpoints each run",
    WebhookOutbox._meta.db_table: "a row per stream reader (two)",
    "sqlite_sequence": "SQLite's own: a row per AUTOINCREMENT table",
}
"""The only tables any hot query may scan, each with why that stays bounded. Every
other table (messages, recipients, events, suppressions, webhook deliveries, keys,
logins, domains …) grows with the mail or is read at each login: looked up, never walked."""


# -- the world: one tenant with a bit of everything ------------------------------------------


@dataclass
class World:
    tenant: Tenant
    domain: Domain
    messages: list[Message]
    recipients: list[Recipient]
    events: list[Event]
    api_key: str
    smtp_login: tuple[str, str]
    leased: Recipient  # being sent, under lease_token "lease-1"


RAW = b"From: news@acme.test\r\nTo: a@dest.test\r\nSubject: Hi\r\n\r\nHello\r\n"


@pytest.fixture
def world(db) -> World:
    now = timezone.now()
    tenant = Tenant.objects.create(name="Acme")
    other = Tenant.objects.create(name="Globex")
    domain = Domain.objects.create(
        tenant=tenant,
        name="acme.test",
        status=DomainStatus.VERIFIED,
        dns_verified=True,
        verified_at=now - timedelta(days=40),
    )
    other_domain = Domain.objects.create(
        tenant=other, name="globex.test", status=DomainStatus.VERIFIED, dns_verified=True
    )
    ages = [timedelta(minutes=n) for n in range(6)] + [timedelta(days=45), timedelta(days=400)]
    messages = Message.objects.bulk_create(
        Message(
            tenant=owner,
            domain=sending,
            source=Source.API,
            mail_from=f"news@{sending.name}",
            header_from=f"news@{sending.name}",
            subject=f"Message {n}",
            raw=RAW,
            size=len(RAW),
            tags=["news"] if n % 2 else [],
            created_at=now - age,
        )
        for owner, sending in ((tenant, domain), (other, other_domain))
        for n, age in enumerate(ages)
    )
    states = [
        RecipientState.QUEUED,
        RecipientState.DEFERRED,
        RecipientState.DELIVERED,
        RecipientState.BOUNCED,
        RecipientState.SENDING,
        RecipientState.HELD,
        RecipientState.DELIVERED,
        RecipientState.DELIVERED,
    ]
    recipients = Recipient.objects.bulk_create(
        Recipient(
            message=message,
            tenant_id=message.tenant_id,
            address=f"Rcpt{n}@dest.test",
            domain="dest.test",
            state=states[n % len(states)],
            # Nothing due now: the sweeper's query runs, and enqueues nothing.
            next_attempt_at=now + timedelta(hours=1),
            lease_token="lease-1" if states[n % len(states)] == RecipientState.SENDING else "",
            lease_until=now + timedelta(minutes=5),
            updated_at=message.created_at,
        )
        for n, message in enumerate(messages)
    )
    events = Event.objects.bulk_create(
        Event(
            tenant_id=r.tenant_id,
            message_id=r.message_id,
            recipient=r,
            type=kind,
            created_at=r.updated_at + timedelta(seconds=seconds),
            bounce_class="soft" if kind == EventType.BOUNCED else "",
        )
        for r in recipients
        for kind, seconds in (
            (EventType.ACCEPTED, 0),
            *(
                [(EventType.BOUNCED, 5)]
                if r.state == RecipientState.BOUNCED
                else [(EventType.DELIVERED, 5)]
                if r.state == RecipientState.DELIVERED
                else []
            ),
        )
    )
    Suppression.objects.bulk_create(
        Suppression(tenant=owner, address=f"gone{n}@dest.test", reason=SuppressionReason.MANUAL)
        for owner in (tenant, other)
        for n in range(3)
    )
    _, key = create_api_key(tenant=tenant, name="app", role=Role.DEVELOPER)
    create_api_key(tenant=other, name="app")
    credential, password = create_smtp_credential(tenant=tenant, domains=[domain])
    create_smtp_credential(tenant=other)
    endpoint = WebhookEndpoint.objects.create(
        tenant=tenant,
        url="https://hooks.example.com/in",
        event_types=["delivered", "bounced"],
        secret_encrypted=b"x",
    )
    deliveries = WebhookDelivery.objects.bulk_create(
        WebhookDelivery(
            endpoint=endpoint,
            event=event,
            state=state,
            next_attempt_at=now + timedelta(minutes=10),
            updated_at=now - timedelta(days=60),
        )
        for event, state in zip(
            events[:3],
            [
                WebhookDeliveryState.PENDING,
                WebhookDeliveryState.SUCCEEDED,
                WebhookDeliveryState.FAILED,
            ],
            strict=True,
        )
    )
    WebhookAttempt.objects.create(delivery=deliveries[1], endpoint=endpoint, number=1)
    IdempotencyKey.objects.create(
        tenant=tenant, key="order-1", request_hash="0" * 64, status_code=201, response={}
    )
    for owner, sending in ((tenant, domain), (other, other_domain)):
        DailyStats.objects.bulk_create(
            DailyStats(tenant=owner, domain=sending, day=now.date() - timedelta(days=d))
            for d in range(10)
        )
        Standing.objects.create(tenant=owner, level=Level.GOOD)
        Standing.objects.create(tenant=owner, domain=sending, level=Level.EXCELLENT)
    SendCounter.objects.create(tenant=other, hour=gate.current_hour(), count=3)
    InboundReport.objects.create(tenant=tenant, recipient=recipients[3], raw=b"report")
    leased = next(r for r in recipients if r.lease_token and r.tenant_id == tenant.pk)
    return World(
        tenant=tenant,
        domain=domain,
        messages=[m for m in messages if m.tenant_id == tenant.pk],
        recipients=[r for r in recipients if r.tenant_id == tenant.pk],
        events=[e for e in events if e.tenant_id == tenant.pk],
        api_key=key,
        smtp_login=(credential.username, password),
        leased=leased,
    )


# -- what each case runs ---------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """A hot query: ``prepare(world)`` sets up and returns the call to check; every
    statement the call runs is checked."""

    id: str
    prepare: Callable[[World], Callable[[], object]]
    claims: bool = False  # a claim: on PostgreSQL its statement locks FOR UPDATE SKIP LOCKED


def _api_request(world: World, key: str):
    api_key = check_api_key(world.api_key)
    django_request = RequestFactory().post(
        "/api/v1/send/", data="{}", content_type="application/json"
    )
    django_request.META["HTTP_" + IDEMPOTENCY_HEADER.upper().replace("-", "_")] = key
    force_authenticate(django_request, token=api_key)
    return Request(django_request, parsers=[JSONParser()])


def _idempotency_replay(world: World):
    idempotency = Idempotency(_api_request(world, "order-1"))
    IdempotencyKey.objects.filter(key="order-1").update(request_hash=idempotency.digest)
    return idempotency.replay


def _count_events(world: World):
    # The steady state: the counters' position exists (its first run finds where to start).
    WebhookOutbox.objects.create(name=stats.STREAM, position=0)
    return stats.count_events


def _events(world: World):
    """The events API's base queryset (delivery/api/event_views.py EventViewMixin)."""
    return Event.objects.filter(tenant=world.tenant).select_related(*EVENT_RELATED)


def _webhook_claim(world: World):
    # delivery/webhooks/sender.py send_due: the dispatcher's claim, as it builds it.
    return lambda: (
        WebhookDelivery.objects.filter(endpoint__active=True)
        .filter(Q(event__isnull=False) | ~Q(kind=""))
        .exclude(endpoint_id__in={12345})
        .claim(limit=sender.CLAIM_BATCH, lease_seconds=60)
    )


def _claim_held_domain(world: World):
    Standing.objects.filter(domain=world.domain).update(level=Level.SUSPENDED)
    return lambda: Recipient.objects.filter(message_id__in=[m.pk for m in world.messages]).claim(
        lease_seconds=60
    )


def _held_senders_restricted(world: World):
    Standing.objects.filter(tenant=world.tenant, domain=None).update(level=Level.RESTRICTED)
    Standing.objects.filter(domain=world.domain).update(level=Level.RESTRICTED)
    return gate.held_senders


def _finish(world: World):
    reply = SmtpReply(250, "2.0.0", "OK")
    outcome = Outcome(world.leased, RecipientState.DELIVERED, reply, "lease-1", EventType.DELIVERED)
    return lambda: finish_all([outcome])


def _verp(world: World):
    recipient = world.recipients[0]
    host = world.domain.return_path_host
    one = verp.verp_address(
        tenant_id=recipient.tenant_id,
        message_id=recipient.message_id,
        recipient_id=recipient.pk,
        host=host,
    )
    group = verp.group_verp_address(
        tenant_id=recipient.tenant_id,
        message_id=recipient.message_id,
        domain=recipient.domain,
        host=host,
    )
    return lambda: (verp.is_return_path(one), verp.is_return_path(group))


CASES = [
    # -- authentication --
    Case(
        "smtp-auth-login",
        lambda w: lambda: check_smtp_login(*w.smtp_login),
    ),
    Case("api-auth-key", lambda w: lambda: check_api_key(w.api_key)),
    # -- the accept path --
    Case(
        "mail-from-verified-domain",
        lambda w: lambda: verified_domain(w.tenant.pk, "acme.test"),
    ),
    Case(
        "gate-may-send-suppression-check",
        lambda w: (
            lambda: gate.may_send(
                tenant_id=w.tenant.pk,
                recipients=["Gone1@dest.test", "new@dest.test"],
                domain=verified_domain(w.tenant.pk, "acme.test"),
            )
        ),
    ),
    Case(
        "accept-message",
        lambda w: (
            lambda: accept_message(
                sender=Sender(tenant_id=w.tenant.pk),
                mail_from="news@acme.test",
                recipients=["a@dest.test", "gone2@dest.test"],
                raw=RAW,
                source=Source.SMTP,
            )
        ),
    ),
    Case("api-idempotency-key", _idempotency_replay),
    # -- the relay --
    Case(
        "relay-claim",
        lambda w: (
            lambda: Recipient.objects.filter(message_id__in=[m.pk for m in w.messages]).claim(
                lease_seconds=60
            )
        ),
        claims=True,
    ),
    Case("relay-claim-domain-held", _claim_held_domain, claims=True),
    Case("relay-finish-outcomes", _finish),
    Case("sweeper-due", lambda w: sweep),
    Case(
        "gate-held-senders-restricted",
        _held_senders_restricted,
    ),
    # -- bounces and complaints arriving --
    Case("bounce-verp-recipient", _verp),
    Case(
        "complaint-message-by-ref",
        lambda w: lambda: message_by_ref(f"{w.messages[0].queue_id}.x"),
    ),
    Case(
        "bounce-soft-bounce-count",
        lambda w: lambda: soft_bounces(event=w.events[-1], address="rcpt3@dest.test"),
    ),
    # -- events: API pages, export, the stream readers --
    Case(
        "events-api-first-page",
        lambda w: lambda: event_queries.page(_events(w), position=None, limit=50),
    ),
    Case(
        "events-api-next-page",
        lambda w: (
            lambda: event_queries.page(
                _events(w), position=event_queries.Position.of(w.events[2]), limit=50
            )
        ),
    ),
    Case(
        "events-api-by-message",
        lambda w: (
            lambda: event_queries.page(
                event_queries.EventFilter(queue_id=w.messages[0].queue_id).apply(_events(w)),
                position=None,
                limit=50,
            )
        ),
    ),
    Case(
        "events-api-by-recipient-and-type",
        lambda w: (
            lambda: event_queries.page(
                event_queries.EventFilter(
                    recipient_address="RCPT0@dest.test", types=frozenset({EventType.ACCEPTED})
                ).apply(_events(w)),
                position=None,
                limit=50,
            )
        ),
    ),
    Case(
        "events-api-by-sending-domain",
        lambda w: (
            lambda: event_queries.page(
                event_queries.EventFilter(domain="acme.test").apply(_events(w)),
                position=None,
                limit=50,
            )
        ),
    ),
    Case(
        "events-export-chunk",
        lambda w: (
            lambda: list(
                event_queries.walk(
                    event_queries.EventFilter(
                        since=timezone.now() - timedelta(days=1), until=timezone.now()
                    ).apply(_events(w)),
                    chunk=2,
                )
            )
        ),
    ),
    Case("webhook-outbox-collect", lambda w: outbox.collect),
    Case("reputation-count-events", _count_events),
    # -- webhooks --
    Case("webhook-deliveries-claim", _webhook_claim, claims=True),
    Case("webhook-deliveries-prune", lambda w: sender.forget_finished),
    # -- the message log --
    Case(
        "message-log-first-page",
        lambda w: lambda: message_log.page_of(w.tenant, message_log.MessageFilter()),
    ),
    Case(
        "message-log-next-page",
        lambda w: (
            lambda: message_log.page_of(
                w.tenant,
                message_log.MessageFilter(),
                before=message_log.Cursor.of(w.messages[2]),
                size=2,
            )
        ),
    ),
    Case(
        "message-log-recipient-is",
        lambda w: (
            lambda: message_log.page_of(
                w.tenant, message_log.MessageFilter(recipient="RCPT1@dest.test")
            )
        ),
    ),
    Case(
        "message-log-status",
        lambda w: (
            lambda: message_log.page_of(
                w.tenant, message_log.MessageFilter(status=RecipientState.BOUNCED)
            )
        ),
    ),
    Case(
        "message-log-recipient-contains",
        lambda w: (
            lambda: message_log.page_of(
                w.tenant, message_log.MessageFilter(recipient_contains="rcpt")
            )
        ),
    ),
    Case(
        "message-log-tag",
        lambda w: lambda: message_log.page_of(w.tenant, message_log.MessageFilter(tag="news")),
    ),
    Case(
        "message-log-api-search",
        lambda w: (
            lambda: list(message_log.search(w.tenant, message_log.MessageFilter()).messages[:51])
        ),
    ),
    Case(
        "message-by-queue-id",
        lambda w: lambda: message_log.message_for(w.tenant, w.messages[0].queue_id),
    ),
    # -- reputation --
    Case(
        "levels-rates-for",
        lambda w: lambda: levels.rates_for(w.tenant.pk, w.domain.pk, timezone.now().date()),
    ),
    Case("metrics-scrape", lambda w: metrics.collect),
    # -- retention --
    Case(
        "retention-delete-expired",
        lambda w: (
            lambda: retention.delete_expired_messages(before=timezone.now() - timedelta(days=90))
        ),
    ),
    Case(
        "retention-remove-bodies",
        lambda w: (
            lambda: retention.remove_old_bodies(
                before=timezone.now() - timedelta(days=30), now=timezone.now()
            )
        ),
    ),
]


# -- recording and explaining ----------------------------------------------------------------

DML = re.compile(r"^\s*(SELECT|UPDATE|DELETE|INSERT|WITH)\b", re.IGNORECASE)


def statements_of(call: Callable[[], object]) -> list[tuple[str, Any]]:
    """(sql, params) of every query and write ``call`` sends to the database."""
    seen: list[tuple[str, Any]] = []

    def record(execute, sql, params, many, context):
        if not many and DML.match(sql):
            seen.append((sql, params))
        return execute(sql, params, many, context)

    with connection.execute_wrapper(record):
        call()
    return seen


@dataclass
class Scan:
    table: str
    how: str


def explain(sql: str, params: Any) -> tuple[str, list[Scan]]:
    """The statement's plan as text, and the tables it walks instead of looking up."""
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(f"EXPLAIN (FORMAT JSON) {sql}", params)
            plan = cursor.fetchone()[0]
            plan = json.loads(plan) if isinstance(plan, str) else plan
            cursor.execute(f"EXPLAIN {sql}", params)
            text = "\n".join(row[0] for row in cursor.fetchall())
            return text, list(_pg_scans(plan[0]["Plan"]))
        cursor.execute(f"EXPLAIN QUERY PLAN {sql}", params)
        details = [row[3] for row in cursor.fetchall()]
    return "\n".join(details), list(_sqlite_scans(details, sql))


def _pg_scans(node: dict):
    # Only what enable_seqscan = off could not talk the planner out of. (An index walked
    # whole in order passes here: on tables this small, the planner picks one over a
    # lookup by a tie of costs, so that check is SQLite's, whose planner does not.)
    if node["Node Type"] == "Seq Scan":
        yield Scan(node["Relation Name"], "Seq Scan")
    for child in node.get("Plans", ()):
        yield from _pg_scans(child)


SQLITE_SCAN = re.compile(r"^SCAN (\w+)(.*)$")
NOT_TABLES = re.compile(r"^\d|CONSTANT ROW|VIRTUAL TABLE")  # VALUES rows, json_each
TABLE_ALIAS = re.compile(r'(?:FROM|JOIN|UPDATE|INTO)\s+"(\w+)"(?:\s+(?:AS\s+)?"?(\w+)"?)?', re.I)
KEYWORDS = {"on", "where", "inner", "left", "outer", "join", "order", "group", "limit", "set"}


def _sqlite_scans(details: list[str], sql: str):
    # SQLite names a table by its alias in the plan (U0, d …): map them back.
    tables = {}
    for table, alias in TABLE_ALIAS.findall(sql):
        tables[table] = table
        if alias and alias.lower() not in KEYWORDS:
            tables[alias] = table
    for detail in details:
        match = SQLITE_SCAN.match(detail)
        if match is None or NOT_TABLES.search(detail):
            continue
        name, rest = match.groups()
        # "SCAN t USING (COVERING) INDEX i" walks all of i (to read rows in its order):
        # as unbounded as the table, just sorted. Only SEARCH is a lookup.
        yield Scan(tables.get(name, name), detail)


FOR_UPDATE_SKIP_LOCKED = re.compile(r"FOR UPDATE( OF [^)]*?)? SKIP LOCKED")


def problems_of(case: Case, statements: list[tuple[str, Any]]) -> list[str]:
    problems = []
    for sql, params in statements:
        text, scans = explain(sql, params)
        for scan in scans:
            if scan.table not in SMALL_TABLES:
                problems.append(
                    f"query {case.id!r} scans table {scan.table} ({scan.how}) in\n"
                    f"  {sql}\n  params {params}\nplan:\n{text}"
                )
    return problems


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_hot_query_uses_an_index(world: World, case: Case):
    statements = statements_of(case.prepare(world))
    assert statements, f"query {case.id!r} ran no statement"
    with transaction.atomic():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SET LOCAL enable_seqscan = off")
        problems = problems_of(case, statements)
    assert not problems, "\n\n".join(problems)
    if case.claims and connection.vendor == "postgresql":
        assert any(FOR_UPDATE_SKIP_LOCKED.search(sql) for sql, _ in statements), (
            f"claim {case.id!r} does not lock FOR UPDATE SKIP LOCKED:\n"
            + "\n".join(sql for sql, _ in statements)
        )
