"""The Postal-compatible API: Postal's fields, envelope and error codes (always HTTP 200),
and django-anymail's Postal backend sending through it unchanged."""

from __future__ import annotations

import base64
import email
import json
from email import policy
from urllib.parse import urlencode

import pytest
from django.core import mail
from rest_framework.test import APIClient

from delivery.credentials import create_api_key
from delivery.models import Message, Recipient, RecipientState
from domains.models import Domain, DomainStatus, Tenant
from domains.tenancy import add_domain
from tests.conftest import wait_until

pytestmark = pytest.mark.django_db

MESSAGE = "/api/v1/send/message"
RAW = "/api/v1/send/raw"
CRLF_WORD = "=?UTF-8?Q?a=0D=0ABcc:_evil@evil.test?="


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def postal(key: str | None) -> APIClient:
    client = APIClient()
    if key is not None:
        client.credentials(HTTP_X_SERVER_API_KEY=key)
    return client


def verify(tenant: Tenant, name: str) -> Domain:
    domain = add_domain(tenant=tenant, name=name)
    Domain.objects.filter(pk=domain.pk).update(status=DomainStatus.VERIFIED)
    return domain


@pytest.fixture
def key(owner) -> str:
    verify(owner[0], "acme.test")
    return create_api_key(tenant=owner[0])[1]


@pytest.fixture
def client(key) -> APIClient:
    return postal(key)


def params(**fields) -> dict:
    body = {
        "from": "Acme <news@acme.test>",
        "to": ["alice@dest.test"],
        "subject": "Hello",
        "plain_body": "Hello Alice",
    }
    body.update(fields)
    return {k: v for k, v in body.items() if v is not None}


def answer(response, status: str) -> dict:
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["status"] == status, body
    assert isinstance(body["time"], float) and body["flags"] == {}
    return body["data"]


def error(response, code: str) -> dict:
    data = answer(response, "error")
    assert data["code"] == code, data
    assert data["message"]
    return data


def assert_nothing_stored() -> None:
    assert not Message.objects.exists() and not Recipient.objects.exists()


def test_message_is_sent_with_postal_fields_and_answer(client):
    response = client.post(
        MESSAGE,
        params(
            to=["Alice <alice@dest.test>", "bob@dest.test"],
            cc=["carol@dest.test"],
            bcc=["secret@dest.test"],
            sender="bounces@acme.test",
            reply_to="help@acme.test",
            html_body="<p>Hello</p>",
            tag="welcome",
            headers={"X-Campaign": "spring"},
            attachments=[
                {"name": "a.txt", "content_type": "text/plain", "data": b64(b"hello")},
                {"name": "b.bin", "data": b64(b"\x00\x01")},
                "skipped, as Postal skips non-hash attachments",
            ],
            bounce=False,
        ),
        format="json",
    )
    data = answer(response, "success")
    stored = Message.objects.get()
    assert (
        data["message_id"] == stored.message_id.strip("<>") and "@acme.test" in data["message_id"]
    )
    rows = dict(Recipient.objects.values_list("address", "pk"))
    assert data["messages"] == {
        address: {"id": pk, "token": stored.queue_id} for address, pk in rows.items()
    }
    assert list(data["messages"]) == [
        "alice@dest.test",
        "bob@dest.test",
        "carol@dest.test",
        "secret@dest.test",
    ]
    assert stored.tags == ["welcome"] and stored.mail_from == "news@acme.test"
    parsed = email.message_from_bytes(bytes(stored.raw), policy=policy.default)
    assert parsed["From"] == "Acme <news@acme.test>" and parsed["Sender"] == "bounces@acme.test"
    assert parsed["Reply-To"] == "help@acme.test" and parsed["X-Campaign"] == "spring"
    assert parsed["Bcc"] is None and b"secret@dest.test" not in bytes(stored.raw)
    names = [(p.get_filename(), p.get_content_type()) for p in parsed.iter_attachments()]
    assert names == [("a.txt", "text/plain"), ("b.bin", "application/octet-stream")]


