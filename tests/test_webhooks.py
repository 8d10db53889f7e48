"""Webhooks against real HTTP receivers on 127.0.0.x: events of the chosen types only,
signed so that the README's own snippet verifies them, retried with backoff and logged
per attempt until the retry window ends; private targets refused unless the setting
allows them; the secret shown once; another tenant's endpoints out of reach."""

from __future__ import annotations

import html
import importlib
import json
import re
import ssl
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from itertools import pairwise
from pathlib import Path

import pytest
import time_machine
import trustme
from django.apps import apps as django_apps
from django.conf import settings
from django.contrib.sessions.models import Session
from django.db import connection, connections, transaction
from django.db.migrations import RunPython
from django.test import Client
from django.utils import timezone
from django.utils.module_loading import import_string
from django_q.models import Schedule
from rest_framework.test import APIClient

from delivery import queue_control
from delivery.accept import Sender, accept_message
from delivery.api.event_schema import EVENT_RELATED, EventSerializer
from delivery.credentials import create_api_key
from delivery.models import (
    Event,
    EventType,
    Message,
    Recipient,
    Source,
    WebhookAttempt,
    WebhookDelivery,
    WebhookDeliveryState,
    WebhookEndpoint,
)
from delivery.relay import deliver_message
from delivery.webhooks import outbox, sender, tasks
from delivery.webhooks.endpoints import create_endpoint
from domains.models import Domain, DomainStatus
from domains.tenancy import add_domain
from tests.peers.http_receiver import HttpReceiver, Received

pytestmark = pytest.mark.django_db

README = Path(settings.BASE_DIR) / "README.md"
Verify = Callable[..., bool]


def readme_verify() -> Verify:
    """The verification snippet of the README's Webhooks section, run as a tenant would."""
    text = README.read_text()
    block = text.split("<!-- webhook-verify:start -->", 1)[1]
    block = block.split("<!-- webhook-verify:end -->", 1)[0].strip()
    assert block.startswith("```python") and block.endswith("```")
    namespace: dict = {}
    exec(compile(block[len("```python") : -3], "README.md", "exec"), namespace)  # noqa: S102
    return namespace["verify"]


# -- fixtures and helpers ------------------------------------------------------------------


@pytest.fixture
def allow_private(settings):
    settings.SENDMSG_WEBHOOK_ALLOW_PRIVATE = True


@pytest.fixture
def receiver():
    with HttpReceiver("127.0.0.5") as server:
        yield server


@pytest.fixture
def acme(owner):
    """Acme's tenant with acme.test verified (without DNS: these tests need no relay)."""
    domain = add_domain(tenant=owner[0], name="acme.test")
    Domain.objects.filter(pk=domain.pk).update(status=DomainStatus.VERIFIED)
    return owner[0]


def send(tenant, *recipients: str) -> Message:
    return accept_message(
        sender=Sender(tenant_id=tenant.pk),
        mail_from="news@acme.test",
        recipients=list(recipients),
        raw=b"From: news@acme.test\r\nTo: a@dest.test\r\nSubject: hooks\r\n\r\nbody\r\n",
        source=Source.API,
    )


def api(tenant) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {create_api_key(tenant=tenant)[1]}")
    return client


def owner_of(tenant):
    return tenant.memberships.get().user


def logged_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def dispatch() -> int:
    """One run of the scheduled task, in this process."""
    return tasks.dispatch()


def body_of(request: Received) -> dict:
    return json.loads(request.body)


def v1_values(header: str) -> list[str]:
    return [item[3:] for item in header.split(",") if item.startswith("v1=")]


# -- the acceptance test -------------------------------------------------------------------


