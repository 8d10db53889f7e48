"""One-click unsubscribe (RFC 8058) end to end: asked for through the API, SMTP or the
tenant's default, relayed to the test MX one recipient per transaction with its own
DKIM-signed headers (the autouse check verifies every received message with OpenDKIM
and Mail::DKIM), and the /u/<token> endpoint that lists the address."""

from __future__ import annotations

import base64
import email
import html
import smtplib
from email import policy

import pytest
from django.conf import settings
from django.test import Client
from rest_framework.test import APIClient

from delivery.accept import AcceptError, Sender, accept_message
from delivery.credentials import create_api_key, create_smtp_credential
from delivery.models import Event, EventType, Message, Recipient, RecipientState, Source
from delivery.relay import deliver_message
from delivery.unsubscribe import PLACEHOLDER, find_recipient, token_for
from domains.models import Tenant
from reputation.models import Suppression, SuppressionReason
from tests.conftest import wait_until

pytestmark = pytest.mark.django_db

ONE_CLICK = "List-Unsubscribe=One-Click"


def raw(*to: str, headers: str = "", body: str = "Hello.\r\n") -> bytes:
    return (
        f"From: news@acme.test\r\nTo: {', '.join(to)}\r\nSubject: news\r\n{headers}\r\n{body}"
    ).encode()


def send(domain, *to: str, unsubscribe: bool | None = True, **kw) -> Message:
    return accept_message(
        sender=Sender(tenant_id=domain.tenant_id),
        mail_from="news@acme.test",
        recipients=list(to),
        raw=raw(*to, **kw),
        source=Source.API,
        unsubscribe=unsubscribe,
    )


def parsed(received) -> email.message.EmailMessage:
    return email.message_from_bytes(received.data, policy=policy.default)


def link_of(received) -> str:
    """The one List-Unsubscribe URL of a received message (asserting there is one)."""
    message = parsed(received)
    [value] = message.get_all("List-Unsubscribe")
    [post] = message.get_all("List-Unsubscribe-Post")
    assert post == ONE_CLICK
    assert value.startswith("<") and value.endswith(">"), value
    return value[1:-1]


def path_of(url: str) -> str:
    base = f"{settings.SENDMSG_PUBLIC_URL}/u/"
    assert url.startswith(base), url
    return "/u/" + url[len(base) :]


def api_for(tenant: Tenant) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {create_api_key(tenant=tenant)[1]}")
    return client


def browser() -> Client:
    """A client that enforces CSRF like a real browser session would meet it."""
    return Client(enforce_csrf_checks=True)


def one_click(url: str):
    """The POST a mailbox provider sends (RFC 8058 §3.2)."""
    return browser().post(path_of(url), ONE_CLICK, content_type="application/x-www-form-urlencoded")


# -- relay ---------------------------------------------------------------------------------


def test_each_recipient_gets_its_own_signed_headers_the_senders_replaced(verified_domain, mx):
    theirs = "List-Unsubscribe: <mailto:leave@acme.test>\r\nList-Unsubscribe-Post: x=y\r\n"
    message = send(verified_domain, "a@dest.test", "b@dest.test", "c@dest.test", headers=theirs)
    assert message.unsubscribe is True
    assert deliver_message(message.pk) == 3
    received = {m.rcpt_tos[0]: m for m in mx.messages}
    assert sorted(received) == ["a@dest.test", "b@dest.test", "c@dest.test"]
    assert all(len(m.rcpt_tos) == 1 for m in mx.messages)  # one transaction each
    links = {}
    for address, got in received.items():
        assert got.mail_from.startswith("b-")  # the recipient's own return path
        url = links[address] = link_of(got)  # exactly one of each: the sender's replaced
        recipient = Recipient.objects.get(message=message, address=address)
        assert url == f"{settings.SENDMSG_PUBLIC_URL}/u/{token_for(recipient)}"
        assert find_recipient(url.rsplit("/", 1)[1]) == recipient
        signatures = parsed(got).get_all("DKIM-Signature")
        assert signatures
        for signature in signatures:
            tags = dict(tag.split("=", 1) for tag in "".join(signature.split()).split(";") if tag)
            signed = tags["h"].lower().split(":")
            assert {"list-unsubscribe", "list-unsubscribe-post"} <= set(signed)
    assert len(set(links.values())) == 3
    assert set(Recipient.objects.values_list("state", flat=True)) == {RecipientState.DELIVERED}


