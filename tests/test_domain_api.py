"""Domain endpoints: create, read, records, checks, rotate-key, disable/enable, delete;
every one answers 404 to another tenant's key."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from delivery.credentials import create_api_key
from domains.models import Domain, DomainStatus
from tests.conftest import publish_domain

pytestmark = pytest.mark.django_db


def client_for(tenant) -> APIClient:
    _, key = create_api_key(tenant=tenant)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    return client


@pytest.fixture
def acme(owner):
    return client_for(owner[0])


@pytest.fixture
def globex(outsider):
    return client_for(outsider[0])


def create(client, name="shop.test") -> dict:
    response = client.post("/api/v1/domains/", {"name": name}, format="json")
    assert response.status_code == 201, response.content
    return response.json()


def test_create_shows_keys_and_records_in_unicode_and_ascii(acme):
    body = create(acme, "Bücher.test")
    assert body["name"] == "xn--bcher-kva.test" and body["display_name"] == "bücher.test"
    assert body["status"] == "pending"
    [key] = body["keys"]
    assert key["state"] == "active" and key["algorithm"] == "rsa" and key["bits"] == 2048
    assert "private" not in str(body).lower()
    hosts = {r["host"] for r in body["records"] if r["required"]}
    assert {key["record_name"], "rp.xn--bcher-kva.test"} <= hosts


@pytest.mark.parametrize("name", ["", "no-dot", "bad..dots.test", "x" * 300 + ".test"])
def test_bad_names_are_400_and_create_nothing(acme, name):
    response = acme.post("/api/v1/domains/", {"name": name}, format="json")
    assert response.status_code == 400
    assert response.json()["error"]["field"] == "name"
    assert not Domain.objects.exists()


def test_duplicate_is_400(acme, globex):
    create(acme)
    response = globex.post("/api/v1/domains/", {"name": "SHOP.test"}, format="json")
    assert response.status_code == 400 and "already registered" in str(response.json())


def test_check_verifies_and_history_and_events_follow(acme, dns_server):
    body = create(acme)
    publish_domain(dns_server, "shop.test")
    response = acme.post(f"/api/v1/domains/{body['id']}/check/")
    assert response.status_code == 200
    check = response.json()
    assert check["verified"] is True
    assert {r["name"]: r["status"] for r in check["results"]}["dkim"] == "ok"
    assert acme.get(f"/api/v1/domains/{body['id']}/").json()["status"] == "verified"
    history = acme.get(f"/api/v1/domains/{body['id']}/checks/").json()
    assert history["count"] == 1
    events = acme.get(f"/api/v1/domains/{body['id']}/events/").json()["results"]
    assert [e["type"] for e in events] == ["domain.verified"]


def test_rotate_key_and_records(acme):
    body = create(acme)
    response = acme.post(f"/api/v1/domains/{body['id']}/rotate-key/", {}, format="json")
    assert response.status_code == 201 and response.json()["state"] == "pending"
    again = acme.post(f"/api/v1/domains/{body['id']}/rotate-key/", {}, format="json")
    assert again.status_code == 409
    ed = acme.post(
        f"/api/v1/domains/{body['id']}/rotate-key/", {"algorithm": "ed25519"}, format="json"
    )
    assert ed.status_code == 201 and ed.json()["algorithm"] == "ed25519"
    bad = acme.post(
        f"/api/v1/domains/{body['id']}/rotate-key/", {"algorithm": "dsa"}, format="json"
    )
    assert bad.status_code == 400
    records = acme.get(f"/api/v1/domains/{body['id']}/records/").json()
    dkim = [r for r in records if "._domainkey." in r["host"]]
    assert len(dkim) == 3 and all(r["zone_line"].endswith('"') for r in dkim)


def test_disable_enable_delete(acme, owner):
    body = create(acme)
    url = f"/api/v1/domains/{body['id']}/"
    assert acme.post(url + "disable/").json()["status"] == "disabled"
    assert acme.post(url + "enable/").json()["status"] == "pending"
    assert acme.delete(url).status_code == 204
    assert not Domain.objects.exists()


def test_delete_refused_once_the_domain_has_sent_mail(acme, owner):
    from delivery.accept import Sender, accept_message
    from delivery.models import Source

    body = create(acme)
    Domain.objects.filter(pk=body["id"]).update(status=DomainStatus.VERIFIED)
    accept_message(
        sender=Sender(tenant_id=owner[0].pk),
        mail_from="a@shop.test",
        recipients=["b@x.test"],
        raw=b"From: a@shop.test\r\n\r\nx\r\n",
        source=Source.API,
    )
    response = acme.delete(f"/api/v1/domains/{body['id']}/")
    assert (
        response.status_code == 409 and "disable it instead" in response.json()["error"]["message"]
    )
    assert Domain.objects.filter(pk=body["id"]).exists()


ENDPOINTS = [
    ("get", "{}/"),
    ("delete", "{}/"),
    ("get", "{}/records/"),
    ("post", "{}/check/"),
    ("get", "{}/checks/"),
    ("get", "{}/events/"),
    ("post", "{}/rotate-key/"),
    ("post", "{}/disable/"),
    ("post", "{}/enable/"),
]


@pytest.mark.parametrize("method, path", ENDPOINTS)
def test_outsider_gets_404_on_every_domain_endpoint(acme, globex, method, path):
    body = create(acme)
    url = "/api/v1/domains/" + path.format(body["id"])
    response = getattr(globex, method)(url, {}, format="json")
    assert response.status_code == 404
    domain = Domain.objects.get(pk=body["id"])
    assert (
        domain.status == "pending" and domain.dkim_keys.count() == 1 and not domain.checks.exists()
    )