def test_comma_separated_addresses_and_form_encoded_params(client):
    body = params(to="alice@dest.test, Bob <bob@dest.test>", plain_body=None, html_body="<b>x</b>")
    form = urlencode({"params": json.dumps(body)})
    response = client.post(MESSAGE, form, content_type="application/x-www-form-urlencoded")
    assert list(answer(response, "success")["messages"]) == ["alice@dest.test", "bob@dest.test"]


def test_key_errors(owner, key):
    error(postal(None).post(MESSAGE, params(), format="json"), "AccessDenied")
    error(postal("sm_0000_nope").post(MESSAGE, params(), format="json"), "InvalidServerAPIKey")
    # A REST API Bearer header is not a Postal key.
    bearer = APIClient()
    bearer.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    error(bearer.post(MESSAGE, params(), format="json"), "AccessDenied")
    Tenant.objects.filter(pk=owner[0].pk).update(suspended=True)
    error(postal(key).post(MESSAGE, params(), format="json"), "ServerSuspended")
    error(postal(key).post(RAW, {}, format="json"), "ServerSuspended")
    assert_nothing_stored()


def _many(n: int) -> list[str]:
    return [f"r{i}@dest.test" for i in range(n)]


@pytest.mark.parametrize(
    ("fields", "code"),
    [
        ({"to": None}, "NoRecipients"),
        ({"to": [], "cc": [], "bcc": []}, "NoRecipients"),
        ({"to": _many(51)}, "TooManyToAddresses"),
        ({"cc": _many(51)}, "TooManyCCAddresses"),
        ({"bcc": _many(51)}, "TooManyBCCAddresses"),
        ({"plain_body": None}, "NoContent"),
        ({"plain_body": "  ", "html_body": ""}, "NoContent"),
        ({"from": None}, "FromAddressMissing"),
        ({"from": "ceo@globex.test"}, "UnauthenticatedFromAddress"),
        ({"from": "news@unverified.test"}, "UnauthenticatedFromAddress"),
        ({"sender": "ceo@globex.test"}, "UnauthenticatedFromAddress"),
        ({"attachments": [{"data": b64(b"x")}]}, "AttachmentMissingName"),
        ({"attachments": [{"name": "a.txt"}]}, "AttachmentMissingData"),
        # Postal's order: recipients before content before the sender before attachments
        ({"to": None, "plain_body": None}, "NoRecipients"),
        ({"plain_body": None, "from": None}, "NoContent"),
        (
            {"from": "ceo@globex.test", "attachments": [{"data": "eA=="}]},
            "UnauthenticatedFromAddress",
        ),
        # refusals Postal has no code for, in its style
        ({"subject": CRLF_WORD}, "HeaderInjection"),
        ({"subject": "a\r\nBcc: evil@evil.test"}, "HeaderInjection"),
        ({"from": f"{CRLF_WORD} <news@acme.test>"}, "HeaderInjection"),
        ({"to": ["Bob\r\n <bob@dest.test>"]}, "HeaderInjection"),
        ({"to": "a@dest.test\r\nBcc: evil@evil.test"}, "HeaderInjection"),
        ({"headers": {"X-A": CRLF_WORD}}, "HeaderInjection"),
        ({"attachments": [{"name": f"{CRLF_WORD}.txt", "data": "eA=="}]}, "HeaderInjection"),
        ({"tag": "a\nb"}, "HeaderInjection"),
        ({"headers": {"Bcc": "evil@evil.test"}}, "ReservedHeader"),
        ({"to": ["not an address"]}, "InvalidAddress"),
    ],
)
def test_message_errors_are_postals_codes_with_http_200(client, outsider, fields, code):
    verify(outsider[0], "globex.test")
    error(client.post(MESSAGE, params(**fields), format="json"), code)
    assert_nothing_stored()


