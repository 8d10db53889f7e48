"""The REST send API: JSON messages, raw MIME, batches, idempotency, and every error in
one shape with its status. Nothing is ever half-stored: a refused call stores nothing."""

from __future__ import annotations

import base64
import email
import re
from email import policy

import pytest
from django.urls import URLPattern, URLResolver, get_resolver
from rest_framework.test import APIClient

from delivery.accept import AcceptError
from delivery.api.errors import ACCEPT_ERRORS, STATUS_BY_CODE, from_accept_error
from delivery.credentials import create_api_key, create_smtp_credential
from delivery.mime import HeaderInjection, _check_written
from delivery.models import (
    ApiKey,
    IdempotencyKey,
    Message,
    Recipient,
    RecipientState,
    SmtpCredential,
    Source,
    WebhookEndpoint,
)
from delivery.webhooks.endpoints import create_endpoint
from domains.models import Domain, DomainStatus, Tenant
from domains.tenancy import add_domain
from reputation.models import Suppression, SuppressionReason
from tests.conftest import wait_until

pytestmark = pytest.mark.django_db

SEND = "/api/v1/send/"
BATCH = "/api/v1/send/batch/"
RAW = "/api/v1/send/mime/"
CRLF_WORD = "=?UTF-8?Q?a=0D=0ABcc:_evil@evil.test?="


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def api(key: str | None = None) -> APIClient:
    client = APIClient()
    if key is not None:
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    return client


def verify(tenant: Tenant, name: str) -> Domain:
    domain = add_domain(tenant=tenant, name=name)
    Domain.objects.filter(pk=domain.pk).update(status=DomainStatus.VERIFIED)
    return domain


@pytest.fixture
def acme(owner) -> Domain:
    return verify(owner[0], "acme.test")


@pytest.fixture
def client(owner, acme) -> APIClient:
    return api(create_api_key(tenant=owner[0])[1])


def message(**fields) -> dict:
    body = {
        "from": "news@acme.test",
        "to": ["alice@dest.test"],
        "subject": "Hello",
        "text": "Hello Alice",
    }
    body.update(fields)
    return body


