"""Dashboard: login, the current tenant, tenant-scoped pages, the switcher."""

from __future__ import annotations

import html
from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from delivery.models import Message
from domains.models import (
    DkimKey,
    Domain,
    DomainCheck,
    DomainStatus,
    KeyAlgorithm,
    KeyState,
    Membership,
    Role,
)
from domains.records import records_for
from domains.tenancy import add_domain
from tests.conftest import publish_domain

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


# -- domains through the dashboard ----------------------------------------------------------


def test_domains_page_empty_state_says_what_to_do(owner):
    response = logged_in(owner[1]).get("/domains/")
    assert response.status_code == 200
    assert b"No sending domains yet" in response.content
    assert b'<label for="id_name">Domain name</label>' in response.content


def test_add_domain_through_the_form_shows_it_in_unicode(owner):
    client = logged_in(owner[1])
    response = client.post("/domains/", {"name": " Bücher.Test "})
    domain = Domain.objects.get(tenant=owner[0])
    assert domain.name == "xn--bcher-kva.test"
    assert domain.dkim_keys.get().state == KeyState.ACTIVE
    assert response.status_code == 302 and response.url == f"/domains/{domain.pk}/"
    page = client.get(response.url).content.decode()
    assert "<h1>bücher.test" in page
    assert "bücher.test added" in page  # the message, shown once
    assert domain.active_dkim_key().record_name in page
    listing = client.get("/domains/").content.decode()
    assert ">bücher.test</a>" in listing and "xn--bcher-kva.test" in listing


@pytest.mark.parametrize(
    ("name", "error"),
    [
        ("exa mple.com", "'exa mple.com' is not a valid domain name"),
        ("-bad.test", "must not start or end with a hyphen"),
        ("localhost", "'localhost' is not a domain name (it needs at least one dot)"),
        ("", "This field is required."),
    ],
)
def test_bad_domain_input_shows_the_error_and_creates_nothing(owner, name, error):
    response = logged_in(owner[1]).post("/domains/", {"name": name})
    assert response.status_code == 400
    page = html.unescape(response.content.decode())
    assert 'role="alert"' in page and error in page
    assert 'aria-invalid="true"' in page
    assert not Domain.objects.exists()


def test_a_domain_registered_anywhere_cannot_be_added_again(owner, outsider):
    add_domain(tenant=outsider[0], name="globex.test")
    response = logged_in(owner[1]).post("/domains/", {"name": "GLOBEX.test."})
    assert response.status_code == 400
    assert b"globex.test is already registered." in response.content
    assert Domain.objects.filter(tenant=owner[0]).count() == 0


def test_setup_page_lists_records_keys_and_zone_lines(owner):
    domain = add_domain(tenant=owner[0], name="acme.test")
    page = logged_in(owner[1]).get(f"/domains/{domain.pk}/").content.decode()
    key = domain.active_dkim_key()
    for record in records_for(domain):
        assert html.escape(record.value) in page
        assert html.escape(record.zone_line()) in page
    assert page.count('data-copy-target="record-') == 2 * len(records_for(domain))
    assert 'data-copy-target="zone-lines"' in page
    assert f'data-selector="{key.selector}"' in page
    assert "No check has run yet" in page and "Not checked yet." in page
    assert "Add Ed25519 key (dual signing)" in page


def test_disable_and_enable(owner):
    domain = add_domain(tenant=owner[0], name="acme.test")
    client = logged_in(owner[1])
    response = client.post(f"/domains/{domain.pk}/disable/", follow=True)
    domain.refresh_from_db()
    assert domain.status == DomainStatus.DISABLED
    assert b"acme.test is disabled" in response.content
    assert f'action="/domains/{domain.pk}/enable/"'.encode() in response.content
    client.post(f"/domains/{domain.pk}/enable/")
    domain.refresh_from_db()
    assert domain.status == DomainStatus.PENDING  # it was never verified


def test_delete_asks_first_then_deletes(owner):
    domain = add_domain(tenant=owner[0], name="acme.test")
    client = logged_in(owner[1])
    confirm = client.get(f"/domains/{domain.pk}/delete/")
    assert confirm.status_code == 200 and b"Delete acme.test?" in confirm.content
    assert Domain.objects.filter(pk=domain.pk).exists()
    response = client.post(f"/domains/{domain.pk}/delete/", follow=True)
    assert response.redirect_chain[-1][0] == "/domains/"
    assert b"acme.test deleted" in response.content
    assert not Domain.objects.filter(pk=domain.pk).exists()
    assert not DkimKey.objects.exists()