def test_readme_snippet_verifies_a_real_webhook_for_a_real_delivery(
    verified_domain, mx, receiver, allow_private
):
    """A message relayed to a real MX gives a `delivered` event with the MX's reply; the
    dispatcher POSTs it to a real HTTP receiver, which verifies it with the README's
    snippet: valid as sent, invalid with a changed body or another secret."""
    verify = readme_verify()
    tenant = verified_domain.tenant
    created = api(tenant).post(
        "/api/v1/webhooks/",
        {"url": receiver.url(), "event_types": ["delivered", "bounced"]},
        format="json",
    )
    assert created.status_code == 201, created.content
    secret = created.json()["secret"]

    def check(request: Received) -> tuple[bool, bool, bool]:
        header = request.headers["sendmsg-signature"]
        tampered = request.body.replace(b"alice@dest.test", b"mallory@dest.test")
        assert tampered != request.body
        return (
            verify(secret, header, request.body),
            verify(secret, header, tampered),
            verify("whsec_not-the-secret", header, request.body),
        )

    receiver.on_request = check
    message = send(tenant, "alice@dest.test")
    assert deliver_message(message.pk) == 1
    delivered = Event.objects.select_related(*EVENT_RELATED).get(type="delivered")

    assert dispatch() == 1
    [request] = receiver.wait_for(1)
    assert request.checked == (True, False, False)
    assert request.path == "/hook" and request.headers["content-type"] == "application/json"
    assert request.headers["sendmsg-event-type"] == "delivered"
    assert request.headers["sendmsg-event-id"] == str(delivered.pk)
    body = body_of(request)
    assert body == json.loads(json.dumps(EventSerializer(delivered).data))  # the API's shape
    assert body["recipient"]["address"] == "alice@dest.test"
    assert body["reply"]["code"] == 250 and body["reply"]["mx_host"] == "mx.dest.test"
    assert body["message"]["id"] == message.queue_id

    delivery = WebhookDelivery.objects.get()
    assert delivery.state == WebhookDeliveryState.SUCCEEDED and delivery.attempts == 1
    [attempt] = WebhookAttempt.objects.all()
    assert (attempt.status_code, attempt.succeeded, attempt.response_excerpt) == (200, True, "ok")
    assert dispatch() == 0 and len(receiver.requests) == 1  # sent once


def test_the_migration_schedules_the_dispatcher_every_minute():
    migration = importlib.import_module("delivery.migrations.0006_webhooks")
    assert any(
        isinstance(op, RunPython) and op.code is migration.add_schedule
        for op in migration.Migration.operations
    )
    migration.add_schedule(django_apps, None)  # as the migration runs it; idempotent
    schedule = Schedule.objects.get(name="webhook dispatcher")
    assert (schedule.schedule_type, schedule.minutes, schedule.repeats) == ("I", 1, -1)
    assert import_string(schedule.func) is tasks.dispatch


# -- what is sent --------------------------------------------------------------------------


def test_only_the_chosen_event_types_are_sent_to_each_endpoint(acme, allow_private):
    with HttpReceiver("127.0.0.5") as cancels, HttpReceiver("127.0.0.6") as accepts:
        send(acme, "before@dest.test")  # before any endpoint: never sent
        create_endpoint(tenant=acme, url=cancels.url(), event_types=["cancelled"])
        create_endpoint(tenant=acme, url=accepts.url(), event_types=["accepted"])
        message = send(acme, "a@dest.test", "b@dest.test")
        queue_control.apply(
            queue_control.Action.CANCEL, Recipient.objects.filter(address="b@dest.test")
        )
        assert dispatch() == 3

        got = [
            (body_of(r)["type"], body_of(r)["recipient"]["address"]) for r in cancels.wait_for(1)
        ]
        assert got == [("cancelled", "b@dest.test")]
        got = sorted(body_of(r)["recipient"]["address"] for r in accepts.wait_for(2))
        assert got == ["a@dest.test", "b@dest.test"]
        assert all(body_of(r)["message"]["id"] == message.queue_id for r in accepts.requests)
        assert len(cancels.requests) == 1 and len(accepts.requests) == 2


def test_an_inactive_endpoint_gets_nothing_not_even_later(acme, receiver, allow_private):
    client = api(acme)
    endpoint = client.post(
        "/api/v1/webhooks/", {"url": receiver.url(), "event_types": ["accepted"]}, format="json"
    ).json()
    paused = client.patch(f"/api/v1/webhooks/{endpoint['id']}/", {"active": False}, format="json")
    assert paused.status_code == 200 and paused.json()["active"] is False
    send(acme, "paused@dest.test")
    assert dispatch() == 0
    client.patch(f"/api/v1/webhooks/{endpoint['id']}/", {"active": True}, format="json")
    send(acme, "back@dest.test")
    assert dispatch() == 1
    [request] = receiver.wait_for(1)
    assert body_of(request)["recipient"]["address"] == "back@dest.test"