def test_messages_without_the_opt_in_are_sent_as_written(verified_domain, mx):
    theirs = "List-Unsubscribe: <mailto:leave@acme.test>\r\n"
    message = send(
        verified_domain,
        "a@dest.test",
        "b@dest.test",
        unsubscribe=None,
        headers=theirs,
        body=f"Leave: {PLACEHOLDER}\r\n",
    )
    assert message.unsubscribe is False  # the tenant's default
    deliver_message(message.pk)
    [got] = mx.messages  # one transaction for both, as before
    assert sorted(got.rcpt_tos) == ["a@dest.test", "b@dest.test"]
    assert got.mail_from.startswith("m-")
    assert got.data.endswith(bytes(message.raw))  # only the signatures were added
    assert parsed(got).get_all("List-Unsubscribe") == ["<mailto:leave@acme.test>"]
    assert parsed(got).get("List-Unsubscribe-Post") is None
    assert PLACEHOLDER.encode() in got.data


def test_placeholder_becomes_each_recipients_link_in_every_encoding(verified_domain, mx):
    text = f"Grüße. To stop: {PLACEHOLDER}\r\n".encode()
    body = (
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/mixed; boundary="b1"\r\n\r\n'
        "--b1\r\n"
        'Content-Type: multipart/alternative; boundary="b2"\r\n\r\n'
        "--b2\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        "Content-Transfer-Encoding: base64\r\n\r\n"
        f"{base64.encodebytes(text).decode()}\r\n"
        "--b2\r\n"
        "Content-Type: text/html; charset=utf-8\r\n"
        "Content-Transfer-Encoding: quoted-printable\r\n\r\n"
        '<p>Gr=C3=BC=C3=9Fe <a href=3D"%unsubscribe_url%">unsubscribe</a></p>\r\n'
        "--b2--\r\n"
        "--b1\r\n"
        "Content-Type: text/plain; charset=us-ascii\r\n"
        'Content-Disposition: attachment; filename="kept.txt"\r\n\r\n'
        f"Attached as written: {PLACEHOLDER}\r\n"
        "--b1--\r\n"
    )
    head = "From: news@acme.test\r\nTo: a@dest.test, b@dest.test\r\nSubject: news\r\n"
    message = accept_message(
        sender=Sender(tenant_id=verified_domain.tenant_id),
        mail_from="news@acme.test",
        recipients=["a@dest.test", "b@dest.test"],
        raw=(head + body).encode(),
        source=Source.API,
        unsubscribe=True,
    )
    deliver_message(message.pk)
    assert len(mx.messages) == 2
    urls = set()
    for got in mx.messages:
        url = link_of(got)
        urls.add(url)
        mime = parsed(got)
        plain, html_body, attachment = (part for part in mime.walk() if not part.is_multipart())
        assert plain["Content-Transfer-Encoding"] == "base64"
        assert plain.get_content() == text.decode().replace(PLACEHOLDER, url)  # CRLF kept
        assert html_body["Content-Transfer-Encoding"] == "quoted-printable"
        assert f'<a href="{html.escape(url)}">' in html_body.get_content()
        assert "Grüße" in html_body.get_content()
        assert PLACEHOLDER in attachment.get_content()  # attachments are left alone
        assert PLACEHOLDER.encode() in got.data and url.encode() not in got.data.split(b"--b1")[2]
    assert len(urls) == 2


def test_placeholder_in_8bit_and_in_an_unknown_charset(verified_domain, mx):
    body = (
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/mixed; boundary="b1"\r\n\r\n'
        "--b1\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        "Content-Transfer-Encoding: 8bit\r\n\r\n"
        f"Grüße, {PLACEHOLDER}\r\n"
        "--b1\r\n"
        "Content-Type: text/plain; charset=x-unknown\r\n"
        "Content-Transfer-Encoding: base64\r\n\r\n"
        f"{base64.b64encode(PLACEHOLDER.encode()).decode()}\r\n"
        "--b1--\r\n"
    )
    head = "From: news@acme.test\r\nTo: a@dest.test\r\nSubject: news\r\n"
    message = accept_message(
        sender=Sender(tenant_id=verified_domain.tenant_id),
        mail_from="news@acme.test",
        recipients=["a@dest.test"],
        raw=(head + body).encode(),
        source=Source.API,
        unsubscribe=True,
    )
    deliver_message(message.pk)
    [got] = mx.messages
    url = link_of(got)
    assert f"Grüße, {url}\r\n".encode() in got.data  # the 8-bit bytes as they were
    unknown = base64.b64encode(PLACEHOLDER.encode())
    assert unknown in got.data  # a charset Python does not know: left as written


