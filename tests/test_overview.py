"""The tenant's Overview page (domains/overview.py): the setup checklist read from the data,
the 30-day chart from the daily counts with its numbers table, the level, the domains,
the queue and the recent failures with the receivers' replies, their empty states; and
the "send a test message" button, end to end through the real platform."""

from __future__ import annotations

import html
import re
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.contrib.auth import get_user_model
from django.test import Client

from delivery.credentials import create_api_key
from delivery.models import (
    Message,
    Recipient,
    RecipientState,
    Source,
    WebhookEndpoint,
)
from domains.models import AuditEntry, Domain, DomainStatus, Membership, Role, Tenant
from reputation.models import DailyStats, Level, Standing
from tests.conftest import wait_until

pytestmark = pytest.mark.django_db

URL = "/"
SEND_TEST = "/send-test/"


def logged_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def page(user) -> str:
    response = logged_in(user).get(URL)
    assert response.status_code == 200
    return html.unescape(response.content.decode())


def steps(text: str) -> dict[str, str]:
    return dict(re.findall(r'data-step="(\w+)" data-done="(\w+)"', text))


def domain_of(tenant: Tenant, name: str, *, verified: bool = True) -> Domain:
    return Domain.objects.create(
        tenant=tenant,
        name=name,
        status=DomainStatus.VERIFIED if verified else DomainStatus.PENDING,
        dns_verified=verified,
        verified_at=datetime(2026, 1, 1, tzinfo=UTC) if verified else None,
        health_score=90 if verified else 40,
    )


def message_to(domain: Domain, address: str, state: str, *, at=None, **fields) -> Recipient:
    message = Message.objects.create(
        tenant=domain.tenant,
        domain=domain,
        source=Source.API,
        mail_from=f"news@{domain.name}",
        subject="Hello",
        raw=b"Subject: Hello\r\n\r\nx\r\n",
        size=20,
        **({"created_at": at} if at else {}),
    )
    return Recipient.objects.create(
        message=message,
        tenant=domain.tenant,
        address=address,
        domain=address.rpartition("@")[2],
        state=state,
        **fields,
    )


def webhook(tenant: Tenant) -> WebhookEndpoint:
    return WebhookEndpoint.objects.create(
        tenant=tenant,
        url="https://hooks.example.com/sendmsg",
        event_types=["delivered"],
        secret_encrypted=b"x",
    )


def viewer_of(tenant: Tenant, email: str = "viewer@acme.test"):
    user = get_user_model().objects.create_user(email, email=email, password="pw-viewer-1")
    Membership.objects.create(tenant=tenant, user=user, role=Role.VIEWER)
    return user


# -- the checklist and the empty states -----------------------------------------------------


def test_a_new_tenant_sees_every_step_to_do_and_empty_states_that_say_what_to_do(owner):
    text = page(owner[1])
    assert steps(text) == {
        "domain": "false",
        "records": "false",
        "credential": "false",
        "test": "false",
        "webhook": "false",
    }
    assert 'data-complete="false"' in text and "0 of 5 steps done" in text
    assert "No sending domains yet" in text and "Add your first domain" in text
    assert "No mail in the last 30 days" in text
    assert "Nothing waiting" in text
    assert "No bounced, deferred or expired recipients" in text
    assert "level 1 of 5" in text and 'href="/reputation/"' in text
    # The button is there, but disabled, and says what is missing.
    assert re.search(r"<button[^>]*disabled[^>]*>Send a test message", text)
    assert "A test message needs a verified sending domain" in text


def test_steps_are_done_from_the_data(verified_domain):
    tenant = verified_domain.tenant
    user = tenant.memberships.get().user
    text = page(user)
    assert steps(text) == {
        "domain": "true",
        "records": "true",
        "credential": "false",
        "test": "false",
        "webhook": "false",
    }
    create_api_key(tenant=tenant, role=Role.DEVELOPER, granted_by=Role.OWNER)
    webhook(tenant)
    text = page(user)
    assert steps(text) == {
        "domain": "true",
        "records": "true",
        "credential": "true",
        "test": "false",
        "webhook": "true",
    }
    assert "4 of 5 steps done" in text
    # A verified domain: the real button, a POST form with its CSRF token.
    form = re.search(r'<form method="post" action="/send-test/">(.*?)</form>', text, re.S)
    assert form and "csrfmiddlewaretoken" in form.group(1)
    assert "test@acme.test" in form.group(1)

    message_to(verified_domain, "alice@dest.test", RecipientState.DELIVERED)
    text = page(user)
    assert set(steps(text).values()) == {"true"}
    assert '<details id="setup" class="checklist" data-complete="true">' in text


def test_a_pending_domain_links_to_its_records(owner):
    domain = domain_of(owner[0], "pending.test", verified=False)
    text = page(owner[1])
    assert steps(text)["domain"] == "true" and steps(text)["records"] == "false"
    assert f'href="/domains/{domain.pk}/">See the records of pending.test' in text
    assert "40 / 100" in text


