"""The Settings page (/settings/): the tenant's name and one-click unsubscribe default,
changed by owners and admins with one audit row each time; the operator's facts shown to
every member; developers and viewers get 403 on POST; only ever the user's own tenant."""

from __future__ import annotations

import email
from email import policy

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from rest_framework.test import APIClient

from delivery.credentials import create_api_key
from delivery.models import Message
from delivery.relay import deliver_message
from domains.models import AuditEntry, Membership, Role, Tenant
from domains.tenant_settings import ACTION

pytestmark = pytest.mark.django_db

PAGE = "/settings/"
User = get_user_model()


def logged_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def add_member(tenant: Tenant, email_address: str, role: str):
    user = User.objects.create_user(email_address, email=email_address)
    Membership.objects.create(tenant=tenant, user=user, role=role)
    return user


@pytest.fixture
def team(owner):
    """Acme with an owner, an admin, a developer and a viewer."""
    tenant, owner_user = owner
    return {
        "tenant": tenant,
        Role.OWNER: owner_user,
        Role.ADMIN: add_member(tenant, "admin@acme.test", Role.ADMIN),
        Role.DEVELOPER: add_member(tenant, "dev@acme.test", Role.DEVELOPER),
        Role.VIEWER: add_member(tenant, "viewer@acme.test", Role.VIEWER),
    }


def stored(tenant: Tenant) -> tuple[str, bool]:
    tenant.refresh_from_db()
    return tenant.name, tenant.list_unsubscribe


def audit_rows(tenant: Tenant):
    return AuditEntry.objects.filter(tenant=tenant, action=ACTION)


# -- changing -------------------------------------------------------------------------------


@pytest.mark.parametrize("role", [Role.OWNER, Role.ADMIN])
def test_owner_and_admin_change_name_and_unsubscribe_default(team, role):
    tenant, user = team["tenant"], team[role]
    client = logged_in(user)
    page = client.get(PAGE)
    assert page.status_code == 200
    assert b'name="name"' in page.content and b"Save settings" in page.content

    response = client.post(PAGE, {"name": "  Acme Corp ", "list_unsubscribe": "on"}, follow=True)
    assert response.status_code == 200
    assert response.redirect_chain == [(PAGE, 302)]
    assert stored(tenant) == ("Acme Corp", True)
    body = response.content.decode()
    assert "Settings saved: the organization name and unsubscribe default changed." in body
    assert "Settings of Acme Corp" in body
    [row] = audit_rows(tenant)
    assert row.actor == user and row.actor_label == user.get_username()
    assert row.target == "Acme Corp"
    assert row.detail == {
        "name": {"old": "Acme", "new": "Acme Corp"},
        "list_unsubscribe": {"old": False, "new": True},
    }

    # Turning the default off again changes one field: one more row, naming only it.
    client.post(PAGE, {"name": "Acme Corp"})
    assert stored(tenant) == ("Acme Corp", False)
    latest = audit_rows(tenant).first()
    assert latest.detail == {"list_unsubscribe": {"old": True, "new": False}}
    assert audit_rows(tenant).count() == 2


def test_saving_unchanged_values_stores_nothing_and_writes_no_row(team):
    tenant = team["tenant"]
    response = logged_in(team[Role.OWNER]).post(PAGE, {"name": "Acme"}, follow=True)
    assert response.status_code == 200
    assert b"Nothing changed." in response.content
    assert stored(tenant) == ("Acme", False)
    assert not audit_rows(tenant).exists()


def test_changing_only_the_case_of_the_name_is_allowed(team):
    tenant = team["tenant"]
    logged_in(team[Role.ADMIN]).post(PAGE, {"name": "ACME"})
    assert stored(tenant) == ("ACME", False)
    assert audit_rows(tenant).get().detail == {"name": {"old": "Acme", "new": "ACME"}}


@pytest.fixture
def cached_state(settings):
    """The per-process read caches on, as in production (tests/settings.py turns them
    off), so the next message must see the change through the cache's forget."""
    settings.SENDMSG_STATE_CACHE_SECONDS = 60


