"""Accounts: sign-up, password reset through the platform's own mail, the platform's set-up.

The end-to-end test relays the reset email for real: accepted from the platform's own
tenant, relayed by the platform's qcluster to the scripted MX of dest.test, DKIM-checked
by two verifiers (tests/conftest.py), and its link followed to set a new password.
"""

from __future__ import annotations

import logging
import re
from email import message_from_bytes, policy

import pytest
from django.contrib.auth import get_user_model
from django.core import mail
from django.core.cache import cache
from django.core.management import call_command
from django.test import Client

from delivery.models import Message, Recipient, RecipientState
from domains.models import AuditEntry, Domain, DomainStatus, Membership, Role, Tenant
from domains.tenancy import create_tenant
from sendmsg.platform_mail import (
    PlatformMailError,
    ensure_platform,
    platform_domain,
    send_platform_message,
)
from tests.conftest import publish_domain, run_command, wait_until

PLATFORM_BACKEND = "sendmsg.platform_mail.EmailBackend"
GOOD_PASSWORD = "mauve-otter-galaxy-42"
User = get_user_model()


@pytest.fixture(autouse=True)
def fresh_rate_limits():
    """Sign-up and reset limits count per client address in the shared cache."""
    cache.clear()
    yield
    cache.clear()


def text_of(raw: bytes) -> str:
    message = message_from_bytes(raw, policy=policy.default)
    part = message.get_body(preferencelist=("plain",))
    return part.get_content()


def link_path(text: str, prefix: str) -> str:
    """The path of the first link in ``text`` whose path starts with ``prefix``."""
    match = re.search(r"https?://[^/\s]+(" + re.escape(prefix) + r"\S*)", text)
    assert match, text
    return match.group(1)


# -- sign-up ----------------------------------------------------------------------------------


@pytest.mark.django_db
def test_sign_up_creates_tenant_and_owner_and_logs_in():
    client = Client()
    page = client.get("/account/signup/")
    assert page.status_code == 200 and b'name="csrfmiddlewaretoken"' in page.content
    assert b'<label for="id_email">' in page.content
    response = client.post(
        "/account/signup/",
        {"email": "Ada@Example.test", "password": GOOD_PASSWORD, "tenant_name": "Analytical"},
    )
    assert response.status_code == 302 and response.url == "/"
    user = User.objects.get(username="ada@example.test")
    assert user.email == "ada@example.test" and user.check_password(GOOD_PASSWORD)
    tenant = Tenant.objects.get(name="Analytical")
    assert Membership.objects.get(tenant=tenant, user=user).role == Role.OWNER
    overview = client.get("/")
    assert overview.status_code == 200 and b"Analytical" in overview.content
    entry = AuditEntry.objects.get(tenant=tenant, action="account.signed_up")
    assert entry.actor == user and entry.target == "ada@example.test"


@pytest.mark.django_db
def test_sign_up_refuses_a_taken_email_and_stores_nothing(owner):
    users, tenants = User.objects.count(), Tenant.objects.count()
    response = Client().post(
        "/account/signup/",
        {"email": "OWNER@acme.test", "password": GOOD_PASSWORD, "tenant_name": "Second"},
    )
    assert response.status_code == 400
    assert b"exists already" in response.content
    assert b'aria-invalid="true"' in response.content
    assert (User.objects.count(), Tenant.objects.count()) == (users, tenants)
    assert not AuditEntry.objects.exists()


@pytest.mark.django_db
def test_sign_up_validates_password_and_tenant_name(owner):
    client = Client()
    weak = client.post(
        "/account/signup/", {"email": "x@example.test", "password": "123", "tenant_name": "X"}
    )
    assert weak.status_code == 400 and b"too short" in weak.content
    taken = client.post(
        "/account/signup/",
        {"email": "x@example.test", "password": GOOD_PASSWORD, "tenant_name": "acme"},
    )
    assert taken.status_code == 400 and b"exists already" in taken.content
    reserved = client.post(
        "/account/signup/",
        {"email": "x@example.test", "password": GOOD_PASSWORD, "tenant_name": "Platform"},
    )
    assert reserved.status_code == 400 and b"reserved" in reserved.content
    assert not User.objects.filter(username="x@example.test").exists()


@pytest.mark.django_db
def test_sign_up_is_rate_limited(settings):
    settings.SENDMSG_SIGNUP_PER_HOUR = 2
    client = Client()
    for n in range(2):
        client.post("/account/signup/", {"email": f"n{n}@example.test"})  # invalid, counted
    response = client.post(
        "/account/signup/",
        {"email": "late@example.test", "password": GOOD_PASSWORD, "tenant_name": "Late"},
    )
    assert response.status_code == 429 and "Retry-After" in response
    assert b"Too many attempts" in response.content
    assert not User.objects.filter(username="late@example.test").exists()


