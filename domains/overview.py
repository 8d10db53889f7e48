"""Everything the tenant's Overview page shows, read in a fixed number of queries.

The page is the first thing a tenant sees, so it must cost the same for a new tenant as
for one with a million messages: the chart comes from the daily counts (DailyStats,
grouped by day in one query, never by scanning events), the onboarding checklist from one
query of EXISTS tests, the queue from one grouped count, the recent failures from one
bounded query of recipients. Nothing is read per domain, per day or per message.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db.models import Count, Exists, Min, OuterRef
from django.urls import reverse
from django.utils import timezone

from delivery.accept import AcceptError, Sender, accept_message
from delivery.mime import MessageError, build_message
from delivery.models import (
    ApiKey,
    Message,
    Recipient,
    RecipientState,
    SmtpCredential,
    Source,
    WebhookEndpoint,
)
from domains.models import Domain, DomainStatus, Tenant
from reputation.chart import VOLUME_PANELS, Chart, daily_chart
from reputation.models import Standing
from reputation.page import LevelView, chart_days, level_view

RECENT_FAILURES = 10
FAILED_STATES = (RecipientState.BOUNCED, RecipientState.DEFERRED, RecipientState.EXPIRED)
QUEUE_STATES = (
    RecipientState.QUEUED,
    RecipientState.SENDING,
    RecipientState.DEFERRED,
    RecipientState.HELD,
)
TEST_TAG = "test"


# -- the onboarding checklist ---------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    """One thing a new tenant does before its mail flows; ``done`` is read from the data."""

    key: str
    title: str
    done: bool
    help: str
    url: str
    action: str  # the link's words


@dataclass(frozen=True)
class Checklist:
    steps: list[Step]

    @property
    def done(self) -> int:
        return sum(step.done for step in self.steps)

    @property
    def complete(self) -> bool:
        return all(step.done for step in self.steps)


def checklist(tenant: Tenant, domains: list[Domain]) -> Checklist:
    """The five setup steps; one query for all the tests the domains list cannot answer."""
    has = (
        Tenant.objects.filter(pk=tenant.pk)
        .annotate(
            smtp=Exists(SmtpCredential.objects.filter(tenant=OuterRef("pk"), revoked=False)),
            key=Exists(ApiKey.objects.filter(tenant=OuterRef("pk"), revoked=False)),
            message=Exists(Message.objects.filter(tenant=OuterRef("pk"))),
            webhook=Exists(WebhookEndpoint.objects.filter(tenant=OuterRef("pk"))),
        )
        .values("smtp", "key", "message", "webhook")
        .get()
    )
    verified = next((d for d in domains if d.status == DomainStatus.VERIFIED), None)
    # The domain to publish records for: the first one still waiting, else the first.
    waiting = next((d for d in domains if d.status == DomainStatus.PENDING), None)
    to_publish = verified or waiting or (domains[0] if domains else None)
    domains_url = reverse("dashboard:domains")
    records_url = reverse("dashboard:domain", args=[to_publish.pk]) if to_publish else domains_url
    return Checklist(
        [
            Step(
                "domain",
                "Add a sending domain",
                bool(domains),
                "The domain your mail comes from, e.g. example.com.",
                domains_url,
                "Add a domain",
            ),
            Step(
                "records",
                "Publish its DNS records",
                verified is not None,
                "Publish the DKIM, return-path, SPF and DMARC records the domain page shows "
                "at your DNS provider; the page checks them live and the domain is "
                "verified once they are right.",
                records_url,
                f"See the records of {to_publish.display_name}" if to_publish else "Add a domain",
            ),
            Step(
                "credential",
                "Create an SMTP login or an API key",
                has["smtp"] or has["key"],
                "Your application sends through SMTP submission with a login, or through "
                "the REST API with a key.",
                reverse("credentials:list"),
                "Create one",
            ),
            Step(
                "test",
                "Send a test message",
                has["message"],
                "Send one message to yourself and watch it arrive; the button below does "
                "it once a domain is verified.",
                "#send-test",
                "Send a test message",
            ),
            Step(
                "webhook",
                "Add a webhook",
                has["webhook"],
                "Get every delivery, bounce and complaint pushed to your application.",
                reverse("webhooks:list"),
                "Add a webhook",
            ),
        ]
    )


# -- the queue and the failures -------------------------------------------------------------


@dataclass(frozen=True)
class Queue:
    """Recipients not final yet: counts by state and the oldest one's acceptance time."""

    counts: dict[str, int]
    oldest: datetime | None

    @property
    def waiting(self) -> int:
        return sum(self.counts.values())

    @property
    def rows(self) -> list[tuple[str, str, int]]:
        return [
            (state.value, state.label, self.counts.get(state.value, 0)) for state in QUEUE_STATES
        ]