def error_of(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.content
    error = response.json()["error"]
    assert error["code"] == code, error
    assert error["message"]
    return error


def assert_nothing_stored() -> None:
    assert not Message.objects.exists()
    assert not Recipient.objects.exists()


def parsed(queue_id: str) -> email.message.EmailMessage:
    raw = bytes(Message.objects.get(queue_id=queue_id).raw)
    return email.message_from_bytes(raw, policy=policy.default)


# -- success ------------------------------------------------------------------------------


def test_json_message_is_stored_with_envelope_to_cc_bcc(client):
    response = client.post(
        SEND,
        message(
            **{"from": {"email": "news@acme.test", "name": "Acme News"}},
            to=["Alice <alice@dest.test>", {"email": "bob@dest.test", "name": "Bob, Jr."}],
            cc=["carol@dest.test"],
            bcc=["secret@dest.test"],
            reply_to="help@acme.test",
            subject="Spring news ✿",
            text="Hello\nthere",
            html='<p>Hello <img src="cid:logo1"></p>',
            headers={"X-Campaign": "spring", "List-Unsubscribe": "<mailto:u@acme.test>"},
            attachments=[
                {
                    "filename": "logo.png",
                    "content": b64(b"PNG"),
                    "content_type": "image/png",
                    "content_id": "logo1",
                },
                {
                    "filename": "report ä.csv",
                    "content": b64(b"a,b\n1,2\n"),
                    "content_type": 'text/csv; charset="utf-8"; header=present',
                },
            ],
            tags=["newsletter"],
            metadata={"customer": 42, "plan": "gold"},
        ),
        format="json",
    )
    assert response.status_code == 201, response.content
    body = response.json()
    stored = Message.objects.get()
    assert body["id"] == stored.queue_id
    assert body["message_id"] == stored.message_id and body["message_id"].startswith("<")
    rows = list(Recipient.objects.order_by("pk").values_list("pk", "address"))
    assert [(r["id"], r["address"]) for r in body["recipients"]] == rows
    assert [address for _, address in rows] == [
        "alice@dest.test",
        "bob@dest.test",
        "carol@dest.test",
        "secret@dest.test",
    ]
    assert stored.source == Source.API and stored.mail_from == "news@acme.test"
    assert stored.tags == ["newsletter"] and stored.metadata == {"customer": 42, "plan": "gold"}

    mail = parsed(stored.queue_id)
    assert mail["From"] == "Acme News <news@acme.test>"
    assert mail["To"] == 'Alice <alice@dest.test>, "Bob, Jr." <bob@dest.test>'
    assert mail["Cc"] == "carol@dest.test" and mail["Reply-To"] == "help@acme.test"
    assert mail["Subject"] == "Spring news ✿" and mail["X-Campaign"] == "spring"
    assert mail["Message-ID"] == stored.message_id and mail["Date"]
    # Bcc is envelope only: not a header, and the address appears nowhere in the message.
    assert mail["Bcc"] is None and b"secret@dest.test" not in bytes(stored.raw)
    assert b"\r\n" in bytes(stored.raw) and b"\n" not in bytes(stored.raw).replace(b"\r\n", b"")
    assert mail.get_content_type() == "multipart/mixed"
    related = next(p for p in mail.walk() if p.get_content_type() == "multipart/related")
    logo = next(p for p in related.iter_parts() if p.get_content_type() == "image/png")
    assert logo["Content-ID"] == "<logo1>" and logo.get_content_disposition() == "inline"
    csv = next(p for p in mail.iter_attachments() if p.get_content_type() == "text/csv")
    assert csv.get_filename() == "report ä.csv" and csv.get_content() == "a,b\n1,2\n"
    assert csv.get_param("header") == "present"
    assert mail.get_body(("plain",)).get_content().splitlines() == ["Hello", "there"]


def test_html_only_and_single_string_recipient(client):
    response = client.post(
        SEND, message(to="alice@dest.test", text="", html="<b>hi</b>"), format="json"
    )
    assert response.status_code == 201, response.content
    assert parsed(response.json()["id"]).get_content_type() == "text/html"


def test_recipients_are_exactly_to_cc_bcc_once_each(client):
    response = client.post(
        SEND,
        message(
            to=["alice@dest.test"], cc=["ALICE@dest.test", "bob@dest.test"], bcc=["bob@DEST.test"]
        ),
        format="json",
    )
    assert response.status_code == 201
    assert [r["address"] for r in response.json()["recipients"]] == [
        "alice@dest.test",
        "bob@dest.test",
    ]


def test_raw_mime_goes_to_the_envelope_not_the_headers(client):
    raw = (
        b"From: Acme <news@acme.test>\r\nTo: everyone@dest.test\r\nBcc: other@dest.test\r\n"
        b"Subject: raw\r\n\r\nbody\n"
    )
    response = client.post(
        RAW,
        {
            "mail_from": "bounces@acme.test",
            "rcpt_to": ["alice@dest.test"],
            "data": b64(raw),
            "tags": ["raw"],
        },
        format="json",
    )
    assert response.status_code == 201, response.content
    stored = Message.objects.get()
    assert list(stored.recipients.values_list("address", flat=True)) == ["alice@dest.test"]
    assert stored.mail_from == "bounces@acme.test" and stored.tags == ["raw"]
    assert bytes(stored.raw).endswith(b"\r\n\r\nbody\r\n")  # line endings normalised
    assert response.json()["message_id"] == stored.message_id


# -- header injection ---------------------------------------------------------------------

INJECTIONS = [
    ("subject", {"subject": "Hi\r\nBcc: evil@evil.test"}),
    ("subject", {"subject": "Hi\nBcc: evil@evil.test"}),
    ("subject", {"subject": CRLF_WORD}),
    ("subject", {"subject": "=?utf-8?b?" + b64(b"a\r\nBcc: evil@evil.test") + "?="}),
    ("subject", {"subject": "x=?UTF-8?Q?a=0A Bcc:_evil@evil.test?=y"}),
    ("from", {"from": "Acme\r\nBcc: evil@evil.test <news@acme.test>"}),
    ("from", {"from": {"email": "news@acme.test", "name": CRLF_WORD}}),
    ("from", {"from": f"{CRLF_WORD} <news@acme.test>"}),
    ("to", {"to": [f"{CRLF_WORD} <alice@dest.test>"]}),
    ("to", {"to": [{"email": "alice@dest.test", "name": "A\rB"}]}),
    ("cc", {"cc": ["Bob\n <bob@dest.test>"]}),
    ("bcc", {"bcc": ["x@dest.test\r\nSubject: y"]}),
    ("reply_to", {"reply_to": [f"{CRLF_WORD} <help@acme.test>"]}),
    ("headers", {"headers": {"X-Campaign": "a\r\nBcc: evil@evil.test"}}),
    ("headers", {"headers": {"X-Campaign": CRLF_WORD}}),
    ("headers", {"headers": {"X-Evil\r\nBcc": "evil@evil.test"}}),
    ("attachments", {"attachments": [{"filename": "a\r\nBcc: x.txt", "content": "eA=="}]}),
    ("attachments", {"attachments": [{"filename": f"{CRLF_WORD}.txt", "content": "eA=="}]}),
    (
        "attachments",
        {
            "attachments": [
                {
                    "filename": "a.txt",
                    "content": "eA==",
                    "content_type": "text/plain\r\nBcc: evil@evil.test",
                }
            ]
        },
    ),
    (
        "attachments",
        {
            "attachments": [
                {
                    "filename": "a.png",
                    "content": "eA==",
                    "content_type": "image/png",
                    "content_id": "logo\r\nBcc: evil@evil.test",
                }
            ]
        },
    ),
    ("tags", {"tags": ["a\r\nb"]}),
]


@pytest.mark.parametrize(("field", "fields"), INJECTIONS)
def test_header_injection_is_refused_and_nothing_stored(client, field, fields):
    response = client.post(SEND, message(**fields), format="json")
    error = error_of(response, 400, "header_injection")
    assert error["field"].startswith(field), error
    assert_nothing_stored()


def test_a_header_that_comes_out_split_is_caught_after_writing():
    # The last line of defence: the written header block must parse back to what was set.
    with pytest.raises(HeaderInjection):
        _check_written(
            b"From: a@acme.test\r\nSubject: a\r\nBcc: x@y\r\n\r\nbody", ["From", "Subject"]
        )


@pytest.mark.parametrize(
    "name",
    [
        "From",
        "bcc",
        "Message-ID",
        "DKIM-Signature",
        "Return-Path",
        "Date",
        "Content-Type",
        "MIME-Version",
        "Resent-From",
        "Sender",
    ],
)
def test_custom_headers_cannot_override_platform_headers(client, name):
    response = client.post(SEND, message(headers={name: "x@evil.test"}), format="json")
    error = error_of(response, 400, "reserved_header")
    assert error["field"] == f"headers.{name}"
    assert_nothing_stored()


# -- validation errors --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"to": ["not-an-address"]}, "to[0]"),
        ({"to": ["alice@dest.test", "a@b"]}, "to[1]"),
        ({"cc": ["ü@dest.test"]}, "cc[0]"),
        ({"bcc": ["alice@dest.test, bob@dest.test"]}, "bcc[0]"),
        ({"from": "news@"}, "from"),
        ({"reply_to": ["@acme.test"]}, "reply_to[0]"),
    ],
)
def test_invalid_addresses_are_400(client, fields, field):
    error = error_of(client.post(SEND, message(**fields), format="json"), 400, "invalid_address")
    assert error["field"] == field
    assert_nothing_stored()


