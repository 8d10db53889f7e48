"""REST API: key authentication, tenant isolation, the public schema."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from delivery.accept import Sender, accept_message
from delivery.credentials import create_api_key
from delivery.models import ApiKey, Source
from domains.models import Domain, DomainStatus
from domains.tenancy import add_domain

pytestmark = pytest.mark.django_db


def api(key: str | None = None) -> APIClient:
    client = APIClient()
    if key is not None:
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    return client


@pytest.fixture
def acme_domain(owner) -> Domain:
    domain = add_domain(tenant=owner[0], name="acme.test")
    Domain.objects.filter(pk=domain.pk).update(status=DomainStatus.VERIFIED)
    return domain


def test_schema_is_public_openapi():
    response = api().get("/api/v1/schema/")
    assert response.status_code == 200
    assert b"openapi: 3" in response.content
    assert b"/api/v1/domains/" in response.content


def test_docs_page_is_served_without_a_cdn():
    response = api().get("/api/v1/docs/")
    assert response.status_code == 200
    assert b"//cdn" not in response.content and b"unpkg.com" not in response.content


@pytest.mark.parametrize("header", [None, "Bearer", "Bearer sm_0000_nope", "Token abc"])
def test_missing_or_bad_key_is_401(owner, header):
    client = APIClient()
    if header:
        client.credentials(HTTP_AUTHORIZATION=header)
    response = client.get("/api/v1/domains/")
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_revoked_key_is_401(owner):
    api_key, key = create_api_key(tenant=owner[0])
    ApiKey.objects.filter(pk=api_key.pk).update(revoked=True)
    assert api(key).get("/api/v1/domains/").status_code == 401


def test_owner_lists_own_domains_with_records(owner, acme_domain):
    _, key = create_api_key(tenant=owner[0])
    response = api(key).get("/api/v1/domains/")
    assert response.status_code == 200
    [row] = response.json()["results"]
    assert row["name"] == "acme.test"
    types = {record["type"] for record in row["records"]}
    assert {"TXT", "CNAME"} <= types


def test_outsider_gets_404_for_another_tenants_objects(owner, outsider, acme_domain):
    message = accept_message(
        sender=Sender(tenant_id=owner[0].pk),
        mail_from="news@acme.test",
        recipients=["alice@dest.test"],
        raw=b"From: news@acme.test\r\nTo: alice@dest.test\r\nSubject: hi\r\n\r\nbody\r\n",
        source=Source.API,
    )
    _, outsider_key = create_api_key(tenant=outsider[0])
    client = api(outsider_key)
    assert client.get(f"/api/v1/domains/{acme_domain.pk}/").status_code == 404
    assert client.get(f"/api/v1/messages/{message.queue_id}/").status_code == 404
    assert client.get("/api/v1/domains/").json()["results"] == []
    assert client.get("/api/v1/messages/").json()["results"] == []

    _, owner_key = create_api_key(tenant=owner[0])
    body = api(owner_key).get(f"/api/v1/messages/{message.queue_id}/").json()
    assert body["recipients"][0]["state"] == "queued"
    assert [e["type"] for e in body["recipients"][0]["events"]] == ["accepted"]
