"""Dashboard credentials page: SMTP logins and API keys are created, rotated and revoked
through forms; a new secret is shown on exactly one page and stored nowhere; another
tenant's rows and domains are out of reach."""

from __future__ import annotations

import html
import re

import pytest
from django.conf import settings
from django.contrib.sessions.models import Session
from django.test import Client

from delivery.credentials import (
    check_api_key,
    check_smtp_login,
    create_api_key,
    create_smtp_credential,
)
from delivery.models import ApiKey, SmtpCredential
from domains.tenancy import add_domain

pytestmark = pytest.mark.django_db

PAGE = "/credentials/"
SECRET_RE = re.compile(r'<code id="new-secret-value" class="copyable">([^<]+)</code>')


def logged_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def shown_secret(page: str) -> str:
    found = SECRET_RE.findall(page)
    assert len(found) == 1, "exactly one secret on the page"
    return html.unescape(found[0])


def stored_values(row) -> str:
    """Every stored column of a row, as one string."""
    return " ".join(str(getattr(row, f.attname)) for f in row._meta.concrete_fields)


def assert_stored_nowhere(secret: str) -> None:
    for row in [*SmtpCredential.objects.all(), *ApiKey.objects.all()]:
        assert secret not in stored_values(row)
    for session in Session.objects.all():
        assert secret not in str(session.get_decoded())


def open_page_after(client: Client, response) -> tuple[str, str]:
    """Follow a create/rotate redirect to the page that shows the secret once; return the
    page and the secret, which no cookie carries (flash messages may live in one)."""
    assert response.status_code == 302 and response.url == f"{PAGE}#new-secret"
    page = client.get(PAGE)
    assert page.status_code == 200
    assert "no-store" in page["Cache-Control"]
    text = page.content.decode()
    secret = shown_secret(text)
    for cookie in [*response.cookies.values(), *client.cookies.values()]:
        assert secret not in cookie.value
    return text, secret


# -- SMTP logins ---------------------------------------------------------------------------


def test_empty_state_says_what_to_do(owner):
    page = logged_in(owner[1]).get(PAGE).content.decode()
    assert "No SMTP logins yet" in page and "No API keys yet" in page
    assert f"<code>{settings.SENDMSG_HOSTNAME}</code>" in page
    assert f"<code>{settings.SENDMSG_SUBMISSION_PORT}</code> (STARTTLS)" in page
    assert f"<code>{settings.SENDMSG_SUBMISSION_TLS_PORT}</code> (TLS)" in page
    assert '<label for="id_description">' in page and '<label for="id_name">' in page


def test_create_smtp_login_limited_to_a_domain_shows_the_password_once(owner):
    acme = add_domain(tenant=owner[0], name="acme.test")
    add_domain(tenant=owner[0], name="other.test")
    client = logged_in(owner[1])
    response = client.post(PAGE + "smtp/", {"description": "web shop", "domains": [acme.pk]})
    page, password = open_page_after(client, response)

    row = SmtpCredential.objects.get()
    assert "Shown once." in page and 'data-copy-target="new-secret-value"' in page
    assert f"Password for SMTP login {row.username}" in page
    assert row.description == "web shop" and list(row.domains.all()) == [acme]

    identity = check_smtp_login(row.username, password)
    assert identity is not None
    assert identity.tenant_id == owner[0].pk and identity.domain_ids == {acme.pk}
    assert check_smtp_login(row.username, password + "x") is None

    again = client.get(PAGE).content.decode()
    assert password not in again and "Shown once." not in again
    assert f'<tr data-username="{row.username}">' in again and "web shop" in again
    assert_stored_nowhere(password)


def test_smtp_login_for_all_domains_by_default(owner):
    add_domain(tenant=owner[0], name="acme.test")
    client = logged_in(owner[1])
    _, password = open_page_after(client, client.post(PAGE + "smtp/", {}))
    row = SmtpCredential.objects.get()
    assert not row.domains.exists() and row.description == ""
    assert check_smtp_login(row.username, password).domain_ids == frozenset()
    assert "All your domains" in client.get(PAGE).content.decode()


def test_domain_choices_are_only_the_tenants_own(owner, outsider):
    add_domain(tenant=owner[0], name="acme.test")
    globex = add_domain(tenant=outsider[0], name="globex.test")
    client = logged_in(owner[1])
    page = client.get(PAGE).content.decode()
    assert "acme.test" in page and "globex.test" not in page

    response = client.post(PAGE + "smtp/", {"description": "forged", "domains": [globex.pk]})
    assert response.status_code == 400
    assert "Select a valid choice" in response.content.decode()
    assert not SmtpCredential.objects.exists()
    assert "Shown once." not in client.get(PAGE).content.decode()


