"""Every dashboard page costs a bounded number of queries, whatever the tenant holds.

A tenant with 1,000 messages (recipients, events, daily counts), several domains with
their checks, SMTP logins, API keys, webhooks with deliveries and attempts, suppressions,
members and audit entries; each page, read by the owner, must stay within QUERY_BUDGET
queries. An N+1 (a query per row) would cost hundreds here.
"""

from __future__ import annotations

import random
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from delivery.credentials import create_api_key, create_smtp_credential
from delivery.models import (
    Event,
    EventType,
    Message,
    Recipient,
    RecipientState,
    Source,
    WebhookAttempt,
    WebhookDelivery,
    WebhookDeliveryState,
    WebhookEndpoint,
)
from domains.models import AuditEntry, Domain, DomainCheck, DomainStatus, Membership, Role
from domains.tenancy import add_domain
from reputation.models import DailyStats, Standing, Suppression, SuppressionReason

pytestmark = pytest.mark.django_db

QUERY_BUDGET = 20
MESSAGES = 1000

STATES = [
    (RecipientState.DELIVERED, EventType.DELIVERED, 250, "2.0.0", "OK queued"),
    (RecipientState.BOUNCED, EventType.BOUNCED, 550, "5.1.1", "No such user"),
    (RecipientState.DEFERRED, EventType.DEFERRED, 451, "4.7.1", "Greylisted"),
    (RecipientState.QUEUED, None, None, "", ""),
]


