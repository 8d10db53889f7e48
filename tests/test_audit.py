"""The audit log: every change made through the dashboard or the API leaves exactly one
row naming who made it (and never a secret), stored with the change or not at all; the
audit page lists, filters, searches and pages it, for owners and admins only."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.utils import timezone
from playwright.sync_api import expect
from rest_framework.test import APIClient

from delivery.credentials import create_api_key, create_smtp_credential
from delivery.models import ApiKey, Message, Source, WebhookEndpoint
from domains.models import AuditEntry, Domain, Membership, Role
from domains.tenancy import add_domain
from reputation import suppressions
from tests.browser import log_in
from tests.peers.http_receiver import HttpReceiver

pytestmark = pytest.mark.django_db


def logged_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def person(tenant, role: str, email: str):
    user = get_user_model().objects.create_user(email, password="pw-audit-1")
    Membership.objects.create(tenant=tenant, user=user, role=role)
    return user


@pytest.fixture
def hooks(settings):
    """A webhook receiver on loopback, which the platform may call in tests."""
    settings.SENDMSG_WEBHOOK_ALLOW_PRIVATE = True
    with HttpReceiver("127.0.0.5") as server:
        yield server


@pytest.fixture
def acme(owner, hooks, dns_server):
    """One of each thing a change can be made to, in Acme; no audit row yet."""
    tenant = owner[0]
    domain = add_domain(tenant=tenant, name="acme.test")
    smtp, _ = create_smtp_credential(tenant=tenant, description="shop")
    key, _ = create_api_key(tenant=tenant, name="ci", role=Role.DEVELOPER)
    endpoint = WebhookEndpoint.objects.create(
        tenant=tenant, url=hooks.url(), event_types=["delivered"], secret_encrypted=b""
    )
    entry, _ = suppressions.add(tenant=tenant, address="gone@dest.test", actor="test")
    assert not AuditEntry.objects.exists()
    return {
        "tenant": tenant,
        "domain": domain,
        "smtp": smtp,
        "key": key,
        "hook": endpoint,
        "entry": entry,
        "ids": {
            "domain": domain.pk,
            "smtp": smtp.pk,
            "key": key.pk,
            "hook": endpoint.pk,
            "entry": entry.pk,
        },
    }


def only_row() -> AuditEntry:
    rows = list(AuditEntry.objects.all())
    assert len(rows) == 1, [str(r) for r in rows]
    return rows[0]


# -- the dashboard -------------------------------------------------------------------------

DASHBOARD_CHANGES = [
    # (url, data, action, target: a name in ``acme`` or a literal)
    ("/domains/", {"name": "new.test"}, "domain.added", "new.test"),
    ("/domains/{domain}/check/", {}, "domain.checked", "acme.test"),
    ("/domains/{domain}/disable/", {}, "domain.disabled", "acme.test"),
    ("/domains/{domain}/enable/", {}, "domain.enabled", "acme.test"),
    (
        "/domains/{domain}/require-tls/",
        {"required": "1"},
        "domain.require_tls_changed",
        "acme.test",
    ),
    ("/domains/{domain}/rotate-key/", {"algorithm": "ed25519"}, "domain.key_rotated", "acme.test"),
    ("/domains/{domain}/delete/", {}, "domain.deleted", "acme.test"),
    ("/credentials/smtp/", {"description": "crm"}, "smtp_credential.created", None),
    ("/credentials/smtp/{smtp}/rotate/", {}, "smtp_credential.rotated", "smtp"),
    ("/credentials/smtp/{smtp}/revoke/", {}, "smtp_credential.revoked", "smtp"),
    ("/credentials/api-keys/", {"name": "new", "role": "viewer"}, "api_key.created", None),
    ("/credentials/api-keys/{key}/rotate/", {}, "api_key.rotated", "key"),
    ("/credentials/api-keys/{key}/revoke/", {}, "api_key.revoked", "key"),
    ("/webhooks/", {"url": "HOOK", "event_types": ["bounced"]}, "webhook.created", "HOOK"),
    ("/webhooks/{hook}/", {"url": "HOOK", "event_types": ["bounced"]}, "webhook.updated", "HOOK"),
    ("/webhooks/{hook}/rotate-secret/", {}, "webhook.secret_rotated", "HOOK"),
    ("/webhooks/{hook}/test/", {}, "webhook.test_sent", "HOOK"),
    ("/webhooks/{hook}/delete/", {}, "webhook.deleted", "HOOK"),
    ("/suppressions/", {"address": "new@dest.test"}, "suppression.added", "new@dest.test"),
    ("/suppressions/{entry}/remove/", {}, "suppression.removed", "gone@dest.test"),
    ("/suppressions/import/", "CSV", "suppression.imported", "list.csv"),
]


def target_of(acme: dict, target: str | None, hooks: HttpReceiver) -> str | None:
    if target == "smtp":
        return acme["smtp"].username
    if target == "key":
        return f"sm_{acme['key'].prefix}"
    if target == "HOOK":
        return hooks.url()
    return target


@pytest.mark.parametrize(("template", "data", "action", "target"), DASHBOARD_CHANGES)
def test_each_dashboard_change_leaves_one_row_naming_who(
    owner, acme, hooks, template, data, action, target
):
    if data == "CSV":
        data = {"file": SimpleUploadedFile("list.csv", b"address\na@dest.test\nbad\n")}
    elif "url" in data:
        data = {**data, "url": hooks.url()}
    response = logged_in(owner[1]).post(
        template.format(**acme["ids"]), data, REMOTE_ADDR="192.0.2.7"
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    row = only_row()
    assert row.action == action
    assert row.tenant == owner[0]
    assert row.actor == owner[1] and row.actor_label == owner[1].username
    assert row.ip == "192.0.2.7"
    expected = target_of(acme, target, hooks)
    if expected is not None:
        assert row.target == expected
    else:
        assert row.target  # a new login's username, a new key's prefix


def test_rows_carry_what_changed_but_never_a_secret(owner, acme):
    client = logged_in(owner[1])
    client.post("/credentials/api-keys/", {"name": "billing", "role": "developer"})
    key_page = client.get("/credentials/").content.decode()
    client.post("/credentials/smtp/", {"description": "crm"})
    smtp_page = client.get("/credentials/").content.decode()
    secrets = [
        page.split('<code id="new-secret-value" class="copyable">')[1].split("<")[0]
        for page in (key_page, smtp_page)
    ]
    created = AuditEntry.objects.get(action="api_key.created")
    assert created.detail == {"name": "billing", "role": "developer"}
    new_key = ApiKey.objects.get(name="billing")
    assert created.target == f"sm_{new_key.prefix}"
    stored = json.dumps([[r.target, r.detail] for r in AuditEntry.objects.all()])
    for secret in secrets:
        assert len(secret) > 20 and secret not in stored
    assert new_key.key_hash not in stored


def test_a_refused_change_leaves_no_row(owner, member, acme):
    Message.objects.create(
        tenant=owner[0],
        domain=acme["domain"],
        source=Source.API,
        mail_from="a@acme.test",
        raw=b"x",
        size=1,
    )
    response = logged_in(owner[1]).post(f"/domains/{acme['domain'].pk}/delete/")
    assert response.status_code == 302 and Domain.objects.filter(pk=acme["domain"].pk).exists()
    # above the creator's role, and a role that may not: no change, no row
    client = logged_in(member[1])
    assert client.post("/credentials/api-keys/", {"role": "owner"}).status_code == 400
    assert client.post(f"/domains/{acme['domain'].pk}/disable/").status_code == 403
    assert not AuditEntry.objects.exists()


def test_switching_tenants_is_not_a_change(owner, outsider):
    Membership.objects.create(tenant=outsider[0], user=owner[1], role=Role.VIEWER)
    response = logged_in(owner[1]).post("/switch/", {"tenant": outsider[0].pk})
    assert response.status_code == 302
    assert not AuditEntry.objects.exists()


# -- the API -------------------------------------------------------------------------------


def api_client(tenant, role: str = Role.ADMIN) -> tuple[APIClient, ApiKey]:
    row, key = create_api_key(tenant=tenant, name="automation", role=role)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    return client, row


API_CHANGES = [
    # (method, url, body, action, target)
    ("post", "/api/v1/domains/", {"name": "new.test"}, "domain.added", "new.test"),
    ("post", "/api/v1/domains/{domain}/check/", None, "domain.checked", "acme.test"),
    ("post", "/api/v1/domains/{domain}/disable/", None, "domain.disabled", "acme.test"),
    ("post", "/api/v1/domains/{domain}/enable/", None, "domain.enabled", "acme.test"),
    (
        "patch",
        "/api/v1/domains/{domain}/",
        {"require_tls": True},
        "domain.require_tls_changed",
        "acme.test",
    ),
    (
        "post",
        "/api/v1/domains/{domain}/rotate-key/",
        {"algorithm": "ed25519"},
        "domain.key_rotated",
        "acme.test",
    ),
    ("delete", "/api/v1/domains/{domain}/", None, "domain.deleted", "acme.test"),
    ("post", "/api/v1/smtp-credentials/", {}, "smtp_credential.created", None),
    ("post", "/api/v1/smtp-credentials/{smtp}/rotate/", None, "smtp_credential.rotated", "smtp"),
    ("post", "/api/v1/smtp-credentials/{smtp}/revoke/", None, "smtp_credential.revoked", "smtp"),
    ("post", "/api/v1/api-keys/", {"name": "n"}, "api_key.created", None),
    ("post", "/api/v1/api-keys/{key}/rotate/", None, "api_key.rotated", "key"),
    ("post", "/api/v1/api-keys/{key}/revoke/", None, "api_key.revoked", "key"),
    (
        "post",
        "/api/v1/webhooks/",
        {"url": "HOOK", "event_types": ["bounced"]},
        "webhook.created",
        "HOOK",
    ),
    ("patch", "/api/v1/webhooks/{hook}/", {"active": False}, "webhook.updated", "HOOK"),
    ("post", "/api/v1/webhooks/{hook}/rotate-secret/", {}, "webhook.secret_rotated", "HOOK"),
    ("post", "/api/v1/webhooks/{hook}/test/", None, "webhook.test_sent", "HOOK"),
    ("delete", "/api/v1/webhooks/{hook}/", None, "webhook.deleted", "HOOK"),
    (
        "post",
        "/api/v1/suppressions/",
        {"address": "new@dest.test"},
        "suppression.added",
        "new@dest.test",
    ),
    (
        "delete",
        "/api/v1/suppressions/gone@dest.test/",
        None,
        "suppression.removed",
        "gone@dest.test",
    ),
    ("post", "/api/v1/suppressions/import/", ["a@dest.test"], "suppression.imported", "1 rows"),
]


@pytest.mark.parametrize(("method", "template", "body", "action", "target"), API_CHANGES)
def test_each_api_change_leaves_one_row_naming_the_key(
    owner, acme, hooks, method, template, body, action, target
):
    client, key = api_client(owner[0])
    if isinstance(body, dict) and body.get("url") == "HOOK":
        body = {**body, "url": hooks.url()}
    response = getattr(client, method)(
        template.format(**acme["ids"]), body, format="json", REMOTE_ADDR="198.51.100.9"
    )
    assert response.status_code in (200, 201, 204), response.content.decode()[:2000]
    row = only_row()
    assert row.action == action and row.tenant == owner[0]
    assert row.actor is None and row.actor_label == f"API key sm_{key.prefix}"
    assert row.ip == "198.51.100.9"
    expected = target_of(acme, target, hooks)
    if expected is not None:
        assert row.target == expected
    answer = response.json() if response.content else {}
    for secret in (answer.get("key"), answer.get("password"), answer.get("secret")):
        if secret:
            assert secret not in json.dumps([row.target, row.detail])


def test_reading_through_the_api_records_nothing(owner, acme):
    client, _ = api_client(owner[0], Role.VIEWER)
    for url in ("/api/v1/domains/", "/api/v1/api-keys/", "/api/v1/webhooks/", "/api/v1/events/"):
        assert client.get(url).status_code == 200
    assert not AuditEntry.objects.exists()


# -- the page ------------------------------------------------------------------------------

PAGE = "/audit/"


def entry(tenant, action: str, target: str, actor: str = "owner@acme.test", age: int = 0):
    return AuditEntry.objects.create(
        tenant=tenant,
        actor_label=actor,
        action=action,
        target=target,
        created_at=timezone.now() - timedelta(minutes=age),
    )


def rows_on(page: str) -> list[str]:
    return [part.split('"')[0] for part in page.split('<tr data-action="')[1:]]


def test_owner_and_admin_read_the_log_others_get_403(owner, member):
    admin = person(owner[0], Role.ADMIN, "admin@acme.test")
    viewer = person(owner[0], Role.VIEWER, "viewer@acme.test")
    assert logged_in(owner[1]).get(PAGE).status_code == 200
    assert logged_in(admin).get(PAGE).status_code == 200
    assert logged_in(member[1]).get(PAGE).status_code == 403
    assert logged_in(viewer).get(PAGE).status_code == 403
    assert Client().get(PAGE).status_code == 302  # to the login page


def test_empty_log_says_what_appears_here(owner):
    page = logged_in(owner[1]).get(PAGE).content.decode()
    assert "No changes recorded yet" in page
    assert "with who did it and when" in page


def test_the_log_lists_newest_first_with_who_what_and_where(owner, outsider):
    entry(owner[0], "domain.added", "acme.test", age=10)
    entry(owner[0], "api_key.created", "sm_ab12cd34", actor="API key sm_00aa11bb", age=5)
    entry(outsider[0], "domain.added", "globex.test")
    page = logged_in(owner[1]).get(PAGE).content.decode()
    assert rows_on(page) == ["api_key.created", "domain.added"]
    assert "API key sm_00aa11bb" in page and "<code>acme.test</code>" in page
    assert "globex" not in page  # another tenant's log, and its people, never show


def test_filters_by_action_and_by_who_and_searches_the_target(owner):
    entry(owner[0], "domain.added", "acme.test", actor="alice")
    entry(owner[0], "domain.deleted", "old.test", actor="bob")
    entry(owner[0], "suppression.added", "someone@acme.test", actor="alice")
    client = logged_in(owner[1])

    page = client.get(PAGE).content.decode()
    assert '<option value="domain.deleted">domain.deleted</option>' in page
    assert '<option value="bob">bob</option>' in page

    by_action = client.get(PAGE, {"action": "domain.added"}).content.decode()
    assert rows_on(by_action) == ["domain.added"]
    assert "Matching entries" in by_action
    assert '<option value="domain.added" selected>' in by_action
    assert rows_on(client.get(PAGE, {"actor": "bob"}).content.decode()) == ["domain.deleted"]
    search = client.get(PAGE, {"q": "ACME.test"}).content.decode()
    assert sorted(rows_on(search)) == ["domain.added", "suppression.added"]
    both = client.get(PAGE, {"q": "acme", "actor": "alice", "action": "suppression.added"})
    assert rows_on(both.content.decode()) == ["suppression.added"]
    nothing = client.get(PAGE, {"q": "nowhere"}).content.decode()
    assert rows_on(nothing) == [] and "No entry matches these filters" in nothing


def test_the_log_comes_in_pages_of_fifty(owner):
    for n in range(120):
        entry(owner[0], "suppression.added", f"n{n:03}@dest.test", age=n)
    client = logged_in(owner[1])
    first = client.get(PAGE).content.decode()
    assert len(rows_on(first)) == 50
    assert "Page 1 of 3" in first and "n000@dest.test" in first
    assert 'rel="next" href="?page=2"' in first
    last = client.get(PAGE, {"page": 3}).content.decode()
    assert len(rows_on(last)) == 20 and "n119@dest.test" in last
    filtered = client.get(PAGE, {"q": "n0", "page": 2}).content.decode()
    assert "Page 2 of 2" in filtered and 'href="?q=n0&amp;page=1"' in filtered


def test_a_change_in_the_dashboard_shows_on_the_page(owner):
    client = logged_in(owner[1])
    client.post("/domains/", {"name": "shown.test"})
    page = client.get(PAGE).content.decode()
    assert rows_on(page) == ["domain.added"]
    assert "<code>shown.test</code>" in page and owner[1].username in page


# -- in a real browser ---------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("allow_orm_beside_playwright")
def test_a_key_made_in_the_browser_is_in_the_log(owner, chromium_page):
    page = chromium_page
    user = owner[1]
    user.set_password("browser-audit-pw-1")
    user.save()
    log_in(page, user.username, "browser-audit-pw-1")

    page.goto("/credentials/")
    page.get_by_label("Name (optional)").last.fill("read-only dashboard")
    page.get_by_label("Role").select_option("viewer")
    page.get_by_role("button", name="Create API key").click()
    expect(page.locator("#new-secret")).to_be_visible()
    key = ApiKey.objects.get(name="read-only dashboard")
    assert key.role == Role.VIEWER
    expect(page.locator(f'tr[data-prefix="{key.prefix}"] td[data-role]')).to_have_text("Viewer")

    page.goto("/audit/")
    page.get_by_label("Action").select_option("api_key.created")
    page.get_by_role("button", name="Show entries").click()
    row = page.locator('tr[data-action="api_key.created"]')
    expect(row).to_have_count(1)
    expect(row).to_contain_text(f"sm_{key.prefix}")
    expect(row).to_contain_text(user.username)
    expect(page.get_by_role("heading", level=2)).to_contain_text(["Matching entries"])


def test_the_nav_links_the_log_only_for_those_who_may_read_it(owner, member):
    link = '<a href="/audit/"'
    assert link in logged_in(owner[1]).get("/domains/").content.decode()
    assert link not in logged_in(member[1]).get("/domains/").content.decode()