def test_placeholder_in_a_json_message_from_the_api(verified_domain, mx):
    client = api_for(verified_domain.tenant)
    response = client.post(
        "/api/v1/send/",
        {
            "from": "news@acme.test",
            "to": ["a@dest.test"],
            "subject": "Hello",
            "text": f"Hello — to stop: {PLACEHOLDER}",
            "html": f'<a href="{PLACEHOLDER}">Unsubscribe</a>',
            "unsubscribe": True,
        },
        format="json",
    )
    assert response.status_code == 201, response.json()
    deliver_message(Message.objects.get().pk)
    [got] = mx.messages
    url = link_of(got)
    plain, rich = (p for p in parsed(got).walk() if not p.is_multipart())
    assert plain.get_content().rstrip() == f"Hello — to stop: {url}"
    assert rich.get_content().rstrip() == f'<a href="{html.escape(url)}">Unsubscribe</a>'


# -- the endpoint --------------------------------------------------------------------------


def test_one_click_post_suppresses_exactly_that_recipient_then_sends_are_suppressed(
    verified_domain, outsider, mx
):
    message = send(verified_domain, "alice@dest.test", "bob@dest.test")
    deliver_message(message.pk)
    links = {m.rcpt_tos[0]: link_of(m) for m in mx.messages}
    alice = Recipient.objects.get(message=message, address="alice@dest.test")

    response = one_click(links["alice@dest.test"])
    assert response.status_code == 200
    assert b"unsubscribed" in response.content
    [entry] = Suppression.objects.all()
    assert (entry.tenant_id, entry.address, entry.reason) == (
        verified_domain.tenant_id,
        "alice@dest.test",
        SuppressionReason.UNSUBSCRIBE,
    )
    [event] = Event.objects.filter(type=EventType.UNSUBSCRIBED)
    assert (event.recipient_id, event.message_id, event.tenant_id) == (
        alice.pk,
        message.pk,
        verified_domain.tenant_id,
    )
    assert entry.source_event == event

    # Idempotent: again, the same answer and nothing new.
    assert one_click(links["alice@dest.test"]).status_code == 200
    assert Suppression.objects.count() == 1
    assert Event.objects.filter(type=EventType.UNSUBSCRIBED).count() == 1
    assert not Suppression.objects.filter(tenant=outsider[0]).exists()

    later = send(verified_domain, "alice@dest.test", "bob@dest.test")
    assert dict(Recipient.objects.filter(message=later).values_list("address", "state")) == {
        "alice@dest.test": RecipientState.SUPPRESSED,
        "bob@dest.test": RecipientState.QUEUED,
    }


def test_get_shows_a_confirmation_button_and_unsubscribes_nobody(verified_domain, mx):
    message = send(verified_domain, "alice@dest.test")
    deliver_message(message.pk)
    [got] = mx.messages
    path = path_of(link_of(got))
    response = browser().get(path)
    assert response.status_code == 200
    page = response.content.decode()
    assert 'method="post"' in page and "alice@dest.test" in page
    assert 'name="List-Unsubscribe" value="One-Click"' in page
    assert not Suppression.objects.exists()
    assert not Event.objects.filter(type=EventType.UNSUBSCRIBED).exists()
    # The page's button posts the form as a browser would, without a CSRF token.
    response = browser().post(path, {"List-Unsubscribe": "One-Click"})
    assert response.status_code == 200
    assert Suppression.objects.get().address == "alice@dest.test"


def test_a_forged_token_is_404_and_changes_nothing(verified_domain, outsider, mx):
    message = send(verified_domain, "alice@dest.test", "bob@dest.test")
    alice, bob = Recipient.objects.filter(message=message).order_by("address")
    good = token_for(alice)
    number, mac = good.split("-")
    forged = [
        f"{number}-{'a' * 16}",  # a made-up signature
        f"{token_for(bob).split('-')[0]}-{mac}",  # alice's signature on bob's id
        f"{number}-{mac[:-1]}",  # truncated
        "zzzzzzzzzzzzz-" + mac,  # no such recipient
        "nonsense",
    ]
    for token in forged:
        assert (
            browser().post(f"/u/{token}", ONE_CLICK, content_type="text/plain").status_code == 404
        )
        assert browser().get(f"/u/{token}").status_code == 404
    # A token from another deployment's key does not verify here either.
    settings_key = settings.HASH_KEY
    try:
        settings.HASH_KEY = "another key"
        elsewhere = token_for(alice)
    finally:
        settings.HASH_KEY = settings_key
    assert browser().post(f"/u/{elsewhere}").status_code == 404
    assert not Suppression.objects.exists()
    assert not Event.objects.filter(type=EventType.UNSUBSCRIBED).exists()