def test_the_very_next_api_send_uses_the_new_unsubscribe_default(
    team, verified_domain, mx, cached_state
):
    tenant = team["tenant"]
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {create_api_key(tenant=tenant)[1]}")
    body = {"from": "news@acme.test", "to": ["a@dest.test"], "subject": "Hi", "text": "Hello"}

    before = api.post("/api/v1/send/", body, format="json")
    assert before.status_code == 201, before.json()
    assert Message.objects.get().unsubscribe is False  # the default, now kept in the cache

    response = logged_in(team[Role.ADMIN]).post(PAGE, {"name": "Acme", "list_unsubscribe": "on"})
    assert response.status_code == 302

    after = api.post("/api/v1/send/", body, format="json")
    assert after.status_code == 201, after.json()
    message = Message.objects.latest("pk")
    assert message.unsubscribe is True
    # The headers are added per recipient when the message is relayed (delivery/unsubscribe.py).
    assert deliver_message(message.pk) == 1
    [got] = mx.messages
    received = email.message_from_bytes(got.data, policy=policy.default)
    [link] = received.get_all("List-Unsubscribe")
    assert link.startswith("<https://") and "/u/" in link
    assert received["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"


# -- refusing -------------------------------------------------------------------------------


@pytest.mark.parametrize("role", [Role.DEVELOPER, Role.VIEWER])
def test_developer_and_viewer_see_the_values_but_cannot_change_them(team, role):
    tenant = team["tenant"]
    Tenant.objects.filter(pk=tenant.pk).update(list_unsubscribe=True)
    client = logged_in(team[role])
    page = client.get(PAGE)
    assert page.status_code == 200
    body = page.content.decode()
    assert "Settings of Acme" in body
    assert 'data-setting="name">Acme<' in body
    assert "On: every message gets" in body
    assert "only owners and admins change them" in body
    assert 'name="name"' not in body and "Save settings" not in body
    assert "Deleting the organization" not in body

    response = client.post(PAGE, {"name": "Hijacked", "list_unsubscribe": ""})
    assert response.status_code == 403
    assert stored(tenant) == ("Acme", True)
    assert not AuditEntry.objects.exists()


def test_a_name_another_tenant_has_is_refused_whatever_its_case(team, outsider):
    tenant = team["tenant"]
    response = logged_in(team[Role.OWNER]).post(PAGE, {"name": "GLOBEX", "list_unsubscribe": "on"})
    assert response.status_code == 400
    body = response.content.decode()
    assert "An organization named &#x27;GLOBEX&#x27; exists already" in body
    assert 'aria-invalid="true"' in body and 'value="GLOBEX"' in body  # kept to correct
    assert stored(tenant) == ("Acme", False)  # the other field is not saved either
    assert not AuditEntry.objects.exists()


def test_the_platforms_tenant_name_is_reserved(team, settings):
    settings.SENDMSG_PLATFORM_TENANT = "platform"
    response = logged_in(team[Role.OWNER]).post(PAGE, {"name": "Platform"})
    assert response.status_code == 400
    assert b"is reserved for the platform" in response.content
    assert stored(team["tenant"]) == ("Acme", False)


def test_an_empty_or_too_long_name_is_a_form_error(team):
    client = logged_in(team[Role.OWNER])
    assert client.post(PAGE, {"name": "   "}).status_code == 400
    assert client.post(PAGE, {"name": "x" * 101}).status_code == 400
    assert stored(team["tenant"]) == ("Acme", False)
    assert not AuditEntry.objects.exists()


def test_anonymous_is_sent_to_log_in_and_a_user_without_tenant_gets_no_form(db):
    response = Client().post(PAGE, {"name": "x"})
    assert response.status_code == 302 and response.url.startswith("/login/")
    loner = User.objects.create_user("loner@example.test")
    client = logged_in(loner)
    page = client.get(PAGE)
    assert page.status_code == 200 and b"No tenant yet" in page.content
    assert b'name="name"' not in page.content
    assert client.post(PAGE, {"name": "Mine"}).status_code == 404


# -- only one's own tenant ------------------------------------------------------------------


def test_outsider_only_ever_sees_and_changes_their_own_tenant(team, outsider):
    acme = team["tenant"]
    globex, stranger = outsider
    client = logged_in(stranger)
    assert client.post("/switch/", {"tenant": acme.pk}).status_code == 404
    # A session (or form) naming Acme still means the stranger's own tenant.
    session = client.session
    session["tenant_id"] = acme.pk
    session.save()
    page = client.get(PAGE)
    assert b"Settings of Globex" in page.content and b"Acme" not in page.content

    client.post(PAGE, {"tenant": acme.pk, "name": "Taken Over", "list_unsubscribe": "on"})
    assert stored(acme) == ("Acme", False)
    assert not AuditEntry.objects.filter(tenant=acme).exists()
    assert stored(globex) == ("Taken Over", True)  # the one tenant this page is about


# -- facts ----------------------------------------------------------------------------------


def test_facts_plan_rate_state_and_where_to_connect(team, settings):
    settings.SENDMSG_DEFAULT_PLAN_RATE = 5000
    tenant = team["tenant"]
    client = logged_in(team[Role.VIEWER])
    body = client.get(PAGE).content.decode()
    assert "Up to 5,000 messages per hour (the platform's default)" in body
    assert "Active: sending is allowed." in body
    assert f"<code>{settings.SENDMSG_HOSTNAME}</code>" in body
    assert f"<code>{settings.SENDMSG_SUBMISSION_PORT}</code>" in body
    assert f"<code>{settings.SENDMSG_SUBMISSION_TLS_PORT}</code>" in body
    assert f"<code>{settings.SENDMSG_PUBLIC_URL}/api/v1/</code>" in body

    Tenant.objects.filter(pk=tenant.pk).update(plan_rate=250)
    tenant.refresh_from_db()
    tenant.suspend("Too many complaints from list X")
    body = client.get(PAGE).content.decode()
    assert "Up to 250 messages per hour." in body
    assert "Suspended</strong>" in body and "Too many complaints from list X" in body
    assert tenant.suspended_at.strftime("%Y-%m-%d") in body


def test_only_owners_read_how_a_tenant_is_deleted(team):
    owner_page = " ".join(logged_in(team[Role.OWNER]).get(PAGE).content.decode().split())
    assert "Deleting the organization" in owner_page
    assert "is done by the platform's operators: ask them" in owner_page
    assert "Deleting the organization" not in logged_in(team[Role.ADMIN]).get(PAGE).content.decode()


def test_nav_links_the_page_and_marks_it_current(team):
    body = logged_in(team[Role.VIEWER]).get(PAGE).content.decode()
    assert '<a href="/settings/" aria-current="page">Settings</a>' in body
    assert (
        '<a href="/settings/">Settings</a>'
        in logged_in(team[Role.VIEWER]).get("/").content.decode()
    )


def test_the_form_is_labelled_and_carries_a_csrf_token(team):
    client = Client(enforce_csrf_checks=True)
    client.force_login(team[Role.OWNER])
    body = client.get(PAGE).content.decode()
    assert 'name="csrfmiddlewaretoken"' in body
    assert '<label for="id_name">Organization name</label>' in body
    assert '<label for="id_list_unsubscribe"><input type="checkbox"' in body
    assert client.post(PAGE, {"name": "Acme Corp"}).status_code == 403  # no token
    assert stored(team["tenant"]) == ("Acme", False)