def test_a_test_ping_is_signed_sent_now_and_logged(acme, receiver, allow_private):
    verify = readme_verify()
    client = api(acme)
    created = client.post(
        "/api/v1/webhooks/", {"url": receiver.url(), "event_types": ["bounced"]}, format="json"
    ).json()
    response = client.post(f"/api/v1/webhooks/{created['id']}/test/")
    assert response.status_code == 200
    attempt = response.json()
    assert attempt["succeeded"] is True and attempt["status_code"] == 200
    assert attempt["event_type"] == "test" and attempt["event_id"] is None
    [request] = receiver.wait_for(1)
    assert body_of(request)["type"] == "test" and body_of(request)["id"] == 0
    assert verify(created["secret"], request.headers["sendmsg-signature"], request.body)
    listed = client.get(f"/api/v1/webhooks/{created['id']}/attempts/").json()["results"]
    assert [a["id"] for a in listed] == [attempt["id"]]


# -- retries and the attempt log -----------------------------------------------------------


def test_a_500_then_a_200_is_retried_with_backoff_and_both_attempts_are_logged(
    acme, receiver, allow_private
):
    verify = readme_verify()
    client = api(acme)
    created = client.post(
        "/api/v1/webhooks/", {"url": receiver.url(), "event_types": ["accepted"]}, format="json"
    ).json()
    receiver.on_request = lambda r: verify(
        created["secret"], r.headers["sendmsg-signature"], r.body
    )
    receiver.reply(500)
    send(acme, "a@dest.test")

    assert dispatch() == 1
    delivery = WebhookDelivery.objects.get()
    assert delivery.state == WebhookDeliveryState.PENDING and delivery.attempts == 1
    wait = (delivery.next_attempt_at - timezone.now()).total_seconds()
    assert 55 <= wait <= 60  # SENDMSG_WEBHOOK_RETRY_FIRST_SECONDS
    assert dispatch() == 0  # not due yet: nothing sent

    with time_machine.travel(delivery.next_attempt_at + timedelta(seconds=1), tick=True):
        assert dispatch() == 1
    first, second = receiver.wait_for(2)
    assert (first.answered, second.answered) == (500, 200)
    assert first.checked is True and second.checked is True  # each signed afresh
    assert first.body == second.body
    assert first.headers["sendmsg-delivery-id"] == second.headers["sendmsg-delivery-id"]
    assert (first.headers["sendmsg-attempt"], second.headers["sendmsg-attempt"]) == ("1", "2")
    delivery.refresh_from_db()
    assert delivery.state == WebhookDeliveryState.SUCCEEDED and delivery.attempts == 2

    listed = client.get(f"/api/v1/webhooks/{created['id']}/attempts/").json()["results"]
    assert [(a["number"], a["status_code"], a["succeeded"]) for a in listed] == [
        (2, 200, True),
        (1, 500, False),
    ]
    assert listed[1]["response_excerpt"] == "oops: the receiver is down"
    assert all(a["duration_ms"] >= 0 and a["started_at"] for a in listed)
    assert listed[0]["delivery_state"] == "succeeded" and listed[0]["next_attempt_at"] is None

    page = logged_in(owner_of(acme)).get(f"/webhooks/{created['id']}/").content.decode()
    assert "HTTP 500" in page and "HTTP 200" in page and "oops: the receiver is down" in page