# -- opting in -----------------------------------------------------------------------------


def test_tenant_default_and_what_overrides_it(verified_domain, mx):
    tenant = verified_domain.tenant
    assert send(verified_domain, "a@dest.test", unsubscribe=None).unsubscribe is False
    tenant.list_unsubscribe = True
    tenant.save()
    by_default = send(verified_domain, "a@dest.test", unsubscribe=None)
    assert by_default.unsubscribe is True
    assert send(verified_domain, "a@dest.test", unsubscribe=False).unsubscribe is False
    header_no = send(
        verified_domain, "a@dest.test", unsubscribe=None, headers="Sendmsg-Unsubscribe: no\r\n"
    )
    assert header_no.unsubscribe is False
    assert b"sendmsg-unsubscribe" not in bytes(header_no.raw).lower()
    deliver_message(by_default.pk)
    [got] = mx.messages
    assert link_of(got)


def test_the_sendmsg_unsubscribe_header_is_taken_and_removed(verified_domain):
    message = send(
        verified_domain, "a@dest.test", unsubscribe=None, headers="Sendmsg-Unsubscribe: yes\r\n"
    )
    assert message.unsubscribe is True
    assert b"sendmsg-unsubscribe" not in bytes(message.raw).lower()
    # The API's field wins over the header.
    overridden = send(
        verified_domain, "a@dest.test", unsubscribe=False, headers="Sendmsg-Unsubscribe: yes\r\n"
    )
    assert overridden.unsubscribe is False
    with pytest.raises(AcceptError) as refused:
        send(verified_domain, "a@dest.test", unsubscribe=None, headers="Sendmsg-Unsubscribe: y\r\n")
    assert (refused.value.code, refused.value.enhanced) == (550, "5.6.0")


def test_api_field_on_json_batch_and_raw_sends(verified_domain):
    client = api_for(verified_domain.tenant)
    one = {"from": "news@acme.test", "to": ["a@dest.test"], "subject": "s", "text": "x"}
    assert (
        client.post("/api/v1/send/", {**one, "unsubscribe": True}, format="json").status_code == 201
    )
    assert client.post("/api/v1/send/", one, format="json").status_code == 201
    bad = client.post("/api/v1/send/", {**one, "unsubscribe": "maybe"}, format="json")
    assert bad.status_code == 400
    assert bad.json()["error"]["field"] == "unsubscribe"
    batch = client.post(
        "/api/v1/send/batch/",
        {"messages": [{**one, "unsubscribe": True}, {**one, "unsubscribe": False}, one]},
        format="json",
    )
    assert batch.status_code == 200 and batch.json()["accepted"] == 3, batch.json()
    raw_send = client.post(
        "/api/v1/send/mime/",
        {
            "mail_from": "news@acme.test",
            "rcpt_to": ["a@dest.test"],
            "data": base64.b64encode(raw("a@dest.test")).decode(),
            "unsubscribe": True,
        },
        format="json",
    )
    assert raw_send.status_code == 201, raw_send.json()
    flags = list(Message.objects.order_by("pk").values_list("unsubscribe", flat=True))
    assert flags == [True, False, True, False, False, True]


@pytest.mark.peers
@pytest.mark.django_db(transaction=True)
def test_smtp_submitters_opt_in_with_a_header(platform, verified_domain, client_tls, mx):
    credential, password = create_smtp_credential(tenant=verified_domain.tenant)
    username = credential.username
    data = raw("a@dest.test", "b@dest.test", headers="Sendmsg-Unsubscribe: yes\r\n")
    with smtplib.SMTP("localhost", settings.SENDMSG_SUBMISSION_PORT, timeout=15) as client:
        client.starttls(context=client_tls)
        client.login(username, password)
        client.sendmail("news@acme.test", ["a@dest.test", "b@dest.test"], data)
    stored = Message.objects.get()
    assert stored.unsubscribe is True
    assert b"sendmsg-unsubscribe" not in bytes(stored.raw).lower()
    wait_until(lambda: len(mx.messages) >= 2)
    assert sorted(m.rcpt_tos for m in mx.messages) == [["a@dest.test"], ["b@dest.test"]]
    assert len({link_of(m) for m in mx.messages}) == 2
    assert all(b"sendmsg-unsubscribe" not in m.data.lower() for m in mx.messages)