@pytest.mark.parametrize(
    ("fields", "status", "code", "field"),
    [
        ({"from": None}, 400, "invalid_request", "from"),
        ({"to": [], "cc": [], "bcc": []}, 400, "no_recipients", "to"),
        ({"text": "", "html": ""}, 422, "no_content", "text"),
        (
            {"attachments": [{"filename": "a.txt", "content": "%%%"}]},
            400,
            "invalid_request",
            "attachments[0].content",
        ),
        (
            {"attachments": [{"filename": "a.txt", "content": "eA==", "content_type": "nope"}]},
            400,
            "invalid_request",
            "attachments[0].content_type",
        ),
        (
            {
                "attachments": [
                    {"filename": "a.txt", "content": "eA==", "content_type": "text/plain; charset"}
                ]
            },
            400,
            "invalid_request",
            "attachments[0].content_type",
        ),
        ({"metadata": {"nested": {"a": 1}}}, 400, "invalid_request", "metadata.nested"),
        (
            {"from": {"email": "news@acme.test", "name": "=?a?q?" * 10_000}},
            400,
            "invalid_request",
            "from",
        ),
        ({"headers": {"Bad Name": "x"}}, 400, "invalid_request", "headers.Bad Name"),
    ],
)
def test_validation_errors(client, fields, status, code, field):
    body = message()
    body.update(fields)
    if body.get("from") is None:
        del body["from"]
    error = error_of(client.post(SEND, body, format="json"), status, code)
    assert error["field"] == field
    assert_nothing_stored()


