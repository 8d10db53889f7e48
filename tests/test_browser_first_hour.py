"""The first hour of a new user, in a real Chromium against the live server, with the
platform's real SMTP and worker processes, the test DNS server, a scripted MX receiver
and a webhook receiver: sign up → add a domain → see its records → (DNS publishes them)
→ check now: verified → SMTP login and API key, each shown once → send a test message →
see it delivered in its timeline → add a webhook → send a test event.

Screenshots of the overview, the domain setup and the message timeline are saved
(tests/browser.py: SCREENSHOTS) for README.md.
"""

from __future__ import annotations

import json
import re

import pytest
from playwright.sync_api import expect

from delivery.credentials import check_smtp_login
from delivery.models import ApiKey, Message, RecipientState
from domains.models import AuditEntry, Domain, DomainStatus, Membership, Role
from reputation.tasks import update_reputation
from tests.browser import screenshot
from tests.conftest import publish_domain
from tests.peers.http_receiver import HttpReceiver

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("allow_orm_beside_playwright"),
]
EMAIL = "founder@dest.test"  # dest.test's MX is the scripted receiver
PASSWORD = "first-hour-pw-1"


@pytest.fixture
def webhook_receiver(settings):
    settings.SENDMSG_WEBHOOK_ALLOW_PRIVATE = True  # the receiver listens on loopback
    with HttpReceiver("127.0.0.5") as server:
        yield server


def test_the_first_hour(platform, dns_server, mx, webhook_receiver, chromium_page):
    page = chromium_page

    # Sign up: a tenant of one's own, and the overview's checklist with nothing done.
    page.goto("/login/")
    page.get_by_role("link", name="Create an account").click()
    page.get_by_label("Email address").fill(EMAIL)
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.get_by_label("Organization name").fill("Initech")
    page.get_by_role("button", name="Create account").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Initech")
    checklist = page.locator("#setup")
    expect(checklist).to_have_attribute("data-complete", "false")
    expect(checklist).to_contain_text("0 of 5 steps done")
    membership = Membership.objects.get(user__username=EMAIL)
    assert membership.tenant.name == "Initech" and membership.role == Role.OWNER

    # A domain, its records, and the live check once DNS publishes them.
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Domains").click()
    page.get_by_label("Domain name").fill("initech.test")
    page.get_by_role("button", name="Add domain").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("initech.test")
    domain = Domain.objects.get(name="initech.test")
    key = domain.active_dkim_key()
    expect(page.locator(f'tr[data-host="{key.record_name}"]')).to_contain_text(key.record_value)
    expect(page.locator("#domain-status")).to_have_attribute("data-status", "pending")
    screenshot(page, "domain-setup")
    publish_domain(dns_server, "initech.test")
    page.get_by_role("button", name="Check now").click()
    expect(page.locator("#domain-status")).to_have_attribute("data-status", "verified")
    assert Domain.objects.get(pk=domain.pk).status == DomainStatus.VERIFIED

    # An SMTP login and an API key, each secret shown once.
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Credentials").click()
    page.get_by_role("button", name="Create SMTP login").click()
    username = page.locator("#new-username").inner_text()
    password = page.locator("#new-secret-value").inner_text()
    assert check_smtp_login(username, password) is not None
    page.get_by_role("button", name="Create API key").click()
    api_key = page.locator("#new-secret-value").inner_text()
    assert re.fullmatch(r"sm_\w+_\S+", api_key)
    page.reload()
    expect(page.locator("#new-secret-value")).to_have_count(0)
    assert ApiKey.objects.filter(tenant=membership.tenant).count() == 1

    # The test message, followed in its timeline until the receiver has it.
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Overview").click()
    page.get_by_role("button", name="Send a test message").click()
    expect(page.get_by_role("heading", level=2, name="Timeline")).to_be_visible()
    row = page.locator(f'#recipients tr[data-address="{EMAIL}"]')
    expect(row).to_contain_text("Delivered", timeout=30_000)  # the page refreshes itself
    expect(page.locator("#timeline")).to_contain_text("Delivered")
    [received] = mx.wait_for(1, timeout=10)
    assert received.rcpt_tos == [EMAIL]
    message = Message.objects.get(tenant=membership.tenant)
    assert message.recipients.get().state == RecipientState.DELIVERED
    assert message.queue_id in page.url
    screenshot(page, "message-timeline")

    # A webhook, and a test event it receives.
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Webhooks").click()
    page.get_by_label("URL").fill(webhook_receiver.url())
    page.get_by_role("button", name="Add endpoint").click()
    page.get_by_role("button", name="Send test ping").click()
    [ping] = webhook_receiver.wait_for(1)
    assert json.loads(ping.body)["type"] == "test"
    expect(page.locator("body")).to_contain_text("200")

    # Every step done: the checklist folds away, the chart counts the test message once the
    # scheduled count has run, and the owner's audit log has the hour.
    update_reputation()
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Overview").click()
    volume = page.locator("#volume")
    expect(volume.locator("table")).to_contain_text("1")
    expect(page.locator("#setup")).to_have_attribute("data-complete", "true")
    screenshot(page, "overview")
    actions = set(
        AuditEntry.objects.filter(tenant=membership.tenant).values_list("action", flat=True)
    )
    assert {
        "account.signed_up",
        "domain.added",
        "domain.checked",
        "smtp_credential.created",
        "api_key.created",
        "message.test_sent",
        "webhook.created",
        "webhook.test_sent",
    } <= actions