def test_delete_is_refused_once_the_domain_has_sent_mail(owner):
    domain = add_domain(tenant=owner[0], name="acme.test")
    Message.objects.create(
        tenant=owner[0], domain=domain, source="api", mail_from="a@acme.test", raw=b"x", size=1
    )
    response = logged_in(owner[1]).post(f"/domains/{domain.pk}/delete/", follow=True)
    assert response.redirect_chain[-1][0] == f"/domains/{domain.pk}/#actions-h"
    page = response.content.decode()
    assert 'role="alert"' in page
    assert "acme.test was not deleted" in page and "disable it instead" in page
    assert Domain.objects.filter(pk=domain.pk).exists()


def test_rotate_rsa_key_and_add_ed25519_key(owner):
    domain = add_domain(tenant=owner[0], name="acme.test")
    old = domain.active_dkim_key()
    client = logged_in(owner[1])

    response = client.post(f"/domains/{domain.pk}/rotate-key/", {"algorithm": "rsa"}, follow=True)
    new = domain.dkim_keys.get(state=KeyState.PENDING, algorithm=KeyAlgorithm.RSA)
    assert new.selector != old.selector and domain.active_dkim_key() == old
    page = response.content.decode()
    assert f"New RSA key {new.selector} created" in page
    assert new.record_name in page and old.record_name in page

    again = client.post(f"/domains/{domain.pk}/rotate-key/", {"algorithm": "rsa"}, follow=True)
    assert b"already waiting for its DNS record" in again.content
    assert domain.dkim_keys.filter(algorithm=KeyAlgorithm.RSA).count() == 2

    response = client.post(
        f"/domains/{domain.pk}/rotate-key/", {"algorithm": "ed25519"}, follow=True
    )
    ed = domain.dkim_keys.get(algorithm=KeyAlgorithm.ED25519)
    assert ed.state == KeyState.PENDING
    assert ed.record_name.encode() in response.content
    assert b"Rotate Ed25519 key" in response.content

    bad = client.post(f"/domains/{domain.pk}/rotate-key/", {"algorithm": "dsa"}, follow=True)
    assert b"Choose a key type" in bad.content
    assert domain.dkim_keys.count() == 3


def test_check_now_without_script_redirects_and_shows_verified(owner, dns_server):
    domain = add_domain(tenant=owner[0], name="check-now.test")
    publish_domain(dns_server, "check-now.test")
    client = logged_in(owner[1])
    response = client.post(f"/domains/{domain.pk}/check/")
    assert response.status_code == 302
    assert response.url == f"/domains/{domain.pk}/#health-h"
    domain.refresh_from_db()
    assert domain.status == DomainStatus.VERIFIED and domain.checks.count() == 1
    page = client.get(response.url).content.decode()
    assert 'data-status="verified"' in page
    assert "Checked check-now.test: health score" in page
    assert '<tr data-check="dkim"><th scope="row">DKIM</th>' in page
    assert page.count('<circle class="dot') == 1
    assert "The domain&#x27;s records check out" in page  # the VERIFIED event


def test_check_now_with_script_gets_the_checks_fragment(owner, dns_server):
    domain = add_domain(tenant=owner[0], name="fragment.test")
    client = logged_in(owner[1])
    pending = client.post(f"/domains/{domain.pk}/check/", headers={"X-Requested-With": "fetch"})
    assert pending.status_code == 200
    fragment = pending.content.decode()
    assert "<html" not in fragment and "<header" not in fragment
    assert 'id="domain-health"' in fragment and 'id="domain-events"' in fragment
    assert 'data-status="pending"' in fragment
    assert 'id="dns-records"' not in fragment  # no key changed

    publish_domain(dns_server, "fragment.test")
    verified = client.post(
        f"/domains/{domain.pk}/check/", headers={"X-Requested-With": "fetch"}
    ).content.decode()
    assert 'data-status="verified"' in verified
    assert verified.count('<circle class="dot') == 2
    # No message is left behind for the next full page.
    assert "Checked fragment.test" not in client.get(f"/domains/{domain.pk}/").content.decode()


def test_check_now_swaps_keys_and_records_when_a_new_key_starts_signing(owner, dns_server):
    domain = add_domain(tenant=owner[0], name="rotating.test")
    client = logged_in(owner[1])
    client.post(f"/domains/{domain.pk}/rotate-key/", {"algorithm": "ed25519"})
    publish_domain(dns_server, "rotating.test")
    fragment = client.post(
        f"/domains/{domain.pk}/check/", headers={"X-Requested-With": "fetch"}
    ).content.decode()
    ed = domain.dkim_keys.get(algorithm=KeyAlgorithm.ED25519)
    assert ed.state == KeyState.ACTIVE
    assert 'id="dns-records"' in fragment and 'id="dkim-keys"' in fragment
    assert f"Key {ed.selector} (Ed25519 (RFC 8463)) is in DNS and now signs." in fragment