def test_a_delivery_is_retried_for_a_day_then_failed_with_every_attempt_logged(
    acme, receiver, allow_private
):
    create_endpoint(tenant=acme, url=receiver.url(), event_types=["accepted"])
    receiver.reply(*[503] * 100)
    send(acme, "a@dest.test")
    dispatch()
    delivery = WebhookDelivery.objects.get()
    while delivery.state == WebhookDeliveryState.PENDING:
        with time_machine.travel(delivery.next_attempt_at + timedelta(seconds=1), tick=True):
            dispatch()
        delivery.refresh_from_db()
        assert delivery.attempts < 40, "the retries never end"

    assert delivery.state == WebhookDeliveryState.FAILED
    attempts = list(WebhookAttempt.objects.order_by("number"))
    assert [a.number for a in attempts] == list(range(1, delivery.attempts + 1))
    assert len(receiver.requests) == delivery.attempts
    assert all(a.status_code == 503 and not a.succeeded for a in attempts)
    assert attempts[-1].started_at >= delivery.created_at + timedelta(hours=24)
    gaps = [(b.started_at - a.started_at).total_seconds() for a, b in pairwise(attempts)]
    assert [round(g / 60) for g in gaps[:7]] == [1, 2, 4, 8, 16, 32, 60]  # doubling, capped
    assert max(gaps) < 3600 + 5
    assert 25 <= delivery.attempts <= 35
    before = len(receiver.requests)
    with time_machine.travel(timezone.now() + timedelta(days=2), tick=True):
        assert dispatch() == 0  # failed is final
    assert len(receiver.requests) == before


def test_a_timeout_is_a_failed_attempt_within_the_bound(acme, receiver, allow_private, settings):
    settings.SENDMSG_WEBHOOK_TIMEOUT = 1
    endpoint, _ = create_endpoint(tenant=acme, url=receiver.url(), event_types=["accepted"])
    receiver.delay(3)
    send(acme, "a@dest.test")
    began = time.monotonic()
    dispatch()
    assert time.monotonic() - began < 2.5
    [attempt] = WebhookAttempt.objects.filter(endpoint=endpoint)
    assert attempt.status_code is None and "Timed out" in attempt.error
    assert 900 <= attempt.duration_ms < 2000
    assert WebhookDelivery.objects.get().state == WebhookDeliveryState.PENDING


def test_a_dead_endpoint_costs_one_attempt_per_run_not_one_per_event(acme, allow_private):
    with HttpReceiver("127.0.0.5") as closed:
        url = closed.url()
    create_endpoint(tenant=acme, url=url, event_types=["accepted"])  # nothing listens now
    for n in range(5):
        send(acme, f"r{n}@dest.test")
    assert dispatch() == 1
    [attempt] = WebhookAttempt.objects.all()
    assert "Connection refused" in attempt.error
    assert WebhookDelivery.objects.filter(state=WebhookDeliveryState.PENDING).count() == 5


def test_https_with_the_certificate_checked_against_the_host_name(
    acme, allow_private, monkeypatch, tmp_path
):
    ca = trustme.CA()
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(ca_file)
    monkeypatch.setenv("SSL_CERT_FILE", str(ca_file))
    for name, expected in [("localhost", 200), ("other.test", None)]:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert(name).configure_cert(context)
        with HttpReceiver("127.0.0.1", ssl_context=context) as server:
            endpoint, _ = create_endpoint(
                tenant=acme, url=server.url(host="localhost"), event_types=["accepted"]
            )
            attempt = sender.send_test(endpoint)
            assert attempt.status_code == expected, attempt.error
            if expected is None:
                assert "TLS certificate not accepted" in attempt.error
            else:
                assert server.wait_for(1)[0].headers["host"] == f"localhost:{server.port}"
            endpoint.delete()


# -- targets -------------------------------------------------------------------------------

