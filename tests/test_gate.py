"""The reputation gate both doors ask: suspension, the plan rate, the suppression list."""

from __future__ import annotations

import smtplib

import pytest
from django.conf import settings
from rest_framework.test import APIClient

from delivery.credentials import create_api_key, create_smtp_credential
from delivery.models import Event, Message, Recipient
from domains.models import Tenant
from reputation.models import Suppression, SuppressionReason
from tests.conftest import wait_until

pytestmark = [pytest.mark.peers, pytest.mark.django_db(transaction=True)]


def api_for(tenant) -> APIClient:
    _, key = create_api_key(tenant=tenant)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    return client


def send(client, *to: str):
    return client.post(
        "/api/v1/send/",
        {"from": {"email": "news@acme.test"}, "to": list(to), "subject": "gate", "text": "x"},
        format="json",
    )


def smtp_mail(tenant, client_tls) -> tuple[int, bytes]:
    credential, password = create_smtp_credential(tenant=tenant)
    with smtplib.SMTP("localhost", settings.SENDMSG_SUBMISSION_PORT, timeout=15) as client:
        client.starttls(context=client_tls)
        client.login(credential.username, password)
        return client.mail("news@acme.test")


def test_suspended_account_is_refused_at_both_doors(platform, verified_domain, client_tls):
    tenant = verified_domain.tenant
    Tenant.objects.filter(pk=tenant.pk).update(suspended=True)
    code, text = smtp_mail(tenant, client_tls)
    assert (code, text[:5]) == (550, b"5.7.1") and b"suspended" in text
    response = send(api_for(tenant), "alice@dest.test")
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "account_suspended"
    assert not Message.objects.exists()


def test_plan_rate_throttles_with_a_retry_hint(platform, verified_domain, client_tls):
    tenant = verified_domain.tenant
    Tenant.objects.filter(pk=tenant.pk).update(plan_rate=2)
    client = api_for(tenant)
    assert send(client, "a@dest.test").status_code == 201
    assert send(client, "b@dest.test").status_code == 201
    third = send(client, "c@dest.test")
    assert third.status_code == 429 and third.json()["error"]["code"] == "rate_limited"
    # The rate is per clock hour: the wait runs to the end of this one.
    from django.utils import timezone

    from reputation.gate import current_hour

    to_next_hour = (current_hour() - timezone.now()).total_seconds() + 3600
    assert abs(int(third["Retry-After"]) - to_next_hour) <= 2
    code, text = smtp_mail(tenant, client_tls)
    assert (code, text[:5]) == (451, b"4.7.1") and b"retry in" in text
    assert Message.objects.count() == 2


def test_suppressed_recipient_is_recorded_and_never_sent(platform, verified_domain, mx):
    tenant = verified_domain.tenant
    Suppression.objects.create(
        tenant=tenant, address="blocked@dest.test", reason=SuppressionReason.MANUAL
    )
    response = send(api_for(tenant), "Blocked@dest.test", "alice@dest.test")
    assert response.status_code == 201
    states = dict(Recipient.objects.values_list("address", "state"))
    assert states["Blocked@dest.test"] == "suppressed"
    assert states["alice@dest.test"] in ("queued", "sending", "delivered")  # the worker runs
    blocked = Recipient.objects.get(address="Blocked@dest.test")
    assert list(Event.objects.filter(recipient=blocked).values_list("type", flat=True)) == [
        "suppressed"
    ]
    wait_until(lambda: Recipient.objects.filter(address="alice@dest.test", state="delivered"))
    assert [m.rcpt_tos for m in mx.messages] == [["alice@dest.test"]]

    # Only suppressed recipients: stored, answered, nothing queued.
    only = send(api_for(tenant), "blocked@dest.test")
    assert only.status_code == 201
    assert Recipient.objects.get(message__queue_id=only.json()["id"]).state == "suppressed"


def test_another_tenants_suppression_does_not_apply(platform, verified_domain, outsider, mx):
    Suppression.objects.create(
        tenant=outsider[0], address="alice@dest.test", reason=SuppressionReason.COMPLAINT
    )
    assert send(api_for(verified_domain.tenant), "alice@dest.test").status_code == 201
    wait_until(lambda: Recipient.objects.filter(address="alice@dest.test", state="delivered"))


def test_a_recipient_with_a_unicode_domain_matches_its_listed_ascii_form(verified_domain):
    """SMTP with SMTPUTF8 hands recipients over as written; the list keeps ASCII domains."""
    from delivery.accept import Sender, accept_message
    from delivery.models import Source

    tenant = verified_domain.tenant
    Suppression.objects.create(
        tenant=tenant, address="alice@xn--bcher-kva.example", reason=SuppressionReason.MANUAL
    )
    accept_message(
        sender=Sender(tenant_id=tenant.pk),
        mail_from="news@acme.test",
        recipients=["Alice@Bücher.example", "bob@bücher.example"],
        raw=b"From: news@acme.test\r\nSubject: s\r\n\r\nx\r\n",
        source=Source.SMTP,
    )
    states = dict(Recipient.objects.values_list("address", "state"))
    assert states == {"Alice@Bücher.example": "suppressed", "bob@bücher.example": "queued"}