def test_score_history_chart_and_partial_score(owner):
    domain = add_domain(tenant=owner[0], name="acme.test")
    start = timezone.now() - timedelta(days=40)
    for day in range(35):
        DomainCheck.objects.create(
            domain=domain,
            checked_at=start + timedelta(days=day),
            score=50 + day,
            partial=day == 34,
            results=[
                {
                    "name": "dkim",
                    "status": "ok",
                    "message": "Key found.",
                    "points": 30,
                    "weight": 30,
                    "details": {},
                },
                {
                    "name": "dmarc",
                    "status": "unknown",
                    "message": "DNS timed out.",
                    "points": 0,
                    "weight": 25,
                    "details": {},
                },
            ],
        )
    Domain.objects.filter(pk=domain.pk).update(health_score=84, score_partial=True)
    page = logged_in(owner[1]).get(f"/domains/{domain.pk}/").content.decode()
    assert page.count('<circle class="dot') == 30  # the last 30 checks
    assert page.count('<circle class="dot partial"') == 1
    assert "last 30 checks: from 55 to 84, lowest 55, highest 84" in page
    assert "<strong>84</strong> of 100 — <strong>partial</strong>" in page
    assert '<tr data-check="dmarc"><th scope="row">DMARC</th>' in page
    assert "Unknown</span>" in page and "not counted" in page


def test_actions_need_the_csrf_token(owner):
    domain = add_domain(tenant=owner[0], name="acme.test")
    client = Client(enforce_csrf_checks=True)
    client.force_login(owner[1])
    assert client.post(f"/domains/{domain.pk}/disable/").status_code == 403
    assert client.post("/domains/", {"name": "new.test"}).status_code == 403
    domain.refresh_from_db()
    assert domain.status == DomainStatus.PENDING and Domain.objects.count() == 1


def test_post_only_urls_refuse_get_for_the_owner(owner):
    domain = add_domain(tenant=owner[0], name="acme.test")
    client = logged_in(owner[1])
    for action in ("check", "disable", "enable", "rotate-key"):
        assert client.get(f"/domains/{domain.pk}/{action}/").status_code == 405
    assert client.post(f"/domains/{domain.pk}/").status_code == 405


DOMAIN_URLS = ["", "check/", "disable/", "enable/", "delete/", "rotate-key/"]


@pytest.mark.parametrize("suffix", DOMAIN_URLS)
def test_outsider_gets_404_on_every_domain_url(owner, outsider, dns_server, suffix):
    domain = add_domain(tenant=owner[0], name="acme.test")
    client = logged_in(outsider[1])
    url = f"/domains/{domain.pk}/{suffix}"
    assert client.get(url).status_code == 404
    assert client.post(url, {"algorithm": "ed25519"}).status_code == 404
    assert client.post(url, headers={"X-Requested-With": "fetch"}).status_code == 404
    domain.refresh_from_db()
    assert domain.status == DomainStatus.PENDING
    assert domain.dkim_keys.count() == 1 and not domain.checks.exists()


def test_anonymous_is_sent_to_login_from_every_new_url(owner):
    domain = add_domain(tenant=owner[0], name="acme.test")
    client = Client()
    for suffix in DOMAIN_URLS:
        response = client.post(f"/domains/{domain.pk}/{suffix}")
        assert response.status_code == 302 and response.url.startswith("/login/")
    assert client.post("/domains/", {"name": "x.test"}).url.startswith("/login/")
    assert Domain.objects.count() == 1


def test_outsider_sees_and_adds_only_in_own_tenant(owner, outsider):
    add_domain(tenant=owner[0], name="acme.test")
    client = logged_in(outsider[1])
    assert b"acme.test" not in client.get("/domains/").content
    client.post("/domains/", {"name": "globex.test"})
    assert Domain.objects.get(name="globex.test").tenant == outsider[0]


def test_a_user_without_a_tenant_can_add_nothing(db):
    from django.contrib.auth import get_user_model

    user = get_user_model().objects.create_user("loner@example.test", password="pw-loner-1")
    client = logged_in(user)
    assert b"No tenant yet" in client.get("/domains/").content
    assert client.post("/domains/", {"name": "loner.test"}).status_code == 404
    assert not Domain.objects.exists()