def test_bad_input_shows_the_error_and_creates_nothing(owner):
    client = logged_in(owner[1])
    response = client.post(PAGE + "smtp/", {"description": "x" * 201})
    assert response.status_code == 400
    assert 'aria-invalid="true"' in response.content.decode()
    response = client.post(PAGE + "api-keys/", {"name": "x" * 101})
    assert response.status_code == 400 and "at most 100 characters" in response.content.decode()
    assert not SmtpCredential.objects.exists() and not ApiKey.objects.exists()


def test_rotate_smtp_login_keeps_limits_and_stops_the_old_password(owner):
    acme = add_domain(tenant=owner[0], name="acme.test")
    old, old_password = create_smtp_credential(tenant=owner[0], domains=[acme], description="app")
    client = logged_in(owner[1])
    page, password = open_page_after(client, client.post(f"{PAGE}smtp/{old.pk}/rotate/"))

    new = SmtpCredential.objects.exclude(pk=old.pk).get()
    assert f"Password for SMTP login {new.username}" in page
    assert f"replaced by {new.username}" in page
    assert check_smtp_login(old.username, old_password) is None
    assert check_smtp_login(new.username, password).domain_ids == {acme.pk}
    assert new.description == "app"
    old.refresh_from_db()
    assert old.revoked and not new.revoked

    again = client.get(PAGE).content.decode()
    assert password not in again
    assert f"{PAGE}smtp/{old.pk}/rotate/" not in again  # no rotate button on a revoked row
    assert_stored_nowhere(password)


def test_revoke_smtp_login_asks_first(owner):
    row, password = create_smtp_credential(tenant=owner[0])
    client = logged_in(owner[1])
    confirm = client.get(f"{PAGE}smtp/{row.pk}/revoke/")
    assert confirm.status_code == 200
    assert f"Revoke SMTP login {row.username}?" in confirm.content.decode()
    assert check_smtp_login(row.username, password) is not None

    response = client.post(f"{PAGE}smtp/{row.pk}/revoke/")
    assert response.status_code == 302 and response.url == f"{PAGE}#smtp-h"
    row.refresh_from_db()
    assert row.revoked and check_smtp_login(row.username, password) is None
    page = client.get(PAGE).content.decode()
    assert "revoked: it no longer works" in page and "Revoked</span>" in page


def test_a_revoked_login_is_not_rotated_back_to_life(owner):
    row, _ = create_smtp_credential(tenant=owner[0])
    key_row, _ = create_api_key(tenant=owner[0], name="ci")
    client = logged_in(owner[1])
    client.post(f"{PAGE}smtp/{row.pk}/revoke/")
    client.post(f"{PAGE}api-keys/{key_row.pk}/revoke/")
    response = client.post(f"{PAGE}smtp/{row.pk}/rotate/")
    assert response.status_code == 302 and response.url == f"{PAGE}#smtp-h"
    response = client.post(f"{PAGE}api-keys/{key_row.pk}/rotate/")
    assert response.status_code == 302 and response.url == f"{PAGE}#api-keys-h"
    assert SmtpCredential.objects.count() == 1 and ApiKey.objects.count() == 1
    assert "is revoked; create a new one instead" in client.get(PAGE).content.decode()


# -- API keys ------------------------------------------------------------------------------


def test_create_api_key_shows_the_key_once(owner):
    client = logged_in(owner[1])
    page, key = open_page_after(client, client.post(PAGE + "api-keys/", {"name": "billing"}))
    row = ApiKey.objects.get()
    assert key.startswith(f"sm_{row.prefix}_") and row.name == "billing"
    assert f"New API key sm_{row.prefix}_… (billing)" in page and "Shown once." in page
    assert check_api_key(key).pk == row.pk

    again = client.get(PAGE).content.decode()
    assert key not in again and "Shown once." not in again
    assert f'<tr data-prefix="{row.prefix}">' in again and "billing" in again
    assert_stored_nowhere(key)


def test_rotate_and_revoke_api_key(owner):
    old, old_key = create_api_key(tenant=owner[0], name="ci")
    client = logged_in(owner[1])
    _, key = open_page_after(client, client.post(f"{PAGE}api-keys/{old.pk}/rotate/"))
    new = ApiKey.objects.exclude(pk=old.pk).get()
    assert new.name == "ci" and check_api_key(key).pk == new.pk
    assert check_api_key(old_key) is None
    assert key not in client.get(PAGE).content.decode()
    assert_stored_nowhere(key)

    confirm = client.get(f"{PAGE}api-keys/{new.pk}/revoke/").content.decode()
    assert f"Revoke API key sm_{new.prefix}_…?" in confirm
    assert check_api_key(key) is not None
    response = client.post(f"{PAGE}api-keys/{new.pk}/revoke/")
    assert response.status_code == 302 and response.url == f"{PAGE}#api-keys-h"
    assert check_api_key(key) is None