def test_message_too_large(client, settings):
    settings.SENDMSG_MESSAGE_SIZE_LIMIT = 2000
    error(client.post(MESSAGE, params(plain_body="x" * 3000), format="json"), "MessageTooLarge")
    huge = json.dumps(params(plain_body="x" * (2 * 2000 + 1024 * 1024)))
    error(client.post(MESSAGE, huge, content_type="application/json"), "MessageTooLarge")
    assert_nothing_stored()


@pytest.mark.parametrize(
    "body", [{"to": 5}, {"to": [5]}, {"attachments": {"name": "x"}}, {"headers": ["x"]}]
)
def test_wrong_types_are_parameter_errors(client, body):
    answer(client.post(MESSAGE, params(**body), format="json"), "parameter-error")
    assert_nothing_stored()


def test_unreadable_body_is_a_parameter_error(client):
    answer(client.post(MESSAGE, "{nope", content_type="application/json"), "parameter-error")
    form = urlencode({"params": "{nope"})
    answer(
        client.post(MESSAGE, form, content_type="application/x-www-form-urlencoded"),
        "parameter-error",
    )
    assert_nothing_stored()


# -- raw ----------------------------------------------------------------------------------

RAW_MESSAGE = b"From: Acme <news@acme.test>\r\nTo: list@dest.test\r\nSubject: raw\r\n\r\nbody\r\n"


def test_raw_message_goes_to_rcpt_to_only(client):
    response = client.post(
        RAW,
        {
            "mail_from": "news@acme.test",
            "rcpt_to": ["alice@dest.test", "alice@dest.test", "bob@dest.test"],
            "data": b64(RAW_MESSAGE),
            "bounce": False,
        },
        format="json",
    )
    data = answer(response, "success")
    stored = Message.objects.get()
    assert list(data["messages"]) == ["alice@dest.test", "bob@dest.test"]
    assert all(isinstance(m["id"], int) for m in data["messages"].values())
    assert data["message_id"] == stored.message_id.strip("<>")
    assert bytes(stored.raw).endswith(RAW_MESSAGE)


@pytest.mark.parametrize(
    ("fields", "code"),
    [
        ({"rcpt_to": None}, "NoRcptTo"),
        ({"rcpt_to": "alice@dest.test"}, "NoRcptTo"),
        ({"mail_from": None}, "NoMailFrom"),
        ({"data": None}, "NoData"),
        ({"data": ""}, "NoData"),
    ],
)
def test_raw_missing_parameters(client, fields, code):
    body = {"mail_from": "news@acme.test", "rcpt_to": ["alice@dest.test"], "data": b64(RAW_MESSAGE)}
    body.update(fields)
    data = answer(
        client.post(RAW, {k: v for k, v in body.items() if v is not None}, format="json"),
        "parameter-error",
    )
    assert data["code"] == code and "parameter is required" in data["message"]
    assert_nothing_stored()


def test_raw_refusals(client, outsider):
    verify(outsider[0], "globex.test")
    foreign = RAW_MESSAGE.replace(b"news@acme.test", b"ceo@globex.test")
    cases = [
        ({"data": b64(foreign)}, "UnauthenticatedFromAddress"),
        ({"mail_from": "ceo@globex.test"}, "UnauthenticatedFromAddress"),
        ({"rcpt_to": []}, "NoRecipients"),
        ({"rcpt_to": ["alice@dest.test\r\nDATA"]}, "HeaderInjection"),
        ({"mail_from": "not an address"}, "InvalidAddress"),
    ]
    for fields, code in cases:
        body = {
            "mail_from": "news@acme.test",
            "rcpt_to": ["alice@dest.test"],
            "data": b64(RAW_MESSAGE),
        }
        body.update(fields)
        error(client.post(RAW, body, format="json"), code)
    assert_nothing_stored()


