"""Hands on the queue: operators hold, release, retry now and cancel in the admin; a
tenant cancels through the API. Recipients being sent or final are never touched."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.admin.models import LogEntry
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from delivery.accept import Sender, accept_message
from delivery.credentials import create_api_key
from delivery.models import Event, Message, Recipient, RecipientState, Source

pytestmark = pytest.mark.django_db

S = RecipientState


def send(tenant, *recipients: str) -> Message:
    return accept_message(
        sender=Sender(tenant_id=tenant.pk),
        mail_from="news@acme.test",
        recipients=list(recipients),
        raw=b"From: news@acme.test\r\nTo: a@dest.test\r\nSubject: hi\r\n\r\nbody\r\n",
        source=Source.API,
    )


def states(message: Message) -> dict[str, str]:
    return dict(Recipient.objects.filter(message=message).values_list("address", "state"))


def events(address: str) -> list[str]:
    return list(Event.objects.filter(recipient__address=address).values_list("type", flat=True))


def api(tenant) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {create_api_key(tenant=tenant)[1]}")
    return client


def test_a_tenant_cancels_what_is_not_sent_yet(verified_domain):
    tenant = verified_domain.tenant
    message = send(tenant, "a@dest.test", "b@dest.test", "c@dest.test")
    Recipient.objects.filter(address="b@dest.test").update(state=S.SENDING)  # a worker has it
    Recipient.objects.filter(address="c@dest.test").update(state=S.DEFERRED)
    client = api(tenant)
    response = client.post(f"/api/v1/messages/{message.queue_id}/cancel/")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["id"] == message.queue_id
    assert sorted(r["address"] for r in body["cancelled"]) == ["a@dest.test", "c@dest.test"]
    assert body["not_cancelled"] == [
        {"id": body["not_cancelled"][0]["id"], "address": "b@dest.test", "state": "sending"}
    ]
    assert states(message) == {"a@dest.test": S.CANCELLED, "b@dest.test": S.SENDING,
                               "c@dest.test": S.CANCELLED}  # fmt: skip
    assert events("a@dest.test") == ["accepted", "cancelled"]
    assert events("b@dest.test") == ["accepted"]
    # Nothing left to cancel: 409 in the API's error shape, and nothing changes.
    again = client.post(f"/api/v1/messages/{message.queue_id}/cancel/")
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "conflict"
    assert states(message)["b@dest.test"] == S.SENDING
    assert Event.objects.filter(type="cancelled").count() == 2


def test_an_outsider_cannot_cancel(verified_domain, outsider):
    message = send(verified_domain.tenant, "a@dest.test")
    response = api(outsider[0]).post(f"/api/v1/messages/{message.queue_id}/cancel/")
    assert response.status_code == 404
    assert states(message) == {"a@dest.test": S.QUEUED}


@pytest.fixture
def operator(admin_user) -> Client:
    client = Client()
    client.force_login(admin_user)
    return client


def act(operator: Client, model: str, action: str, *pks: int):
    return operator.post(
        reverse(f"admin:delivery_{model}_changelist"),
        {"action": action, "_selected_action": [str(pk) for pk in pks]},
        follow=True,
    )


def test_an_operator_holds_and_releases_a_message(verified_domain, operator):
    message = send(verified_domain.tenant, "a@dest.test", "b@dest.test")
    Recipient.objects.filter(address="b@dest.test").update(state=S.DELIVERED)
    page = act(operator, "message", "hold", message.pk)
    assert "1 recipient(s) held." in page.content.decode()
    assert "b@dest.test (delivered)" in page.content.decode()  # said, and left alone
    assert states(message) == {"a@dest.test": S.HELD, "b@dest.test": S.DELIVERED}
    # Held: not due, whatever its time.
    assert not Recipient.objects.filter(message=message).due().exists()
    act(operator, "message", "release", message.pk)
    assert states(message) == {"a@dest.test": S.QUEUED, "b@dest.test": S.DELIVERED}
    assert Recipient.objects.filter(message=message).due().count() == 1
    assert events("a@dest.test") == ["accepted", "held", "released"]
    history = LogEntry.objects.filter(object_id=str(message.pk)).values_list(
        "change_message", flat=True
    )
    assert list(history) == [
        "Recipients released: a@dest.test",
        "Recipients held: a@dest.test",
    ]


def test_an_operator_retries_deferred_recipients_now_and_cancels(verified_domain, operator):
    message = send(verified_domain.tenant, "a@dest.test", "b@dest.test")
    later = timezone.now() + timedelta(hours=1)
    Recipient.objects.filter(message=message).update(state=S.DEFERRED, next_attempt_at=later)
    [a, b] = Recipient.objects.filter(message=message).order_by("address")
    act(operator, "recipient", "retry_now", a.pk)
    a.refresh_from_db()
    assert a.state == S.DEFERRED and a.next_attempt_at <= timezone.now()
    assert list(Recipient.objects.filter(message=message).due()) == [a]
    assert events("a@dest.test") == ["accepted"]  # not a change of state
    act(operator, "recipient", "cancel", a.pk, b.pk)
    assert states(message) == {"a@dest.test": S.CANCELLED, "b@dest.test": S.CANCELLED}
    assert events("b@dest.test") == ["accepted", "cancelled"]
    assert not Recipient.objects.filter(message=message).due().exists()