def test_revoked_credentials_do_not_count(owner):
    key, _ = create_api_key(tenant=owner[0], role=Role.DEVELOPER, granted_by=Role.OWNER)
    key.revoked = True
    key.save()
    assert steps(page(owner[1]))["credential"] == "false"


# -- the chart, the level, the queue and the failures ---------------------------------------


NOW = datetime(2026, 6, 1, 10, 0, tzinfo=UTC)


def test_chart_numbers_table_shows_the_daily_counts(owner, outsider):
    one = domain_of(owner[0], "one.test")
    two = domain_of(owner[0], "two.test")
    other = domain_of(outsider[0], "globex.test")
    day = NOW.date() - timedelta(days=3)
    DailyStats.objects.create(
        tenant=owner[0],
        domain=one,
        day=day,
        accepted=1200,
        delivered=1100,
        soft_bounced=7,
        deferred=9,
    )
    DailyStats.objects.create(
        tenant=owner[0], domain=two, day=day, accepted=34, delivered=30, hard_bounced=4
    )
    DailyStats.objects.create(tenant=owner[0], domain=one, day=NOW.date(), complained=2)
    DailyStats.objects.create(tenant=outsider[0], domain=other, day=day, accepted=999_999)
    # Older than the chart: not shown.
    DailyStats.objects.create(
        tenant=owner[0], domain=one, day=NOW.date() - timedelta(days=30), accepted=5
    )
    with time_machine.travel(NOW, tick=False):
        text = page(owner[1])
    rows = dict(re.findall(r'<tr data-day="([\d-]+)">(.*?)</tr>', text, re.S))
    assert len(rows) == 30
    cells = lambda d: re.findall(r"<td>([\d,]+)</td>", rows[d.isoformat()])  # noqa: E731
    # accepted, delivered, deferred, hard bounces, soft bounces, complaints: both domains
    assert cells(day) == ["1,234", "1,130", "9", "4", "7", "0"]
    assert cells(NOW.date()) == ["0", "0", "0", "0", "0", "2"]
    assert (NOW.date() - timedelta(days=30)).isoformat() not in rows
    assert "999,999" not in text
    assert "<svg" in text and "series-soft" in text and "Soft bounces" in text
    assert "series-deferred" in text and "Deferred (will retry)" in text
    assert "No mail in the last" not in text


def test_level_with_its_reason(owner):
    Standing.objects.create(
        tenant=owner[0], level=Level.WATCH, reason="Hard bounce rate 4.6% over 7 days."
    )
    text = page(owner[1])
    assert 'data-level="3"' in text and "level 3 of 5" in text
    assert "Hard bounce rate 4.6% over 7 days." in text


def test_queue_and_recent_failures_show_the_receivers_replies(owner, outsider):
    domain = domain_of(owner[0], "acme.test")
    with time_machine.travel(NOW, tick=False):
        message_to(domain, "q1@dest.test", RecipientState.QUEUED, at=NOW - timedelta(hours=2))
        message_to(domain, "q2@dest.test", RecipientState.QUEUED)
        deferred = message_to(
            domain,
            "slow@dest.test",
            RecipientState.DEFERRED,
            last_code=451,
            last_enhanced="4.7.1",
            last_text="Greylisted, try again later",
            mx_host="mx.dest.test",
        )
        bounced = message_to(
            domain,
            "nobody@dest.test",
            RecipientState.BOUNCED,
            last_code=550,
            last_enhanced="5.1.1",
            last_text="No such user here",
            updated_at=NOW + timedelta(minutes=1),
        )
        message_to(domain, "fine@dest.test", RecipientState.DELIVERED, last_code=250)
        globex = domain_of(outsider[0], "globex.test")
        message_to(globex, "x@dest.test", RecipientState.BOUNCED, last_text="Globex secret")
        text = page(owner[1])
    assert "<strong>3</strong> recipients not delivered yet" in text
    assert 'data-age-seconds="7200"' in text and "2\xa0hours ago" in text
    queue = dict(re.findall(r'<tr data-state="(\w+)"><th scope="row">.*?<td>(\d+)</td>', text))
    assert queue == {"queued": "2", "sending": "0", "deferred": "1", "held": "0"}

    failures = re.findall(r'<tr data-address="([^"]+)" data-state="(\w+)">(.*?)</tr>', text, re.S)
    assert [(a, s) for a, s, _ in failures] == [
        ("nobody@dest.test", "bounced"),
        ("slow@dest.test", "deferred"),
    ]
    assert "<code>550 5.1.1</code> No such user here" in failures[0][2]
    assert f'href="/messages/{bounced.message.queue_id}/"' in failures[0][2]
    assert "<code>451 4.7.1</code> Greylisted, try again later" in failures[1][2]
    assert "(mx.dest.test)" in failures[1][2]
    assert f'href="/messages/{deferred.message.queue_id}/"' in failures[1][2]
    assert "Globex secret" not in text and "globex.test" not in text


