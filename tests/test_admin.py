"""The operators' admin: every model registered, every list page answers."""

from __future__ import annotations

import pytest
from django.apps import apps
from django.contrib import admin
from django.test import Client
from django.urls import reverse

pytestmark = pytest.mark.django_db

OUR_APPS = ("domains", "delivery", "reputation")


def test_every_model_is_registered():
    missing = [
        model.__name__
        for app in OUR_APPS
        for model in apps.get_app_config(app).get_models()
        if model not in admin.site._registry
    ]
    assert missing == []


def test_every_changelist_loads_for_an_operator(admin_user, verified_domain_rows):
    client = Client()
    client.force_login(admin_user)
    for app in OUR_APPS:
        for model in apps.get_app_config(app).get_models():
            url = reverse(f"admin:{app}_{model._meta.model_name}_changelist")
            response = client.get(url)
            assert response.status_code == 200, url


def test_admin_never_shows_secrets(admin_user, verified_domain_rows):
    from domains.models import DkimKey

    key = DkimKey.objects.get()
    client = Client()
    client.force_login(admin_user)
    page = client.get(reverse("admin:domains_dkimkey_change", args=[key.pk])).content
    assert b"PRIVATE KEY" not in page and b"private_key_encrypted" not in page


def test_tenant_member_who_is_not_staff_cannot_enter(owner):
    client = Client()
    client.force_login(owner[1])
    response = client.get("/admin/")
    assert response.status_code == 302 and "/admin/login/" in response.url


@pytest.fixture
def verified_domain_rows(owner):
    from delivery.accept import Sender, accept_message
    from delivery.credentials import create_api_key, create_smtp_credential
    from delivery.models import Source
    from domains.models import Domain, DomainStatus
    from domains.tenancy import add_domain

    domain = add_domain(tenant=owner[0], name="acme.test")
    Domain.objects.filter(pk=domain.pk).update(status=DomainStatus.VERIFIED)
    create_api_key(tenant=owner[0])
    create_smtp_credential(tenant=owner[0])
    accept_message(
        sender=Sender(tenant_id=owner[0].pk),
        mail_from="a@acme.test",
        recipients=["b@dest.test"],
        raw=b"From: a@acme.test\r\nSubject: s\r\n\r\nx\r\n",
        source=Source.API,
    )
    return domain


def test_operator_actions_on_domains(admin_user, owner, dns_server):
    from domains.models import Domain, KeyState
    from domains.tenancy import add_domain
    from tests.conftest import publish_domain

    domain = add_domain(tenant=owner[0], name="ops.test")
    publish_domain(dns_server, "ops.test")
    client = Client()
    client.force_login(admin_user)
    url = reverse("admin:domains_domain_changelist")
    for action in ("check_now", "rotate_key", "disable"):
        response = client.post(
            url, {"action": action, "_selected_action": [domain.pk]}, follow=True
        )
        assert response.status_code == 200
    domain = Domain.objects.get(pk=domain.pk)
    assert domain.dns_verified and domain.status == "disabled"
    assert domain.dkim_keys.filter(state=KeyState.PENDING).count() == 1
    assert domain.checks.count() == 1


def test_operator_adds_a_domain_in_the_admin(admin_user, owner):
    from domains.models import Domain

    client = Client()
    client.force_login(admin_user)
    url = reverse("admin:domains_domain_add")
    inline = {"dkim_keys-TOTAL_FORMS": 0, "dkim_keys-INITIAL_FORMS": 0}
    bad = client.post(url, {"tenant": owner[0].pk, "name": "no_dot", "status": "pending", **inline})
    assert bad.status_code == 200 and b"not a domain name" in bad.content
    response = client.post(
        url, {"tenant": owner[0].pk, "name": "Bücher.test", "status": "pending", **inline}
    )
    assert response.status_code == 302
    domain = Domain.objects.get()
    assert domain.name == "xn--bcher-kva.test" and domain.active_dkim_key() is not None
    again = client.post(
        url, {"tenant": owner[0].pk, "name": "BÜCHER.test", "status": "pending", **inline}
    )
    assert again.status_code == 200 and Domain.objects.count() == 1