def test_too_many_recipients(client, settings):
    settings.SENDMSG_MAX_RECIPIENTS = 2
    response = client.post(
        SEND, message(to=["a@dest.test", "b@dest.test"], bcc=["c@dest.test"]), format="json"
    )
    error_of(response, 400, "too_many_recipients")
    assert_nothing_stored()


def test_unreadable_bodies(client):
    error_of(
        client.post(SEND, "{not json", content_type="application/json"), 400, "invalid_request"
    )
    error_of(
        client.post(SEND, "a=b", content_type="application/x-www-form-urlencoded"),
        415,
        "unsupported_media_type",
    )
    error_of(client.get(SEND), 405, "method_not_allowed")
    assert_nothing_stored()


def test_raw_errors(client):
    no_from = b"To: alice@dest.test\r\nSubject: x\r\n\r\nbody\r\n"
    cases = [
        ({"data": b64(no_from)}, 422, "invalid_message"),
        ({"data": ""}, 422, "no_content"),
        ({"data": "%%%"}, 400, "invalid_request"),
        ({"rcpt_to": []}, 400, "no_recipients"),
        ({"rcpt_to": ["Alice <alice@dest.test>"]}, 400, "invalid_address"),
        ({"mail_from": "bounces@acme.test\r\nRCPT TO:<x@evil.test>"}, 400, "header_injection"),
    ]
    for fields, status, code in cases:
        body = {
            "mail_from": "news@acme.test",
            "rcpt_to": ["alice@dest.test"],
            "data": b64(b"From: news@acme.test\r\n\r\nx\r\n"),
        }
        body.update(fields)
        error_of(client.post(RAW, body, format="json"), status, code)
    assert_nothing_stored()


# -- keys, senders, limits ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "code"),
    [
        (None, "unauthenticated"),
        ("Bearer sm_0000_nope", "invalid_api_key"),
        ("Token abc", "invalid_api_key"),
    ],
)
def test_missing_or_bad_key_is_401_in_the_error_shape(acme, header, code):
    client = APIClient()
    if header:
        client.credentials(HTTP_AUTHORIZATION=header)
    for path in (SEND, BATCH, RAW):
        response = client.post(path, message(), format="json")
        error_of(response, 401, code)
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert_nothing_stored()


def test_revoked_key_is_401(owner, acme):
    api_key, key = create_api_key(tenant=owner[0])
    ApiKey.objects.filter(pk=api_key.pk).update(revoked=True)
    error_of(api(key).post(SEND, message(), format="json"), 401, "invalid_api_key")


def test_sending_as_another_tenants_domain_is_403(client, outsider):
    verify(outsider[0], "globex.test")
    for fields in ({"from": "ceo@globex.test"}, {"from": "news@unknown.test"}):
        error_of(client.post(SEND, message(**fields), format="json"), 403, "sender_not_allowed")
    raw = b"From: ceo@globex.test\r\nSubject: x\r\n\r\nx\r\n"
    for mail_from in ("ceo@globex.test", "news@acme.test"):
        body = {"mail_from": mail_from, "rcpt_to": ["alice@dest.test"], "data": b64(raw)}
        error_of(client.post(RAW, body, format="json"), 403, "sender_not_allowed")
    assert_nothing_stored()


