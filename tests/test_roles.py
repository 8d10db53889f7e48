"""Roles in every door: what a viewer, a developer, an admin and an owner may do in the
dashboard (buttons shown, POSTs refused with 403 and nothing stored) and through the API
(each key's role, 403 role_forbidden; the Postal endpoints answer in Postal's envelope),
and that nobody hands out a key of more than their own role."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver
from rest_framework.test import APIClient
from rest_framework.views import APIView

from delivery.api.auth import HasApiKey
from delivery.credentials import check_api_key, create_api_key, create_smtp_credential
from delivery.models import ApiKey, Message, SmtpCredential, WebhookEndpoint
from domains.models import Domain, Membership, Role
from domains.tenancy import add_domain
from reputation import suppressions
from reputation.models import Suppression

pytestmark = pytest.mark.django_db


# -- personas and clients ------------------------------------------------------------------


def person(tenant, role: str, email: str):
    user = get_user_model().objects.create_user(email, password="pw-role-1")
    Membership.objects.create(tenant=tenant, user=user, role=role)
    return user


@pytest.fixture
def viewer(owner):
    return owner[0], person(owner[0], Role.VIEWER, "viewer@acme.test")


@pytest.fixture
def admin(owner):
    return owner[0], person(owner[0], Role.ADMIN, "admin@acme.test")


def logged_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def api(tenant, role: str) -> tuple[APIClient, ApiKey]:
    row, key = create_api_key(tenant=tenant, name=f"{role} key", role=role)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    return client, row


def error_of(response) -> dict:
    return response.json()["error"]


# -- the API -------------------------------------------------------------------------------


def test_a_viewer_key_reads_but_creates_no_key_and_no_domain(owner):
    client, _ = api(owner[0], Role.VIEWER)
    assert client.get("/api/v1/domains/").status_code == 200
    assert client.get("/api/v1/api-keys/").status_code == 200

    response = client.post("/api/v1/api-keys/", {"name": "more"}, format="json")
    assert response.status_code == 403
    error = error_of(response)
    assert error["code"] == "role_forbidden"
    assert "viewer" in error["message"] and "developer" in error["message"]

    response = client.post("/api/v1/domains/", {"name": "acme.test"}, format="json")
    assert response.status_code == 403
    assert error_of(response)["code"] == "role_forbidden"
    assert "admin" in error_of(response)["message"]

    assert ApiKey.objects.count() == 1 and not Domain.objects.exists()


def test_a_viewer_key_changes_nothing_anywhere(owner):
    domain = add_domain(tenant=owner[0], name="acme.test")
    suppressions.add(tenant=owner[0], address="gone@dest.test", actor="test")
    client, key = api(owner[0], Role.VIEWER)
    refused = [
        client.post(f"/api/v1/domains/{domain.pk}/disable/"),
        client.patch(f"/api/v1/domains/{domain.pk}/", {"require_tls": True}, format="json"),
        client.delete(f"/api/v1/domains/{domain.pk}/"),
        client.post(f"/api/v1/api-keys/{key.pk}/revoke/"),
        client.post("/api/v1/smtp-credentials/", {}, format="json"),
        client.post(
            "/api/v1/webhooks/",
            {"url": "https://hooks.example.com/", "event_types": ["delivered"]},
            format="json",
        ),
        client.post("/api/v1/suppressions/", {"address": "x@dest.test"}, format="json"),
        client.delete("/api/v1/suppressions/gone@dest.test/"),
        client.post("/api/v1/suppressions/import/", ["y@dest.test"], format="json"),
        client.post("/api/v1/send/", {"from": "a@acme.test", "to": ["b@dest.test"]}, format="json"),
    ]
    assert [r.status_code for r in refused] == [403] * len(refused)
    assert {error_of(r)["code"] for r in refused} == {"role_forbidden"}
    domain.refresh_from_db()
    assert domain.status != "disabled" and not domain.require_tls
    assert not ApiKey.objects.get(pk=key.pk).revoked
    assert not SmtpCredential.objects.exists() and not WebhookEndpoint.objects.exists()
    assert list(Suppression.objects.values_list("address", flat=True)) == ["gone@dest.test"]
    assert not Message.objects.exists()


def test_a_viewer_key_gets_postals_access_denied(owner):
    _, key = create_api_key(tenant=owner[0], role=Role.VIEWER)
    response = Client().post(
        "/api/v1/send/message",
        {"to": ["b@dest.test"], "from": "a@acme.test", "plain_body": "hi"},
        content_type="application/json",
        HTTP_X_SERVER_API_KEY=key,
    )
    assert response.status_code == 200  # as Postal answers
    body = response.json()
    assert body["status"] == "error" and body["data"]["code"] == "AccessDenied"
    assert "viewer" in body["data"]["message"] and "developer" in body["data"]["message"]
    assert not Message.objects.exists()


def test_a_developer_key_creates_keys_but_not_domains(owner):
    client, _ = api(owner[0], Role.DEVELOPER)
    response = client.post("/api/v1/api-keys/", {"name": "ci"}, format="json")
    assert response.status_code == 201
    assert response.json()["role"] == "developer"  # the default
    assert ApiKey.objects.get(pk=response.json()["id"]).role == Role.DEVELOPER

    response = client.post("/api/v1/domains/", {"name": "acme.test"}, format="json")
    assert response.status_code == 403 and error_of(response)["code"] == "role_forbidden"
    assert not Domain.objects.exists()


def test_an_admin_key_adds_a_domain(owner):
    client, _ = api(owner[0], Role.ADMIN)
    response = client.post("/api/v1/domains/", {"name": "acme.test"}, format="json")
    assert response.status_code == 201
    assert Domain.objects.get().tenant == owner[0]


@pytest.mark.parametrize(
    ("creator", "asked", "allowed"),
    [
        (Role.DEVELOPER, Role.VIEWER, True),
        (Role.DEVELOPER, Role.DEVELOPER, True),
        (Role.DEVELOPER, Role.ADMIN, False),
        (Role.DEVELOPER, Role.OWNER, False),
        (Role.ADMIN, Role.ADMIN, True),
        (Role.ADMIN, Role.OWNER, False),
        (Role.OWNER, Role.OWNER, True),
    ],
)
def test_a_key_creates_keys_of_at_most_its_own_role(owner, creator, asked, allowed):
    client, _ = api(owner[0], creator)
    response = client.post("/api/v1/api-keys/", {"name": "new", "role": asked}, format="json")
    if allowed:
        assert response.status_code == 201 and response.json()["role"] == asked
        assert check_api_key(response.json()["key"]).role == asked
    else:
        assert response.status_code == 403
        error = error_of(response)
        assert error["code"] == "role_forbidden" and error["field"] == "role"
        assert f"not {asked}" in error["message"]
        assert not ApiKey.objects.filter(name="new").exists()


def test_a_key_rotates_no_key_above_its_role(owner):
    client, _ = api(owner[0], Role.DEVELOPER)
    admin_row, admin_key = create_api_key(tenant=owner[0], name="boss", role=Role.ADMIN)
    response = client.post(f"/api/v1/api-keys/{admin_row.pk}/rotate/")
    assert response.status_code == 403 and error_of(response)["code"] == "role_forbidden"
    assert check_api_key(admin_key) is not None  # still the one working admin key
    assert ApiKey.objects.filter(role=Role.ADMIN).count() == 1

    mine, _ = create_api_key(tenant=owner[0], name="mine", role=Role.DEVELOPER)
    response = client.post(f"/api/v1/api-keys/{mine.pk}/rotate/")
    assert response.status_code == 201 and response.json()["role"] == Role.DEVELOPER


def test_key_lists_show_each_keys_role(owner, member):
    create_api_key(tenant=owner[0], name="reader", role=Role.VIEWER)
    client, _ = api(owner[0], Role.VIEWER)
    roles = {row["name"]: row["role"] for row in client.get("/api/v1/api-keys/").json()["results"]}
    assert roles == {"reader": "viewer", "viewer key": "viewer"}
    page = logged_in(member[1]).get("/credentials/").content.decode()
    assert '<td data-role="viewer">Viewer</td>' in page


def test_keys_made_before_roles_keep_working_as_admin_keys(owner):
    row, key = create_api_key(tenant=owner[0])  # as the operator command makes them
    assert row.role == Role.ADMIN
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    assert client.post("/api/v1/domains/", {"name": "acme.test"}, format="json").status_code == 201


def _api_views():
    """Every view class under /api/v1/, from the URL configuration."""

    def walk(patterns, prefix=""):
        for pattern in patterns:
            if isinstance(pattern, URLResolver):
                yield from walk(pattern.url_patterns, prefix + str(pattern.pattern))
            elif isinstance(pattern, URLPattern):
                view = getattr(pattern.callback, "cls", None)
                if view is not None and (prefix + str(pattern.pattern)).startswith("api/v1/"):
                    yield prefix + str(pattern.pattern), view, pattern.callback

    return list(walk(get_resolver().url_patterns))


# Views that need no key: the schema, its docs, the public deliverability check; and
# Postal's, which check the key and its role themselves (PostalView.sender) to answer in
# Postal's envelope.
KEYLESS = {"SpectacularAPIView", "SpectacularSwaggerView", "PublicCheckView"}
OWN_CHECK = {"PostalSendMessageView", "PostalSendRawView"}


def test_every_api_view_that_changes_something_names_the_capability_it_needs():
    views = _api_views()
    assert len(views) > 10
    seen = set()
    for route, view, callback in views:
        assert issubclass(view, APIView)
        seen.add(view.__name__)
        if view.__name__ in KEYLESS | OWN_CHECK:
            continue
        kwargs = getattr(callback, "initkwargs", {})
        checked = kwargs.get("permission_classes", view.permission_classes)
        assert HasApiKey in checked, route
        if set(_methods(view, callback)) - {"get", "head", "options"}:
            assert getattr(view, "capability", None) is not None, route
    assert OWN_CHECK <= seen


def _methods(view, callback) -> list[str]:
    actions = getattr(callback, "actions", None)
    if actions:
        return list(actions)
    return [m for m in view.http_method_names if hasattr(view, m)]


# -- the dashboard -------------------------------------------------------------------------


def test_a_viewer_sees_the_pages_without_their_buttons(viewer):
    domain = add_domain(tenant=viewer[0], name="acme.test")
    create_api_key(tenant=viewer[0], name="ci", role=Role.DEVELOPER)
    client = logged_in(viewer[1])
    pages = {
        "/domains/": ["Add domain"],
        f"/domains/{domain.pk}/": ["Check now", "Disable", "Rotate DKIM key", "Delete…"],
        "/credentials/": ["Create SMTP login", "Create API key", "Rotate", "Revoke…"],
        "/webhooks/": ["Add endpoint"],
        "/suppressions/": ["Add address", "Import"],
    }
    for url, buttons in pages.items():
        response = client.get(url)
        assert response.status_code == 200, url
        text = response.content.decode()
        for button in buttons:
            assert f">{button}<" not in text, (url, button)
        assert "Your role (viewer)" in text, url


def test_a_member_who_may_sees_the_buttons(admin):
    domain = add_domain(tenant=admin[0], name="acme.test")
    client = logged_in(admin[1])
    assert ">Add domain<" in client.get("/domains/").content.decode()
    assert ">Check now<" in client.get(f"/domains/{domain.pk}/").content.decode()
    assert ">Create API key<" in client.get("/credentials/").content.decode()


@pytest.fixture
def acme_objects(owner):
    """One of each thing a dashboard form changes, in Acme."""
    tenant = owner[0]
    domain = add_domain(tenant=tenant, name="acme.test")
    smtp, _ = create_smtp_credential(tenant=tenant)
    key, _ = create_api_key(tenant=tenant, name="ci", role=Role.DEVELOPER)
    endpoint = WebhookEndpoint.objects.create(
        tenant=tenant, url="https://hooks.example.com/", event_types=["delivered"]
    )
    entry, _ = suppressions.add(tenant=tenant, address="gone@dest.test", actor="test")
    return {"domain": domain.pk, "smtp": smtp.pk, "key": key.pk, "hook": endpoint.pk,
            "entry": entry.pk}  # fmt: skip


VIEWER_POSTS = [
    ("/domains/", {"name": "new.test"}),
    ("/domains/{domain}/check/", {}),
    ("/domains/{domain}/disable/", {}),
    ("/domains/{domain}/enable/", {}),
    ("/domains/{domain}/require-tls/", {"required": "1"}),
    ("/domains/{domain}/delete/", {}),
    ("/domains/{domain}/rotate-key/", {"algorithm": "rsa"}),
    ("/credentials/smtp/", {"description": "more"}),
    ("/credentials/smtp/{smtp}/rotate/", {}),
    ("/credentials/smtp/{smtp}/revoke/", {}),
    ("/credentials/api-keys/", {"name": "more", "role": "viewer"}),
    ("/credentials/api-keys/{key}/rotate/", {}),
    ("/credentials/api-keys/{key}/revoke/", {}),
    ("/webhooks/", {"url": "https://x.example.com/", "event_types": ["delivered"]}),
    ("/webhooks/{hook}/", {"url": "https://y.example.com/", "event_types": ["bounced"]}),
    ("/webhooks/{hook}/rotate-secret/", {}),
    ("/webhooks/{hook}/test/", {}),
    ("/webhooks/{hook}/delete/", {}),
    ("/suppressions/", {"address": "new@dest.test"}),
    ("/suppressions/{entry}/remove/", {}),
    ("/suppressions/import/", {}),
]


def snapshot() -> list:
    """Everything a dashboard form could have changed."""
    return [
        list(Domain.objects.values_list("pk", "status", "require_tls", "checked_at")),
        list(Domain.objects.values_list("dkim_keys__selector")),
        list(SmtpCredential.objects.values_list("pk", "revoked")),
        list(ApiKey.objects.values_list("pk", "revoked", "role")),
        list(WebhookEndpoint.objects.values_list("pk", "url", "secret_encrypted")),
        list(Suppression.objects.values_list("pk", "address")),
    ]


@pytest.mark.parametrize(("template", "data"), VIEWER_POSTS)
def test_a_viewers_post_is_refused_and_changes_nothing(viewer, acme_objects, template, data):
    before = snapshot()
    response = logged_in(viewer[1]).post(template.format(**acme_objects), data)
    assert response.status_code == 403
    assert snapshot() == before


@pytest.mark.parametrize(
    "template",
    [
        "/domains/{domain}/delete/",
        "/credentials/smtp/{smtp}/revoke/",
        "/credentials/api-keys/{key}/revoke/",
        "/webhooks/{hook}/delete/",
        "/suppressions/{entry}/remove/",
    ],
)
def test_a_viewer_gets_no_confirmation_page_for_a_change(viewer, acme_objects, template):
    assert logged_in(viewer[1]).get(template.format(**acme_objects)).status_code == 403


def test_a_viewer_reads_an_endpoint_without_its_forms(viewer, acme_objects):
    page = logged_in(viewer[1]).get(f"/webhooks/{acme_objects['hook']}/")
    assert page.status_code == 200
    text = page.content.decode()
    assert "https://hooks.example.com/" in text
    assert ">Save<" not in text and ">Send test ping<" not in text and "Rotate secret" not in text


def test_a_developer_creates_keys_but_adds_no_domain(member):
    client = logged_in(member[1])
    response = client.post("/credentials/api-keys/", {"name": "ci"})
    assert response.status_code == 302
    assert ApiKey.objects.get().role == Role.DEVELOPER  # the default
    assert ">Add domain<" not in client.get("/domains/").content.decode()
    assert client.post("/domains/", {"name": "acme.test"}).status_code == 403
    assert not Domain.objects.exists()


def test_an_admin_adds_a_domain(admin):
    response = logged_in(admin[1]).post("/domains/", {"name": "acme.test"})
    assert response.status_code == 302
    assert Domain.objects.get().tenant == admin[0]


def test_a_person_gives_a_key_at_most_their_own_role(member):
    client = logged_in(member[1])
    page = client.get("/credentials/").content.decode()
    assert '<option value="developer" selected>Developer</option>' in page
    assert '<option value="viewer">Viewer</option>' in page
    assert '<option value="admin">' not in page and '<option value="owner">' not in page

    response = client.post("/credentials/api-keys/", {"name": "too much", "role": "admin"})
    assert response.status_code == 400
    assert "A developer may create keys of role viewer or developer, not admin." in (
        response.content.decode()
    )
    assert not ApiKey.objects.exists()

    response = client.post("/credentials/api-keys/", {"name": "reader", "role": "viewer"})
    assert response.status_code == 302 and ApiKey.objects.get().role == Role.VIEWER


def test_an_owner_may_give_any_role(owner):
    client = logged_in(owner[1])
    assert '<option value="owner">Owner</option>' in client.get("/credentials/").content.decode()
    assert client.post("/credentials/api-keys/", {"role": "owner"}).status_code == 302
    assert ApiKey.objects.get().role == Role.OWNER


def test_a_person_rotates_no_key_above_their_role(member):
    row, key = create_api_key(tenant=member[0], name="boss", role=Role.ADMIN)
    client = logged_in(member[1])
    page = client.get("/credentials/").content.decode()
    assert f'action="/credentials/api-keys/{row.pk}/rotate/"' not in page
    assert f'href="/credentials/api-keys/{row.pk}/revoke/"' in page
    response = client.post(f"/credentials/api-keys/{row.pk}/rotate/", follow=True)
    assert "not admin" in response.content.decode()
    assert check_api_key(key) is not None and ApiKey.objects.count() == 1


def test_an_outsider_gets_404_not_403_for_acmes_objects(outsider, acme_objects):
    client = logged_in(outsider[1])
    for template, data in VIEWER_POSTS:
        if "{" not in template:
            continue
        assert client.post(template.format(**acme_objects), data).status_code == 404, template


def test_a_viewer_of_another_tenant_gets_404_for_acmes_objects(owner, outsider, acme_objects):
    stranger = person(outsider[0], Role.VIEWER, "viewer@globex.test")
    client = logged_in(stranger)
    assert client.get(f"/domains/{acme_objects['domain']}/").status_code == 404
    assert client.post(f"/domains/{acme_objects['domain']}/disable/").status_code == 404


def test_the_role_check_costs_no_query(owner, settings, django_assert_num_queries):
    """The role rides on the cached key row: a refusal (or a pass) reads nothing more."""
    settings.SENDMSG_STATE_CACHE_SECONDS = 60
    client, _ = api(owner[0], Role.VIEWER)
    client.post("/api/v1/domains/", {"name": "acme.test"}, format="json")  # caches the key
    with django_assert_num_queries(0):
        response = client.post("/api/v1/domains/", {"name": "acme.test"}, format="json")
    assert response.status_code == 403