@pytest.mark.django_db
def test_sign_up_closed_is_refused_and_the_login_page_hides_it(settings):
    login = Client().get("/login/")
    assert b'href="/account/signup/"' in login.content
    assert b'href="/account/password-reset/"' in login.content
    settings.SENDMSG_OPEN_SIGNUP = False
    client = Client()
    page = client.get("/account/signup/")
    assert page.status_code == 404 and b"by invitation only" in page.content
    response = client.post(
        "/account/signup/",
        {"email": "z@example.test", "password": GOOD_PASSWORD, "tenant_name": "Zed"},
    )
    assert response.status_code == 404
    assert not User.objects.filter(username="z@example.test").exists()
    login = client.get("/login/")
    assert b"/account/signup/" not in login.content and b"by invitation" in login.content
    assert b'href="/account/password-reset/"' in login.content


# -- password reset (unit: Django's locmem backend) ---------------------------------------


@pytest.mark.django_db
def test_password_reset_mail_links_to_the_public_url(owner, settings):
    settings.SENDMSG_PUBLIC_URL = "https://mail.example.test"
    response = Client().post("/account/password-reset/", {"email": "owner@acme.test"})
    assert response.status_code == 302 and response.url == "/account/password-reset/sent/"
    assert len(mail.outbox) == 1
    sent = mail.outbox[0]
    assert sent.to == ["owner@acme.test"]
    assert sent.from_email == settings.DEFAULT_FROM_EMAIL
    assert "https://mail.example.test/account/password-reset/" in sent.body
    # An unknown address gets the same answer and no mail.
    response = Client().post("/account/password-reset/", {"email": "nobody@acme.test"})
    assert response.status_code == 302 and len(mail.outbox) == 1


@pytest.mark.django_db
def test_password_reset_without_platform_set_up_still_answers_and_logs(owner, settings, caplog):
    settings.EMAIL_BACKEND = PLATFORM_BACKEND
    with caplog.at_level(logging.ERROR):
        response = Client().post(
            "/account/password-reset/", {"email": "owner@acme.test"}, follow=True
        )
    assert response.status_code == 200 and b"Check your mail" in response.content
    assert "manage.py bootstrap" in caplog.text
    assert not Message.objects.exists()


# -- the platform's own tenant and mail -----------------------------------------------------


@pytest.mark.django_db
def test_ensure_platform_is_idempotent_and_verified(settings):
    first = ensure_platform()
    assert first.created and first.tenant.name == settings.SENDMSG_PLATFORM_TENANT
    assert first.domain.name == "mta.sendmsg.test"  # the domain of SENDMSG_PLATFORM_FROM
    assert first.domain.status == DomainStatus.VERIFIED and first.domain.active_dkim_key()
    again = ensure_platform()
    assert not again.created and not again.verified_now and again.domain.pk == first.domain.pk
    assert Domain.objects.filter(name="mta.sendmsg.test").count() == 1
    assert not first.tenant.memberships.exists()
    # Its records are printed like any domain's.
    assert "_domainkey.mta.sendmsg.test." in run_command("domain", "records", "mta.sendmsg.test")


@pytest.mark.django_db
def test_bootstrap_creates_the_platform_domain_once():
    out = run_command("bootstrap")
    assert "Platform sending domain mta.sendmsg.test created" in out
    assert "manage.py domain records mta.sendmsg.test" in out
    out = run_command("bootstrap")
    assert "created" not in out.split("Platform", 1)[1]
    assert platform_domain().status == DomainStatus.VERIFIED


@pytest.mark.django_db
def test_platform_mail_errors_are_clear():
    message = mail.EmailMessage("Hi", "Body", to=["a@dest.test"])
    with pytest.raises(PlatformMailError, match="does not exist: run `manage.py bootstrap`"):
        send_platform_message(message)
    setup = ensure_platform()
    setup.domain.disable()
    with pytest.raises(PlatformMailError, match="not verified"):
        send_platform_message(message)
    # fail_silently: nothing raised, nothing sent.
    backend = mail.get_connection(PLATFORM_BACKEND, fail_silently=True)
    assert backend.send_messages([message]) == 0