def test_an_unverified_domain_of_ones_own_is_403(owner, client):
    add_domain(tenant=owner[0], name="pending.acme.test")
    response = client.post(SEND, message(**{"from": "a@pending.acme.test"}), format="json")
    error_of(response, 403, "sender_not_allowed")
    assert_nothing_stored()


def test_suspended_account_is_403(owner, client):
    Tenant.objects.filter(pk=owner[0].pk).update(suspended=True)
    error_of(client.post(SEND, message(), format="json"), 403, "account_suspended")
    assert_nothing_stored()


def test_message_over_the_size_limit_is_413(client, settings):
    settings.SENDMSG_MESSAGE_SIZE_LIMIT = 4000
    response = client.post(SEND, message(text="x" * 5000), format="json")
    error_of(response, 413, "message_too_large")
    # A body far over the limit is refused before it is parsed.
    huge = b'{"text": "' + b"x" * (2 * 4000 + 1024 * 1024) + b'"}'
    error_of(client.post(SEND, huge, content_type="application/json"), 413, "message_too_large")
    assert_nothing_stored()


def test_every_accept_refusal_maps_to_a_status_and_throttling_says_when_to_retry():
    cases = {
        (550, "5.7.1"): (403, "sender_not_allowed"),
        (553, "5.7.1"): (403, "sender_not_allowed"),
        (553, "5.1.7"): (400, "invalid_address"),
        (501, "5.1.3"): (400, "invalid_address"),
        (552, "5.3.4"): (413, "message_too_large"),
        (554, "5.5.1"): (400, "no_recipients"),
        (452, "4.5.3"): (400, "too_many_recipients"),
        (550, "5.6.0"): (422, "invalid_message"),
        (451, "4.7.1"): (429, "rate_limited"),
        (451, "4.3.0"): (429, "rate_limited"),
        (421, "4.7.0"): (429, "rate_limited"),
        (450, "4.2.0"): (503, "temporarily_unavailable"),
        (554, "5.7.0"): (403, "sender_not_allowed"),
        (550, "5.2.0"): (422, "rejected"),
    }
    for (code, enhanced), (status, machine) in cases.items():
        error = from_accept_error(AcceptError(code, enhanced, "why"))
        assert (error.status_code, error.error_code) == (status, machine), (code, enhanced)
    throttled = from_accept_error(AcceptError(451, "4.7.1", "Slow down"))
    assert throttled.response()["Retry-After"] == "60"
    assert throttled.body()["error"]["retry_after"] == 60
    assert all(code in STATUS_BY_CODE for _, _, code in ACCEPT_ERRORS)


# -- idempotency --------------------------------------------------------------------------


def test_same_idempotency_key_returns_the_same_answer_and_sends_once(client):
    first = client.post(SEND, message(), format="json", HTTP_IDEMPOTENCY_KEY="order-1")
    again = client.post(SEND, message(), format="json", HTTP_IDEMPOTENCY_KEY="order-1")
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json()
    assert again.headers["Idempotent-Replayed"] == "true"
    assert Message.objects.count() == 1 and Recipient.objects.count() == 1
    assert IdempotencyKey.objects.get().response == first.json()

    reused = client.post(
        SEND, message(subject="Other"), format="json", HTTP_IDEMPOTENCY_KEY="order-1"
    )
    assert error_of(reused, 422, "idempotency_key_reused")["field"] == "Idempotency-Key"
    # The same body on another endpoint is another request.
    error_of(
        client.post(BATCH, message(), format="json", HTTP_IDEMPOTENCY_KEY="order-1"),
        422,
        "idempotency_key_reused",
    )
    assert Message.objects.count() == 1


