"""Dashboard: login, the current tenant, tenant-scoped pages, the switcher."""

from __future__ import annotations

import pytest
from django.test import Client

from domains.models import Membership, Role
from domains.tenancy import add_domain

pytestmark = pytest.mark.django_db


def logged_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_login_page_and_redirect_for_anonymous():
    client = Client()
    assert client.get("/login/").status_code == 200
    response = client.get("/")
    assert response.status_code == 302 and response.url.startswith("/login/")


def test_login_with_password_shows_current_tenant(owner):
    from django.contrib.auth import get_user_model

    user = owner[1]
    user.set_password("correct horse battery")
    user.save()
    client = Client()
    response = client.post("/login/", {"username": user.username, "password": "wrong"})
    assert response.status_code == 200 and b"didn't match" in response.content
    response = client.post(
        "/login/", {"username": user.username, "password": "correct horse battery"}, follow=True
    )
    assert response.status_code == 200
    assert b"Acme" in response.content
    assert get_user_model().objects.get(pk=user.pk).last_login is not None


def test_domain_page_shows_records_to_owner_and_member(owner, member):
    domain = add_domain(tenant=owner[0], name="acme.test")
    key = domain.active_dkim_key()
    for user in (owner[1], member[1]):
        response = logged_in(user).get(f"/domains/{domain.pk}/")
        assert response.status_code == 200
        assert key.record_name.encode() in response.content
        assert b"rp.acme.test" in response.content


def test_outsider_gets_404_on_another_tenants_domain(owner, outsider):
    domain = add_domain(tenant=owner[0], name="acme.test")
    response = logged_in(outsider[1]).get(f"/domains/{domain.pk}/")
    assert response.status_code == 404
    overview = logged_in(outsider[1]).get("/")
    assert b">acme.test</a>" not in overview.content


def test_switcher_changes_tenant_only_among_own(owner, outsider):
    add_domain(tenant=owner[0], name="acme.test")
    add_domain(tenant=outsider[0], name="globex.test")
    user = owner[1]
    Membership.objects.create(tenant=outsider[0], user=user, role=Role.VIEWER)
    client = logged_in(user)
    assert b">acme.test</a>" in client.get("/").content
    client.post("/switch/", {"tenant": outsider[0].pk})
    page = client.get("/").content
    assert b">globex.test</a>" in page and b">acme.test</a>" not in page

    stranger = logged_in(outsider[1])  # owner of Globex only
    assert stranger.post("/switch/", {"tenant": owner[0].pk}).status_code == 404