@pytest.mark.django_db
def test_platform_mail_is_accepted_from_the_platform_tenant():
    setup = ensure_platform()
    backend = mail.get_connection(PLATFORM_BACKEND)
    message = mail.EmailMessage("Hi", "Body", to=["Ann <ann@dest.test>"], bcc=["b@dest.test"])
    assert backend.send_messages([message]) == 1
    stored = Message.objects.get()
    assert stored.tenant == setup.tenant and stored.domain == setup.domain
    assert stored.tags == ["platform"]
    assert stored.header_from == "sendmsg@mta.sendmsg.test"
    assert sorted(stored.recipients.values_list("address", flat=True)) == [
        "ann@dest.test",
        "b@dest.test",
    ]
    assert b"b@dest.test" not in bytes(stored.raw)  # Bcc stays off the message


# -- end to end -----------------------------------------------------------------------------


@pytest.mark.peers
@pytest.mark.django_db(transaction=True)
def test_password_reset_end_to_end_through_the_platform(platform, dns_server, mx, settings):
    settings.EMAIL_BACKEND = PLATFORM_BACKEND
    setup = ensure_platform()
    publish_domain(dns_server, setup.domain.name)
    owner = create_tenant(name="Acme", owner_email="alice@dest.test").owner
    client = Client()
    response = client.post("/account/password-reset/", {"email": "alice@dest.test"}, follow=True)
    assert response.status_code == 200 and b"Check your mail" in response.content

    received = mx.wait_for(1, timeout=30)[0]
    assert received.rcpt_tos == ["alice@dest.test"]
    assert received.mail_from.endswith("@rp.mta.sendmsg.test")  # VERP on the platform domain
    assert received.data.startswith(b"DKIM-Signature:")  # verified at teardown (conftest)
    headers = message_from_bytes(received.data, policy=policy.default)
    assert headers["From"].addresses[0].addr_spec == "sendmsg@mta.sendmsg.test"
    path = link_path(text_of(received.data), "/account/password-reset/")

    page = client.get(path, follow=True)
    assert page.status_code == 200 and b"Choose a new password" in page.content
    set_url = page.redirect_chain[-1][0]
    new_password = "quartz-lantern-meadow-7"
    done = client.post(
        set_url, {"new_password1": new_password, "new_password2": new_password}, follow=True
    )
    assert done.status_code == 200 and b"Password changed" in done.content
    assert client.get(path, follow=True).context["validlink"] is False  # used once

    login = Client().post("/login/", {"username": "alice@dest.test", "password": new_password})
    assert login.status_code == 302 and login.url == "/"
    owner.refresh_from_db()
    assert owner.check_password(new_password)

    message = Message.objects.get(tenant=setup.tenant)
    assert message.tags == ["platform"]
    wait_until(
        lambda: Recipient.objects.filter(message=message, state=RecipientState.DELIVERED).exists()
    )


def test_settings_defaults():
    from django.conf import settings

    assert settings.SENDMSG_PLATFORM_FROM == "sendmsg@mta.sendmsg.test"
    assert settings.DEFAULT_FROM_EMAIL == "sendmsg <sendmsg@mta.sendmsg.test>"
    assert settings.SENDMSG_OPEN_SIGNUP is True
    call_command("check")


# -- in a browser, without JavaScript ----------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_sign_up_and_invite_in_a_browser_without_javascript(live_server, monkeypatch):
    from playwright.sync_api import expect, sync_playwright

    from tests.browser import CHROMIUM, CHROMIUM_ARGS

    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = browser.new_context(base_url=live_server.url, java_script_enabled=False)
        context.set_default_timeout(10_000)
        page = context.new_page()
        try:
            page.goto("/login/")
            page.get_by_role("link", name="Create an account").click()
            page.get_by_label("Email address").fill("grace@example.test")
            page.get_by_label("Password").fill(GOOD_PASSWORD)
            page.get_by_label("Organization name").fill("Compilers")
            page.get_by_role("button", name="Create account").click()
            expect(page.get_by_role("status").filter(has_text="You own Compilers")).to_be_visible()

            page.goto("/team/")
            expect(page.get_by_role("heading", level=1)).to_have_text("Team of Compilers")
            invite_form = page.get_by_role("form", name="Invite someone")
            invite_form.get_by_label("Email address").fill("linus@example.test")
            invite_form.get_by_label("Role").select_option("developer")
            invite_form.get_by_role("button", name="Send invitation").click()
            expect(page.get_by_role("status").filter(has_text="linus@example.test")).to_be_visible()
            expect(page.locator('tr[data-invitation="linus@example.test"]')).to_contain_text(
                "Developer"
            )
        finally:
            context.close()
            browser.close()
    assert len(mail.outbox) == 1 and mail.outbox[0].to == ["linus@example.test"]