def wait_delivered(ids: list[int]) -> None:
    """Until the real qcluster has delivered them; on timeout, say where they are."""
    try:
        wait_until(
            lambda: (
                Recipient.objects.filter(pk__in=ids, state=RecipientState.DELIVERED).count()
                == len(ids)
            ),
            timeout=60,
        )
    except AssertionError:
        rows = Recipient.objects.filter(pk__in=ids).values_list("address", "state", "last_text")
        raise AssertionError(f"not delivered within 60 s: {list(rows)}") from None


# -- django-anymail's Postal backend, unchanged -------------------------------------------


def anymail_connection(settings, live_server, key: str):
    settings.ANYMAIL = {"POSTAL_API_URL": live_server.url, "POSTAL_API_KEY": key}
    # pytest-django swaps EMAIL_BACKEND for locmem: name the backend explicitly.
    settings.EMAIL_BACKEND = "anymail.backends.postal.EmailBackend"
    return mail.get_connection("anymail.backends.postal.EmailBackend")


@pytest.mark.django_db(transaction=True)
def test_anymail_postal_backend_sends_through_us(owner, key, settings, live_server):
    message = mail.EmailMessage(
        subject="Invoice",
        body="Your invoice is attached.",
        from_email="Acme Billing <billing@acme.test>",
        to=["alice@dest.test"],
        cc=["Carol <carol@dest.test>"],
        bcc=["audit@dest.test"],
        reply_to=["help@acme.test"],
        headers={"X-Invoice": "2026-11"},
        connection=anymail_connection(settings, live_server, key),
    )
    message.attach("invoice.txt", b"total: 10", "text/plain")
    message.tags = ["billing"]
    assert message.send() == 1

    stored = Message.objects.get()
    recipients = dict(Recipient.objects.values_list("address", "pk"))
    assert list(recipients) == ["alice@dest.test", "carol@dest.test", "audit@dest.test"]
    assert stored.tags == ["billing"] and stored.mail_from == "billing@acme.test"
    status = message.anymail_status
    assert status.status == {"queued"}
    assert status.message_id == set(recipients.values())
    assert {a: s.message_id for a, s in status.recipients.items()} == recipients
    parsed = email.message_from_bytes(bytes(stored.raw), policy=policy.default)
    assert parsed["From"] == "Acme Billing <billing@acme.test>"
    assert parsed["Cc"] == "Carol <carol@dest.test>" and parsed["Bcc"] is None
    assert parsed["Reply-To"] == "help@acme.test" and parsed["X-Invoice"] == "2026-11"
    [attachment] = parsed.iter_attachments()
    assert attachment.get_filename() == "invoice.txt"
    assert attachment.get_content() == "total: 10"


@pytest.mark.django_db(transaction=True)
def test_anymail_sees_a_refusal_as_an_error(owner, key, settings, live_server):
    from anymail.exceptions import AnymailRequestsAPIError

    message = mail.EmailMessage(
        subject="Spoof",
        body="x",
        from_email="ceo@globex.test",
        to=["alice@dest.test"],
        connection=anymail_connection(settings, live_server, key),
    )
    with pytest.raises(AnymailRequestsAPIError, match="UnauthenticatedFromAddress"):
        message.send()
    assert_nothing_stored()


@pytest.mark.peers
@pytest.mark.django_db(transaction=True)
def test_a_message_sent_by_anymail_is_delivered(
    platform, verified_domain, mx, settings, live_server
):
    key = create_api_key(tenant=verified_domain.tenant)[1]
    message = mail.EmailMessage(
        subject="Through Postal's API",
        body="Hello Alice",
        from_email="news@acme.test",
        to=["alice@dest.test"],
        connection=anymail_connection(settings, live_server, key),
    )
    assert message.send() == 1
    [recipient_id] = {s.message_id for s in message.anymail_status.recipients.values()}
    wait_delivered([recipient_id])
    [received] = mx.wait_for(1, timeout=5)
    assert received.rcpt_tos == ["alice@dest.test"]
    assert b"Subject: Through Postal's API" in received.data