def test_idempotency_keys_are_per_tenant_and_refusals_are_not_stored(owner, outsider, client):
    verify(outsider[0], "globex.test")
    other = api(create_api_key(tenant=outsider[0])[1])
    body = message(**{"from": "news@globex.test"})
    # Refused for acme (not its domain): nothing stored, the key stays free.
    error_of(
        client.post(SEND, body, format="json", HTTP_IDEMPOTENCY_KEY="k"), 403, "sender_not_allowed"
    )
    assert not IdempotencyKey.objects.exists()
    assert other.post(SEND, body, format="json", HTTP_IDEMPOTENCY_KEY="k").status_code == 201
    assert client.post(SEND, message(), format="json", HTTP_IDEMPOTENCY_KEY="k").status_code == 201
    assert Message.objects.count() == 2


def test_bad_idempotency_key_is_400(client):
    response = client.post(SEND, message(), format="json", HTTP_IDEMPOTENCY_KEY="x" * 256)
    assert error_of(response, 400, "invalid_request")["field"] == "Idempotency-Key"
    assert_nothing_stored()


# -- batch --------------------------------------------------------------------------------


def test_batch_stores_the_valid_messages_and_reports_each(client, outsider):
    verify(outsider[0], "globex.test")
    batch = [
        message(to=["one@dest.test"]),
        message(subject=CRLF_WORD),
        message(**{"from": "ceo@globex.test"}),
        message(text="", html=""),
        message(to=["two@dest.test"], bcc=["three@dest.test"]),
        "not an object",
    ]
    response = client.post(BATCH, {"messages": batch}, format="json")
    assert response.status_code == 200, response.content
    body = response.json()
    assert (body["accepted"], body["failed"]) == (2, 4)
    results = body["results"]
    assert [r["status"] for r in results] == [201, 400, 403, 422, 201, 400]
    assert [r.get("error", {}).get("code") for r in results] == [
        None,
        "header_injection",
        "sender_not_allowed",
        "no_content",
        None,
        "invalid_request",
    ]
    assert results[1]["error"]["field"] == "subject"
    stored = {
        m.queue_id: list(m.recipients.order_by("pk").values_list("address", flat=True))
        for m in Message.objects.all()
    }
    assert stored == {
        results[0]["id"]: ["one@dest.test"],
        results[4]["id"]: ["two@dest.test", "three@dest.test"],
    }


def test_batch_with_idempotency_key_is_replayed_whole(client):
    batch = {"messages": [message(), message(subject="x\r\ny")]}
    first = client.post(BATCH, batch, format="json", HTTP_IDEMPOTENCY_KEY="batch-1")
    again = client.post(BATCH, batch, format="json", HTTP_IDEMPOTENCY_KEY="batch-1")
    assert first.status_code == again.status_code == 200
    assert first.json() == again.json() and first.json()["accepted"] == 1
    assert Message.objects.count() == 1


@pytest.mark.parametrize("messages", [[], [message()] * 501, "nope"])
def test_batch_itself_must_be_readable(client, messages):
    error = error_of(
        client.post(BATCH, {"messages": messages}, format="json"), 400, "invalid_request"
    )
    assert error["field"] == "messages"
    assert_nothing_stored()


# -- tenancy ------------------------------------------------------------------------------


def _detail_routes() -> list[tuple[str, str]]:
    """(route regex, url name) of every API route that takes an id."""
    found = []

    def walk(patterns, prefix: str) -> None:
        for pattern in patterns:
            if isinstance(pattern, URLResolver):
                walk(pattern.url_patterns, prefix + str(pattern.pattern))
            elif isinstance(pattern, URLPattern) and pattern.pattern.regex.groupindex:
                found.append((prefix + str(pattern.pattern), pattern.name))

    walk(get_resolver().url_patterns, "")
    return [(route, name) for route, name in found if route.startswith("api/v1/")]