# -- who may do what -----------------------------------------------------------------------


def test_member_of_the_tenant_uses_the_page(member):
    client = logged_in(member[1])
    open_page_after(client, client.post(PAGE + "api-keys/", {"name": "dev"}))
    assert ApiKey.objects.get().tenant == member[0]


ROW_URLS = [
    "smtp/{smtp}/rotate/",
    "smtp/{smtp}/revoke/",
    "api-keys/{key}/rotate/",
    "api-keys/{key}/revoke/",
]


@pytest.mark.parametrize("template", ROW_URLS)
def test_outsider_gets_404_on_every_row_url_and_changes_nothing(owner, outsider, template):
    smtp, password = create_smtp_credential(tenant=owner[0])
    key_row, key = create_api_key(tenant=owner[0], name="ci")
    client = logged_in(outsider[1])
    url = PAGE + template.format(smtp=smtp.pk, key=key_row.pk)
    assert client.get(url).status_code == 404
    assert client.post(url).status_code == 404
    assert SmtpCredential.objects.count() == 1 and ApiKey.objects.count() == 1
    assert check_smtp_login(smtp.username, password) is not None
    assert check_api_key(key) is not None
    page = client.get(PAGE).content.decode()
    assert smtp.username not in page and key_row.prefix not in page
    assert logged_in(owner[1]).get(url).status_code in (200, 405)  # the URL exists


def test_outsider_creates_only_in_own_tenant(owner, outsider):
    client = logged_in(outsider[1])
    client.post(PAGE + "api-keys/", {"name": "globex"})
    client.post(PAGE + "smtp/", {"description": "globex"})
    assert ApiKey.objects.get().tenant == outsider[0]
    assert SmtpCredential.objects.get().tenant == outsider[0]
    assert "globex" not in logged_in(owner[1]).get(PAGE).content.decode()


def test_anonymous_is_sent_to_login_everywhere(owner):
    smtp, _ = create_smtp_credential(tenant=owner[0])
    key_row, _ = create_api_key(tenant=owner[0])
    client = Client()
    urls = [PAGE, PAGE + "smtp/", PAGE + "api-keys/"]
    urls += [PAGE + t.format(smtp=smtp.pk, key=key_row.pk) for t in ROW_URLS]
    for url in urls:
        for response in (client.get(url), client.post(url, {"name": "x"})):
            assert response.status_code == 302 and response.url.startswith("/login/")
    assert SmtpCredential.objects.count() == 1 and ApiKey.objects.count() == 1
    smtp.refresh_from_db()
    key_row.refresh_from_db()
    assert not smtp.revoked and not key_row.revoked


def test_actions_need_post_and_the_csrf_token(owner):
    smtp, _ = create_smtp_credential(tenant=owner[0])
    client = Client(enforce_csrf_checks=True)
    client.force_login(owner[1])
    for url in (PAGE + "smtp/", PAGE + "api-keys/", f"{PAGE}smtp/{smtp.pk}/rotate/"):
        assert client.get(url).status_code == 405
        assert client.post(url).status_code == 403
    assert client.post(f"{PAGE}smtp/{smtp.pk}/revoke/").status_code == 403
    assert logged_in(owner[1]).post(PAGE).status_code == 405
    smtp.refresh_from_db()
    assert not smtp.revoked and SmtpCredential.objects.count() == 1


def test_a_user_without_a_tenant_can_create_nothing(db):
    from django.contrib.auth import get_user_model

    user = get_user_model().objects.create_user("loner@example.test", password="pw-loner-1")
    client = logged_in(user)
    assert "No tenant yet" in client.get(PAGE).content.decode()
    assert client.post(PAGE + "smtp/", {}).status_code == 404
    assert client.post(PAGE + "api-keys/", {"name": "x"}).status_code == 404
    assert not SmtpCredential.objects.exists() and not ApiKey.objects.exists()


def test_nav_links_to_the_page(owner):
    client = logged_in(owner[1])
    assert f'<a href="{PAGE}">Credentials</a>' in client.get("/domains/").content.decode()
    assert f'<a href="{PAGE}" aria-current="page">Credentials</a>' in (
        client.get(PAGE).content.decode()
    )