REFUSED = [
    ("http://127.0.0.1:8080/hook", "loopback"),
    ("http://127.0.0.5/hook", "loopback"),
    ("http://[::1]/hook", "loopback"),
    ("http://[::ffff:127.0.0.1]/hook", "loopback"),
    ("http://[::ffff:7f00:1]/hook", "loopback"),
    ("http://10.1.2.3/hook", "private"),
    ("http://192.168.1.1/hook", "private"),
    ("http://169.254.169.254/latest/meta-data/", "link-local"),
    ("http://[fe80::1]/hook", "link-local"),
    ("http://[fc00::1]/hook", "private"),
    ("http://0.0.0.0/hook", "unspecified"),
    ("http://224.0.0.1/hook", "multicast"),
    ("http://[ff02::1]/hook", "multicast"),
    ("http://100.64.0.1/hook", "non-public"),
    ("http://[2002:7f00:1::]/hook", "loopback"),  # 6to4 around 127.0.0.1
    ("http://localhost:8000/hook", "loopback"),
    ("http://127.1/hook", "neither a host name nor an IP address"),
    ("ftp://example.com/hook", "Only http:// and https://"),
    ("http://user:pw@example.com/hook", "no user name or password"),
    ("https:///hook", "no host"),
]


@pytest.mark.parametrize(("url", "reason"), REFUSED)
def test_private_targets_are_refused_when_the_setting_is_off(acme, url, reason):
    assert settings.SENDMSG_WEBHOOK_ALLOW_PRIVATE is False
    response = api(acme).post(
        "/api/v1/webhooks/", {"url": url, "event_types": ["accepted"]}, format="json"
    )
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["field"] == "url" and reason in error["message"]
    assert not WebhookEndpoint.objects.exists()


def test_127_0_0_1_is_refused_unless_the_setting_allows_it(acme, receiver, settings):
    settings.SENDMSG_WEBHOOK_ALLOW_PRIVATE = False
    client = api(acme)
    body = {"url": receiver.url(), "event_types": ["accepted"]}
    refused = client.post("/api/v1/webhooks/", body, format="json")
    assert refused.status_code == 400
    assert "127.0.0.5 is a loopback address" in refused.json()["error"]["message"]

    settings.SENDMSG_WEBHOOK_ALLOW_PRIVATE = True
    assert client.post("/api/v1/webhooks/", body, format="json").status_code == 201
    send(acme, "a@dest.test")

    # Checked again before every request: with the setting off, nothing is sent.
    settings.SENDMSG_WEBHOOK_ALLOW_PRIVATE = False
    assert dispatch() == 1
    [attempt] = WebhookAttempt.objects.all()
    assert attempt.status_code is None and "loopback" in attempt.error
    assert receiver.requests == []


def test_a_name_rebound_to_loopback_after_registration_is_refused_at_send_time(
    acme, receiver, dns_server
):
    dns_server.set_zone("hooks.test", ["in.hooks.test. IN A 93.184.216.34"])
    endpoint, _ = create_endpoint(
        tenant=acme, url=receiver.url(host="in.hooks.test"), event_types=["accepted"]
    )
    dns_server.set_zone("hooks.test", ["in.hooks.test. IN A 127.0.0.5"])  # rebinding
    send(acme, "a@dest.test")
    dispatch()
    [attempt] = WebhookAttempt.objects.filter(endpoint=endpoint)
    assert "in.hooks.test resolves to 127.0.0.5, which is a loopback address" in attempt.error
    assert receiver.requests == []

    dns_server.set_zone(
        "hooks.test", ["in.hooks.test. IN A 10.0.0.1", "in.hooks.test. IN A 93.184.216.34"]
    )
    response = api(acme).post(
        "/api/v1/webhooks/",
        {"url": "http://in.hooks.test/x", "event_types": ["accepted"]},
        format="json",
    )
    assert response.status_code == 400  # one private address refuses the name whole
    assert "10.0.0.1, which is a private address" in response.json()["error"]["message"]


def test_event_types_come_from_the_vocabulary(acme, receiver, allow_private):
    client = api(acme)
    for types, message in [(["opened"], "not a valid choice"), ([], "")]:
        response = client.post(
            "/api/v1/webhooks/", {"url": receiver.url(), "event_types": types}, format="json"
        )
        assert response.status_code == 400
        assert response.json()["error"]["field"].startswith("event_types")
        assert message in response.json()["error"]["message"]
    created = client.post(
        "/api/v1/webhooks/",
        {"url": receiver.url(), "event_types": ["bounced", "accepted", "bounced"]},
        format="json",
    ).json()
    assert created["event_types"] == ["accepted", "bounced"]  # the vocabulary's order
    assert set(EventType.values) >= {"accepted", "delivered", "bounced", "cancelled"}


