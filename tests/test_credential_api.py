"""Credentials over the API: secrets shown once, never listed; revoke and rotate work;
another tenant's key gets 404 everywhere."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from delivery.credentials import check_api_key, check_smtp_login, create_api_key
from delivery.models import SmtpCredential
from domains.tenancy import add_domain

pytestmark = pytest.mark.django_db


def client_for(tenant) -> APIClient:
    _, key = create_api_key(tenant=tenant, name="test")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    return client


def test_smtp_credentials_lifecycle(owner):
    add_domain(tenant=owner[0], name="acme.test")
    api = client_for(owner[0])
    response = api.post(
        "/api/v1/smtp-credentials/", {"description": "app", "domains": ["acme.test"]}, format="json"
    )
    assert response.status_code == 201
    created = response.json()
    assert created["domains"] == ["acme.test"] and len(created["password"]) >= 22
    assert check_smtp_login(created["username"], created["password"]) is not None

    listed = api.get("/api/v1/smtp-credentials/").json()["results"]
    assert [row["username"] for row in listed] == [created["username"]]
    assert "password" not in listed[0] and created["password"] not in str(listed)

    rotated = api.post(f"/api/v1/smtp-credentials/{created['id']}/rotate/").json()
    assert rotated["username"] != created["username"] and rotated["domains"] == ["acme.test"]
    assert check_smtp_login(created["username"], created["password"]) is None
    assert check_smtp_login(rotated["username"], rotated["password"]) is not None

    revoked = api.post(f"/api/v1/smtp-credentials/{rotated['id']}/revoke/").json()
    assert revoked["revoked"] is True
    assert check_smtp_login(rotated["username"], rotated["password"]) is None


def test_smtp_credential_limited_to_foreign_domain_is_400(owner, outsider):
    add_domain(tenant=outsider[0], name="globex.test")
    api = client_for(owner[0])
    response = api.post("/api/v1/smtp-credentials/", {"domains": ["globex.test"]}, format="json")
    assert response.status_code == 400 and "Not a domain of yours" in str(response.json())
    assert not SmtpCredential.objects.exists()


def test_api_keys_lifecycle_and_last_use(owner):
    api = client_for(owner[0])
    created = api.post("/api/v1/api-keys/", {"name": "ci"}, format="json").json()
    assert created["key"].startswith(f"sm_{created['prefix']}_")
    listed = api.get("/api/v1/api-keys/").json()["results"]
    assert {row["name"] for row in listed} == {"ci", "test"}
    assert all("key" not in row for row in listed)
    used = [row for row in listed if row["name"] == "test"][0]
    assert used["last_used_at"] is not None  # the key that made these calls

    rotated = api.post(f"/api/v1/api-keys/{created['id']}/rotate/").json()
    assert check_api_key(created["key"]) is None and check_api_key(rotated["key"]) is not None
    api.post(f"/api/v1/api-keys/{rotated['id']}/revoke/")
    assert check_api_key(rotated["key"]) is None


@pytest.mark.parametrize("kind", ["smtp-credentials", "api-keys"])
@pytest.mark.parametrize("method, suffix", [("get", ""), ("post", "revoke/"), ("post", "rotate/")])
def test_outsider_gets_404(owner, outsider, kind, method, suffix):
    if kind == "api-keys":
        row, _ = create_api_key(tenant=owner[0], name="victim")
    else:
        from delivery.credentials import create_smtp_credential

        row, _ = create_smtp_credential(tenant=owner[0])
    model = type(row)
    api = client_for(outsider[0])
    rows_before = model.objects.count()  # after the outsider's own key was made
    response = getattr(api, method)(f"/api/v1/{kind}/{row.pk}/{suffix}")
    assert response.status_code == 404
    row.refresh_from_db()
    assert not row.revoked
    assert model.objects.count() == rows_before  # the refused call created nothing
    listed = api.get(f"/api/v1/{kind}/").json()["results"]
    assert row.pk not in [r["id"] for r in listed]


def test_a_revoked_credential_cannot_be_rotated_back_to_life(owner):
    api = client_for(owner[0])
    created = api.post("/api/v1/api-keys/", {"name": "old"}, format="json").json()
    assert api.post(f"/api/v1/api-keys/{created['id']}/rotate/").status_code == 201
    again = api.post(f"/api/v1/api-keys/{created['id']}/rotate/")  # a double-click
    assert again.status_code == 409 and "revoked" in again.json()["error"]["message"]
    live = [r for r in api.get("/api/v1/api-keys/").json()["results"] if not r["revoked"]]
    assert sorted(r["name"] for r in live) == ["old", "test"]  # one replacement, not two