def queue(tenant: Tenant) -> Queue:
    """Recipients in the queue are few next to final ones: the index on (tenant, state,
    updated_at, message) counts them and finds the first message still waiting without
    reading a row (ids grow with acceptance time, so the lowest is the oldest); one more
    query reads that message's time."""
    rows = (
        Recipient.objects.filter(tenant=tenant, state__in=QUEUE_STATES)
        .values("state")
        .annotate(n=Count("*"), first=Min("message_id"))
        .order_by()
    )
    counts = {row["state"]: row["n"] for row in rows}
    first = min((row["first"] for row in rows), default=None)
    oldest = None
    if first is not None:
        oldest = Message.objects.filter(pk=first).values_list("created_at", flat=True).first()
    return Queue(counts=counts, oldest=oldest)


def recent_failures(tenant: Tenant) -> list[Recipient]:
    """The last recipients that bounced, were deferred or expired, newest first, with the
    remote server's last reply; only the columns shown are read (never a body).

    One short query per state, merged here: each walks the index on (tenant, state,
    updated_at) backwards and stops after RECENT_FAILURES rows, where one query for the
    three states together would sort every failure the tenant ever had."""
    rows: list[Recipient] = []
    for state in FAILED_STATES:
        rows += (
            Recipient.objects.filter(tenant=tenant, state=state)
            .select_related("message")
            .only(
                "address",
                "state",
                "attempts",
                "last_code",
                "last_enhanced",
                "last_text",
                "mx_host",
                "updated_at",
                "next_attempt_at",
                "message__queue_id",
                "message__subject",
            )
            .order_by("-updated_at", "-pk")[:RECENT_FAILURES]
        )
    rows.sort(key=lambda r: (r.updated_at, r.pk), reverse=True)
    return rows[:RECENT_FAILURES]


# -- the page --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Overview:
    domains: list[Domain]
    checklist: Checklist
    chart: Chart
    level: LevelView
    queue: Queue
    failures: list[Recipient]
    test_domain: Domain | None  # where the test message comes from; None: none verified
    now: datetime

    @property
    def queue_age(self) -> timedelta | None:
        return self.now - self.queue.oldest if self.queue.oldest else None


def overview(tenant: Tenant) -> Overview:
    """Assemble the Overview of ``tenant``; every query is scoped to it."""
    now = timezone.now()
    domains = list(Domain.objects.for_tenant(tenant).order_by("name"))
    own = Standing.objects.filter(tenant=tenant, domain__isnull=True).first()
    return Overview(
        domains=domains,
        checklist=checklist(tenant, domains),
        chart=daily_chart(chart_days(tenant, now.date()), panels=VOLUME_PANELS),
        level=level_view(own),
        queue=queue(tenant),
        failures=recent_failures(tenant),
        test_domain=first_verified(domains),
        now=now,
    )


def first_verified(domains: list[Domain]) -> Domain | None:
    return next((d for d in domains if d.status == DomainStatus.VERIFIED), None)


# -- the test message ------------------------------------------------------------------------


class CannotSendTest(Exception):
    """Why no test message can be sent now, in words for the tenant."""


def own_address(user) -> str:
    """Where the test message goes: the person's own address (their login when it is one)."""
    address = (user.email or "").strip()
    if not address and "@" in user.get_username():
        address = user.get_username()
    if not address:
        raise CannotSendTest("Your account has no email address to send the test message to.")
    return address


def send_test_message(*, tenant: Tenant, to: str) -> Message:
    """Accept a small message from ``test@`` the tenant's first verified domain to ``to``,
    tagged ``test``, through the same accept path as the API; it is then queued and relayed
    like any other. Raises CannotSendTest when it cannot be sent."""
    domain = first_verified(list(Domain.objects.for_tenant(tenant).verified().order_by("name")))
    if domain is None:
        raise CannotSendTest(
            "A test message needs a verified sending domain: publish your domain's DNS "
            "records and check it first."
        )
    sender = f"test@{domain.name}"
    try:
        raw = build_message(
            from_addr=sender,
            from_name=f"{tenant.name} via sendmsg",
            to=[to],
            subject=f"Test message from {domain.display_name}",
            text=(
                f"This is a test message from {tenant.name}, sent from the sendmsg "
                f"dashboard through {domain.display_name}.\n\n"
                "If you can read it, your domain is set up and mail flows.\n"
            ),
        )
        return accept_message(
            sender=Sender(tenant_id=tenant.pk),
            mail_from=sender,
            recipients=[to],
            raw=raw,
            source=Source.API,
            tags=[TEST_TAG],
        )
    except (AcceptError, MessageError) as exc:
        raise CannotSendTest(f"The test message was refused: {exc}") from None