# -- the secret ----------------------------------------------------------------------------


def stored_values(row) -> str:
    return " ".join(str(getattr(row, f.attname)) for f in row._meta.concrete_fields)


def test_the_secret_is_shown_once_stored_encrypted_and_rotated_with_overlap(
    acme, receiver, allow_private
):
    verify = readme_verify()
    client = api(acme)
    created = client.post(
        "/api/v1/webhooks/", {"url": receiver.url(), "event_types": ["accepted"]}, format="json"
    )
    assert created.status_code == 201
    first = created.json()["secret"]
    assert first.startswith("whsec_") and len(first) >= 30
    endpoint_id = created.json()["id"]
    listed = client.get("/api/v1/webhooks/").json()["results"]
    shown = client.get(f"/api/v1/webhooks/{endpoint_id}/").json()
    assert "secret" not in listed[0] and "secret" not in shown
    assert first not in json.dumps(listed) + json.dumps(shown)
    row = WebhookEndpoint.objects.get()
    assert first not in stored_values(row) and first.encode() not in bytes(row.secret_encrypted)

    rotated = client.post(f"/api/v1/webhooks/{endpoint_id}/rotate-secret/", {}, format="json")
    assert rotated.status_code == 200
    second = rotated.json()["secret"]
    assert second != first and rotated.json()["previous_secret_until"]
    send(acme, "a@dest.test")
    dispatch()
    [request] = receiver.wait_for(1)
    header = request.headers["sendmsg-signature"]
    assert len(v1_values(header)) == 2  # both secrets sign during the overlap
    assert verify(second, header, request.body) and verify(first, header, request.body)

    client.post(
        f"/api/v1/webhooks/{endpoint_id}/rotate-secret/",
        {"keep_previous_hours": 0},
        format="json",
    )
    assert client.get(f"/api/v1/webhooks/{endpoint_id}/").json()["previous_secret_until"] is None
    attempt = client.post(f"/api/v1/webhooks/{endpoint_id}/test/").json()
    assert attempt["succeeded"]
    header = receiver.wait_for(2)[1].headers["sendmsg-signature"]
    assert len(v1_values(header)) == 1
    assert not verify(second, header, receiver.requests[1].body)


SECRET_RE = re.compile(r'<code id="new-secret-value" class="copyable">([^<]+)</code>')


def test_dashboard_creates_edits_tests_and_deletes_an_endpoint(acme, receiver, allow_private):
    verify = readme_verify()
    client = logged_in(owner_of(acme))
    assert b"No webhook endpoints yet" in client.get("/webhooks/").content
    response = client.post(
        "/webhooks/",
        {"url": receiver.url(), "description": "CRM", "event_types": ["accepted"], "active": "on"},
    )
    endpoint = WebhookEndpoint.objects.get()
    assert response.status_code == 302 and response.url == f"/webhooks/{endpoint.pk}/#new-secret"
    page = client.get(f"/webhooks/{endpoint.pk}/")
    assert "no-store" in page["Cache-Control"]
    [secret] = [html.unescape(s) for s in SECRET_RE.findall(page.content.decode())]
    again = client.get(f"/webhooks/{endpoint.pk}/").content.decode()
    assert secret not in again and not SECRET_RE.search(again)  # shown once
    assert secret not in client.get("/webhooks/").content.decode()
    for session in Session.objects.all():
        assert secret not in str(session.get_decoded())

    saved = client.post(
        f"/webhooks/{endpoint.pk}/",
        {"url": receiver.url("/v2"), "event_types": ["accepted", "delivered"], "active": "on"},
    )
    assert saved.status_code == 302
    endpoint.refresh_from_db()
    assert endpoint.url.endswith("/v2") and endpoint.event_types == ["accepted", "delivered"]

    client.post(f"/webhooks/{endpoint.pk}/test/")
    [request] = receiver.wait_for(1)
    assert request.path == "/v2"
    assert verify(secret, request.headers["sendmsg-signature"], request.body)
    page = client.get(f"/webhooks/{endpoint.pk}/").content.decode()
    assert "Test ping delivered: HTTP 200" in page and "<code>test</code>" in page
    listing = client.get("/webhooks/").content.decode()
    assert receiver.url("/v2") in listing and "HTTP 200" in listing

    rotated = client.post(f"/webhooks/{endpoint.pk}/rotate-secret/", {"stop_previous_now": "on"})
    assert rotated.url == f"/webhooks/{endpoint.pk}/#new-secret"
    [new_secret] = SECRET_RE.findall(client.get(f"/webhooks/{endpoint.pk}/").content.decode())
    assert new_secret != secret

    assert b"Delete the webhook endpoint" in client.get(f"/webhooks/{endpoint.pk}/delete/").content
    assert client.post(f"/webhooks/{endpoint.pk}/delete/").url == "/webhooks/"
    assert not WebhookEndpoint.objects.exists() and not WebhookAttempt.objects.exists()