@pytest.fixture
def busy_tenant(owner, outsider):
    """The owner's tenant, full of data (and a little for the outsider, never shown)."""
    tenant, user = owner
    rng = random.Random(7)
    now = timezone.now()
    domains = [add_domain(tenant=tenant, name=f"d{n}.acme.test") for n in range(3)]
    Domain.objects.filter(pk__in=[d.pk for d in domains[:2]]).update(
        status=DomainStatus.VERIFIED, dns_verified=True, verified_at=now - timedelta(days=40)
    )
    for domain in domains:
        DomainCheck.objects.bulk_create(
            DomainCheck(domain=domain, score=60 + n, checked_at=now - timedelta(hours=n))
            for n in range(40)
        )
    messages = Message.objects.bulk_create(
        Message(
            tenant=tenant,
            domain=domains[n % 3],
            source=Source.API,
            mail_from=f"news@{domains[n % 3].name}",
            header_from=f"news@{domains[n % 3].name}",
            subject=f"Message {n}",
            raw=b"Subject: x\r\nFrom: news@acme.test\r\n\r\nbody\r\n",
            size=40,
            tags=["news"] if n % 2 else [],
            created_at=now - timedelta(minutes=n),
        )
        for n in range(MESSAGES)
    )
    recipients = []
    for n, message in enumerate(messages):
        for k in range(1 + (n % 3 == 0)):  # some messages have two recipients
            state, _, code, enhanced, text = rng.choice(STATES)
            recipients.append(
                Recipient(
                    message=message,
                    tenant=tenant,
                    address=f"r{n}-{k}@dest.test",
                    domain="dest.test",
                    state=state,
                    last_code=code,
                    last_enhanced=enhanced,
                    last_text=text,
                    updated_at=message.created_at,
                )
            )
    recipients = Recipient.objects.bulk_create(recipients)
    events = []
    for r, message in ((r, r.message) for r in recipients):
        events.append(
            Event(
                tenant=tenant,
                message=message,
                recipient=r,
                type=EventType.ACCEPTED,
                created_at=message.created_at,
            )
        )
        outcome = next(s for s in STATES if s[0] == r.state)
        if outcome[1] is not None:
            events.append(
                Event(
                    tenant=tenant,
                    message=message,
                    recipient=r,
                    type=outcome[1],
                    code=outcome[2],
                    enhanced=outcome[3],
                    text=outcome[4],
                    created_at=message.created_at + timedelta(seconds=5),
                )
            )
    events = Event.objects.bulk_create(events)
    DailyStats.objects.bulk_create(
        DailyStats(
            tenant=tenant,
            domain=domain,
            day=now.date() - timedelta(days=d),
            accepted=100 + d,
            delivered=90 + d,
            hard_bounced=d % 5,
            soft_bounced=d % 3,
            complained=d % 2,
        )
        for domain in domains
        for d in range(35)
    )
    Standing.objects.create(tenant=tenant, level=2, reason="Hard bounce rate 2.5%.")
    for domain in domains:
        Standing.objects.create(tenant=tenant, domain=domain, level=1, reason="Fine.")
    for n in range(5):
        create_smtp_credential(tenant=tenant, domains=domains[:2], description=f"app {n}")
        create_api_key(tenant=tenant, name=f"key {n}", role=Role.DEVELOPER, granted_by=Role.OWNER)
    endpoints = [
        WebhookEndpoint.objects.create(
            tenant=tenant,
            url=f"https://hooks{n}.example.com/in",
            event_types=["delivered", "bounced"],
            secret_encrypted=b"x",
        )
        for n in range(3)
    ]
    deliveries = WebhookDelivery.objects.bulk_create(
        WebhookDelivery(
            endpoint=endpoints[n % 3],
            event=events[n],
            state=WebhookDeliveryState.SUCCEEDED if n % 4 else WebhookDeliveryState.FAILED,
            attempts=1,
        )
        for n in range(300)
    )
    WebhookAttempt.objects.bulk_create(
        WebhookAttempt(
            delivery=delivery,
            endpoint=delivery.endpoint,
            number=1,
            status_code=200 if delivery.state == WebhookDeliveryState.SUCCEEDED else 500,
            succeeded=delivery.state == WebhookDeliveryState.SUCCEEDED,
        )
        for delivery in deliveries
    )
    Suppression.objects.bulk_create(
        Suppression(
            tenant=tenant,
            address=f"gone{n}@dest.test",
            reason=SuppressionReason.HARD_BOUNCE,
            source_event=events[n] if n % 2 else None,
        )
        for n in range(200)
    )
    User = get_user_model()
    for n, role in enumerate([Role.ADMIN, Role.DEVELOPER, Role.VIEWER] * 3):
        member = User.objects.create_user(f"m{n}@acme.test", email=f"m{n}@acme.test")
        Membership.objects.create(tenant=tenant, user=member, role=role)
    AuditEntry.objects.bulk_create(
        AuditEntry(tenant=tenant, actor=user, actor_label=user.username, action="domain.add")
        for _ in range(200)
    )
    # A little for the outsider: none of it may be read per row either.
    other = add_domain(tenant=outsider[0], name="globex.test")
    Message.objects.create(
        tenant=outsider[0], domain=other, source=Source.API, mail_from="a@globex.test", size=1
    )
    return {
        "tenant": tenant,
        "user": user,
        "domain": domains[0],
        "message": messages[3],
        "endpoint": endpoints[0],
    }


PAGES = [
    ("dashboard:overview", None),
    ("dashboard:domains", None),
    ("dashboard:domain", "domain"),
    ("message_log:list", None),
    ("message_log:list?status=bounced", None),
    ("message_log:list?recipient_contains=dest&page=3", None),
    ("message_log:detail", "message"),
    ("suppressions:list", None),
    ("credentials:list", None),
    ("webhooks:list", None),
    ("webhooks:detail", "endpoint"),
    ("reputation:page", None),
    ("team:list", None),
    ("audit:list", None),
    ("settings:page", None),
]


def url_of(name: str, arg: str | None, data: dict) -> str:
    name, _, query = name.partition("?")
    if arg is None:
        args = []
    elif arg == "message":
        args = [data["message"].queue_id]
    else:
        args = [data[arg].pk]
    return reverse(name, args=args) + (f"?{query}" if query else "")


@pytest.mark.parametrize(("name", "arg"), PAGES, ids=[name for name, _ in PAGES])
def test_page_stays_within_the_query_budget(busy_tenant, name, arg, django_assert_max_num_queries):
    url = url_of(name, arg, busy_tenant)
    client = Client()
    client.force_login(busy_tenant["user"])
    with django_assert_max_num_queries(QUERY_BUDGET):
        response = client.get(url)
    assert response.status_code == 200, (url, response.status_code)