def test_outsider_gets_404_on_every_api_endpoint_that_takes_an_id(
    owner, outsider, client, acme, settings
):
    settings.SENDMSG_WEBHOOK_ALLOW_PRIVATE = True
    sent = client.post(SEND, message(), format="json").json()
    credential, _ = create_smtp_credential(tenant=owner[0])
    api_key = ApiKey.objects.filter(tenant=owner[0]).first()
    webhook, _ = create_endpoint(
        tenant=owner[0], url="http://127.0.0.1:9/hook", event_types=["delivered"]
    )
    ids = {
        "domain": acme.pk,
        "message": sent["id"],
        "smtp-credential": credential.pk,
        "api-key": api_key.pk,
        "webhook": webhook.pk,
    }
    suppression = Suppression.objects.create(
        tenant=owner[0], address="kept@dest.test", reason=SuppressionReason.COMPLAINT
    )
    ids["suppression"] = suppression.address  # suppressions are addressed by address
    intruder = api(create_api_key(tenant=outsider[0])[1])
    routes = [(route, name) for route, name in _detail_routes() if "format>" not in route]
    assert len(routes) >= 15
    for route, name in routes:
        basename = next((b for b in sorted(ids, key=len, reverse=True) if name.startswith(b)), None)
        assert basename, f"a new route takes an id: give the sweep an object for {name}"
        path = "/" + re.sub(r"\(\?P<\w+>[^)]*\)", str(ids[basename]), route)
        path = path.replace("^", "").replace("$", "")
        statuses = {
            method: getattr(intruder, method)(path, {}, format="json").status_code
            for method in ("get", "post", "put", "patch", "delete")
        }
        assert set(statuses.values()) <= {404, 405}, (path, statuses)
        assert 404 in statuses.values(), (path, statuses)
    # and nothing of the owner's changed
    assert Domain.objects.filter(pk=acme.pk, status=DomainStatus.VERIFIED).exists()
    assert SmtpCredential.objects.filter(pk=credential.pk, revoked=False).exists()
    assert ApiKey.objects.filter(pk=api_key.pk, revoked=False).exists()
    assert Message.objects.filter(queue_id=sent["id"]).exists()
    webhook_after = WebhookEndpoint.objects.get(pk=webhook.pk)
    assert (webhook_after.url, webhook_after.secret_encrypted) == (
        webhook.url,
        webhook.secret_encrypted,
    )
    assert not Recipient.objects.filter(message__queue_id=sent["id"]).exclude(
        state=RecipientState.QUEUED
    )  # not cancelled
    assert Suppression.objects.filter(pk=suppression.pk, tenant=owner[0]).exists()


# -- schema -------------------------------------------------------------------------------


def test_schema_describes_the_send_endpoints():
    schema = APIClient().get("/api/v1/schema/?format=json").json()
    for path in (SEND, BATCH, RAW, "/api/v1/send/message", "/api/v1/send/raw"):
        assert "post" in schema["paths"][path], path
    send = schema["paths"][SEND]["post"]
    assert {"201", "400", "401", "403", "413", "422", "429"} <= set(send["responses"])
    assert any(p["name"] == "Idempotency-Key" for p in send["parameters"])
    assert "X-Server-API-Key" in str(schema["components"]["securitySchemes"])


# -- the whole way ------------------------------------------------------------------------


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


@pytest.mark.peers
@pytest.mark.django_db(transaction=True)
def test_a_message_sent_through_the_api_is_delivered(platform, verified_domain, mx):
    key = create_api_key(tenant=verified_domain.tenant)[1]
    response = api(key).post(
        SEND,
        message(to=["alice@dest.test"], bcc=["bob@dest.test"], subject="Through the API"),
        format="json",
    )
    assert response.status_code == 201, response.content
    wait_delivered([r["id"] for r in response.json()["recipients"]])
    received = mx.wait_for(1, timeout=5)
    assert sorted(r for m in received for r in m.rcpt_tos) == ["alice@dest.test", "bob@dest.test"]
    assert all(b"Subject: Through the API" in m.data for m in received)
    assert all(b"bob@dest.test" not in m.data for m in received)


@pytest.mark.parametrize("sender", [{"address": "news@acme.test"}, {"name": "x"}, 42, []])
def test_a_malformed_from_object_is_400_not_a_crash(client, sender):
    error = error_of(
        client.post(SEND, message(**{"from": sender}), format="json"), 400, "invalid_request"
    )
    assert error["field"] == "from" and '{"email", "name"}' in error["message"]
    assert_nothing_stored()