def test_dashboard_shows_a_refused_url_next_to_the_field(acme):
    response = logged_in(owner_of(acme)).post(
        "/webhooks/", {"url": "http://127.0.0.1/hook", "event_types": ["accepted"]}
    )
    assert response.status_code == 400
    page = html.unescape(response.content.decode())
    assert 'role="alert"' in page and "127.0.0.1 is a loopback address" in page
    assert 'aria-invalid="true"' in page
    assert not WebhookEndpoint.objects.exists()


# -- isolation -----------------------------------------------------------------------------

API_CALLS = [
    ("get", ""),
    ("put", ""),
    ("patch", ""),
    ("delete", ""),
    ("post", "rotate-secret/"),
    ("get", "attempts/"),
    ("post", "test/"),
]


@pytest.mark.parametrize(("method", "suffix"), API_CALLS)
def test_outsider_gets_404_on_every_webhook_api_call(
    acme, outsider, receiver, allow_private, method, suffix
):
    endpoint, _ = create_endpoint(tenant=acme, url=receiver.url(), event_types=["accepted"])
    sealed = bytes(endpoint.secret_encrypted)
    client = api(outsider[0])
    body = {"url": "http://127.0.0.9/stolen", "event_types": ["bounced"], "active": False}
    response = getattr(client, method)(
        f"/api/v1/webhooks/{endpoint.pk}/{suffix}", body, format="json"
    )
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
    endpoint.refresh_from_db()
    assert (endpoint.url, endpoint.event_types, endpoint.active) == (
        receiver.url(),
        ["accepted"],
        True,
    )
    assert bytes(endpoint.secret_encrypted) == sealed
    assert receiver.requests == [] and not WebhookDelivery.objects.exists()
    assert client.get("/api/v1/webhooks/").json()["results"] == []


def test_outsider_gets_404_on_every_dashboard_url(acme, outsider, receiver, allow_private):
    endpoint, _ = create_endpoint(tenant=acme, url=receiver.url(), event_types=["accepted"])
    sealed = bytes(endpoint.secret_encrypted)
    client = logged_in(outsider[1])
    for suffix in ["", "rotate-secret/", "test/", "delete/"]:
        url = f"/webhooks/{endpoint.pk}/{suffix}"
        assert client.get(url).status_code == 404
        assert (
            client.post(url, {"url": "http://127.0.0.9/", "event_types": ["bounced"]}).status_code
            == 404
        )
        assert logged_in(owner_of(acme)).get(url).status_code in (200, 405)  # the URL exists
    endpoint.refresh_from_db()
    assert endpoint.url == receiver.url() and bytes(endpoint.secret_encrypted) == sealed
    assert receiver.requests == [] and WebhookEndpoint.objects.count() == 1
    assert receiver.url() not in client.get("/webhooks/").content.decode()


def test_events_of_another_tenant_never_reach_an_endpoint(acme, outsider, receiver, allow_private):
    create_endpoint(tenant=outsider[0], url=receiver.url(), event_types=list(EventType.values))
    send(acme, "a@dest.test")
    assert dispatch() == 0 and receiver.requests == []


# -- the outbox ----------------------------------------------------------------------------


