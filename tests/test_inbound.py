"""The inbound MX takes mail only for our own signed VERP addresses: never a relay."""

from __future__ import annotations

import smtplib

import pytest
from django.conf import settings

from delivery.accept import Sender, accept_message
from delivery.models import Recipient, Source
from delivery.verp import verp_address
from reputation.models import InboundReport
from tests.conftest import wait_until

pytestmark = [pytest.mark.peers, pytest.mark.django_db(transaction=True)]

DSN = (
    b"From: MAILER-DAEMON@mx.dest.test\r\nTo: {rcpt}\r\nSubject: Undelivered Mail\r\n"
    b"Content-Type: text/plain\r\n\r\nalice@dest.test: 550 5.1.1 user unknown\r\n"
)


def test_inbound_accepts_only_valid_bounce_addresses(platform, verified_domain):
    message = accept_message(
        sender=Sender(tenant_id=verified_domain.tenant_id),
        mail_from="news@acme.test",
        recipients=["alice@dest.test"],
        raw=b"From: news@acme.test\r\nSubject: s\r\n\r\nx\r\n",
        source=Source.API,
    )
    recipient = Recipient.objects.get(message=message)
    good = verp_address(
        tenant_id=recipient.tenant_id,
        message_id=message.pk,
        recipient_id=recipient.pk,
        host="rp.acme.test",
    )
    local, _, host = good.partition("@")
    forged = f"{local[:-1]}{'a' if local[-1] != 'a' else 'b'}@{host}"
    other_recipient = good.replace(f"b-{local.split('-')[1]}-", "b-zz-")
    wrong_host = f"{local}@rp.globex.test"

    with smtplib.SMTP("127.0.0.1", settings.SENDMSG_INBOUND_PORT, timeout=15) as client:
        client.ehlo("mx.dest.test")
        assert client.mail("")[0] == 250
        for address in (
            "postmaster@gmail.com",
            forged,
            other_recipient,
            wrong_host,
            "someone@acme.test",
        ):
            code, text = client.rcpt(address)
            assert (code, text[:5]) == (550, b"5.1.1"), address
        assert client.rcpt(good)[0] == 250
        code, _ = client.data(DSN.replace(b"{rcpt}", good.encode()))
        assert code == 250

    report = wait_until(lambda: InboundReport.objects.filter(recipient=recipient).first())
    assert report.tenant_id == verified_domain.tenant_id
    assert b"550 5.1.1 user unknown" in bytes(report.raw)
    assert InboundReport.objects.count() == 1