def test_recent_failures_are_the_last_ten(owner):
    domain = domain_of(owner[0], "acme.test")
    for n in range(12):
        message_to(
            domain,
            f"r{n}@dest.test",
            RecipientState.BOUNCED,
            last_code=550,
            updated_at=NOW + timedelta(minutes=n),
        )
    text = page(owner[1])
    shown = re.findall(r'<tr data-address="(r\d+)@dest.test" data-state="bounced">', text)
    assert shown == [f"r{n}" for n in range(11, 1, -1)]


# -- the send-test button: who may, and what it needs ----------------------------------------


def test_a_viewer_sees_no_button_and_gets_403(verified_domain):
    viewer = viewer_of(verified_domain.tenant)
    text = page(viewer)
    assert "/send-test/" not in text and "does not allow sending mail" in text
    response = logged_in(viewer).post(SEND_TEST)
    assert response.status_code == 403
    assert not Message.objects.exists() and not AuditEntry.objects.exists()


def test_send_test_needs_a_post_a_login_and_a_verified_domain(owner):
    client = logged_in(owner[1])
    assert client.get(SEND_TEST).status_code == 405
    assert Client().post(SEND_TEST).status_code == 302  # to the login page
    csrf = Client(enforce_csrf_checks=True)
    csrf.force_login(owner[1])
    assert csrf.post(SEND_TEST).status_code == 403
    domain_of(owner[0], "pending.test", verified=False)
    response = client.post(SEND_TEST, follow=True)
    assert response.redirect_chain == [("/", 302)]
    assert "needs a verified sending domain" in html.unescape(response.content.decode())
    assert not Message.objects.exists()


def test_an_outsider_cannot_send_from_another_tenant(verified_domain, outsider):
    response = logged_in(outsider[1]).post(SEND_TEST, follow=True)
    assert response.redirect_chain == [("/", 302)]  # their own tenant has no domain
    assert not Message.objects.exists()


# -- end to end: the button, the queue, the receiver ----------------------------------------


@pytest.mark.peers
@pytest.mark.django_db(transaction=True)
def test_send_test_message_is_delivered_and_its_timeline_shows_it(platform, verified_domain, mx):
    tenant = verified_domain.tenant
    user = get_user_model().objects.create_user(
        "dev@dest.test", email="dev@dest.test", password="pw-dev-1"
    )
    Membership.objects.create(tenant=tenant, user=user, role=Role.DEVELOPER)
    client = logged_in(user)

    response = client.post(SEND_TEST)
    assert response.status_code == 302
    message = Message.objects.get(tenant=tenant)
    assert response.url == f"/messages/{message.queue_id}/"
    assert message.tags == ["test"] and message.mail_from == "test@acme.test"
    assert message.source == Source.API
    entry = AuditEntry.objects.get(tenant=tenant)
    assert (entry.action, entry.target, entry.actor_id) == (
        "message.test_sent",
        message.queue_id,
        user.pk,
    )

    received = mx.wait_for(1, timeout=30)[0]
    assert received.rcpt_tos == ["dev@dest.test"]
    assert b"From: " in received.data and b"test@acme.test" in received.data
    recipient = wait_until(
        lambda: Recipient.objects.filter(
            message=message, state=RecipientState.DELIVERED, last_code=250
        ).first()
    )
    assert recipient.address == "dev@dest.test"
    text = html.unescape(client.get(response.url).content.decode())
    assert 'data-address="dev@dest.test"' in text and ">Delivered<" in text
    assert "data-refresh" not in text  # final: the page stops refreshing itself
    assert steps(page(user))["test"] == "true"


# -- in a browser: the timeline follows the message without a reload -----------------------


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("allow_orm_beside_playwright")
def test_the_timeline_page_follows_the_test_message_in_chromium(owner, chromium_page):
    from playwright.sync_api import expect

    tenant, user = owner
    domain_of(tenant, "acme.test")  # verified in the database only: nothing is relayed
    user.set_password("overview-browser-pw-1")
    user.save()
    page = chromium_page
    page.goto("/login/")
    page.get_by_label("Email or username").fill(user.username)
    page.get_by_label("Password").fill("overview-browser-pw-1")
    page.get_by_role("button", name="Log in").click()
    expect(page.locator("#setup")).to_contain_text("2 of 5 steps done")

    page.get_by_role("button", name="Send a test message").click()
    message = Message.objects.get(tenant=tenant)
    expect(page).to_have_url(re.compile(f"/messages/{message.queue_id}/$"))
    progress = page.locator("#delivery-progress")
    expect(progress).to_contain_text("updates its recipients and timeline")
    page.evaluate("window.sameDocument = 'yes'")

    # Delivered meanwhile (as the relay would record it): the page shows it by itself.
    Recipient.objects.filter(message=message).update(
        state=RecipientState.DELIVERED, last_code=250, last_text="OK", lease_token=""
    )
    row = page.locator('tr[data-address="owner@acme.test"]')
    expect(row).to_contain_text("Delivered", timeout=15_000)
    expect(progress).to_be_empty()
    assert page.evaluate("window.sameDocument") == "yes"