def test_a_missing_event_id_is_waited_for_then_passed_over(acme, receiver, allow_private):
    create_endpoint(tenant=acme, url=receiver.url(), event_types=["accepted"])
    first = send(acme, "first@dest.test")
    send(acme, "second@dest.test")
    Message.objects.filter(pk=first.pk).delete()  # as if its transaction were still open
    outbox.collect()
    assert not WebhookDelivery.objects.exists()  # waiting for the missing id
    with time_machine.travel(
        timezone.now() + timedelta(seconds=settings.SENDMSG_WEBHOOK_GAP_SECONDS + 1), tick=True
    ):
        outbox.collect()
    [delivery] = WebhookDelivery.objects.select_related("event__recipient")
    assert delivery.event.recipient.address == "second@dest.test"


@pytest.mark.django_db(transaction=True)
def test_an_event_committed_late_is_still_delivered(acme, receiver, allow_private):
    """PostgreSQL hands out ids before commit: a later id can be visible first."""
    if connection.vendor != "postgresql":
        pytest.skip("SQLite commits ids in order (one writer at a time)")
    create_endpoint(tenant=acme, url=receiver.url(), event_types=["accepted"])
    message = send(acme, "a@dest.test")
    recipient = Recipient.objects.get(message=message)
    inserted, release = threading.Event(), threading.Event()

    def slow_writer() -> None:
        try:
            with transaction.atomic():
                Event.record(recipient=recipient, type=EventType.ACCEPTED)
                inserted.set()
                release.wait(10)
        finally:
            connections.close_all()

    writer = threading.Thread(target=slow_writer)
    writer.start()
    assert inserted.wait(10)
    late_id = Event.objects.order_by("-pk").values_list("pk", flat=True).first()
    Event.record(recipient=recipient, type=EventType.ACCEPTED)  # committed first
    outbox.collect()
    assert WebhookDelivery.objects.count() == 1  # the first message's, not the newest
    release.set()
    writer.join()
    outbox.collect()
    assert WebhookDelivery.objects.count() == 3
    assert WebhookDelivery.objects.filter(event_id__gt=late_id).count() == 2


@pytest.mark.django_db(transaction=True)
def test_two_dispatchers_at_once_send_every_event_once(acme, receiver, allow_private):
    create_endpoint(tenant=acme, url=receiver.url(), event_types=["accepted"])
    for n in range(8):
        send(acme, *[f"r{n}-{i}@dest.test" for i in range(5)])
    barrier = threading.Barrier(2)

    def run() -> None:
        try:
            barrier.wait(10)
            dispatch()
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    dispatch()  # whatever a busy database made one of them leave
    ids = [body_of(r)["id"] for r in receiver.wait_for(40)]
    assert sorted(ids) == sorted(set(ids)) and len(ids) == 40
    assert WebhookDelivery.objects.filter(state=WebhookDeliveryState.SUCCEEDED).count() == 40


# -- operators -----------------------------------------------------------------------------


def test_the_admin_never_shows_a_webhook_secret(admin_user, acme, receiver, allow_private):
    endpoint, secret = create_endpoint(tenant=acme, url=receiver.url(), event_types=["accepted"])
    client = Client()
    client.force_login(admin_user)
    page = client.get(f"/admin/delivery/webhookendpoint/{endpoint.pk}/change/")
    assert page.status_code == 200
    assert secret not in page.content.decode() and "secret_encrypted" not in page.content.decode()


def test_finished_deliveries_are_forgotten_after_the_log_days(acme, receiver, allow_private):
    create_endpoint(tenant=acme, url=receiver.url(), event_types=["accepted"])
    receiver.reply(200, 500)
    send(acme, "ok@dest.test", "retry@dest.test")
    dispatch()
    assert WebhookAttempt.objects.count() == 2
    later = timezone.now() + timedelta(days=settings.SENDMSG_WEBHOOK_LOG_DAYS, hours=1)
    assert sender.forget_finished(now=later) == 1
    [kept] = WebhookDelivery.objects.all()  # the one still being retried stays
    assert kept.state == WebhookDeliveryState.PENDING and kept.attempt_log.count() == 1
