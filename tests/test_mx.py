"""MX details of the relay (RFC 5321 §5.1) against the real DNS server and real receivers:
a host answering 4xx at the greeting passes the mail to the next, and MX and address
answers are reused for their TTL."""

from __future__ import annotations

import time

import pytest
from django.conf import settings

from delivery.accept import Sender, accept_message
from delivery.models import Message, Recipient, Source
from delivery.mx import flush_cache
from delivery.relay import deliver_message
from tests.peers.smtp_receiver import SmtpReceiver

pytestmark = pytest.mark.django_db

FIRST, SECOND = "127.0.0.45", "127.0.0.46"


def send(domain, recipient: str) -> Message:
    return accept_message(
        sender=Sender(tenant_id=domain.tenant_id),
        mail_from="news@acme.test",
        recipients=[recipient],
        raw=b"From: news@acme.test\r\nTo: x@y.test\r\nSubject: mx\r\n\r\nHello.\r\n",
        source=Source.API,
    )


@pytest.fixture
def two_hosts():
    port = settings.SENDMSG_RELAY_PORT
    with (
        SmtpReceiver(FIRST, port, hostname="mx1.hosts.test") as first,
        SmtpReceiver(SECOND, port, hostname="mx2.hosts.test") as second,
    ):
        yield first, second


def test_a_4xx_greeting_passes_the_mail_to_the_next_mx(verified_domain, dns_server, two_hosts):
    first, second = two_hosts
    first.reply_greeting("421 4.3.2 Too busy, try another")
    dns_server.set_zone(
        "busy.test",
        [
            "busy.test. IN MX 10 mx1.busy.test.",
            "busy.test. IN MX 20 mx2.busy.test.",
            f"mx1.busy.test. IN A {FIRST}",
            f"mx2.busy.test. IN A {SECOND}",
        ],
    )
    message = send(verified_domain, "zoe@busy.test")
    deliver_message(message.pk)
    recipient = Recipient.objects.get(message=message)
    assert (recipient.state, recipient.mx_host) == ("delivered", "mx2.busy.test")
    assert first.connections == 1 and first.messages == []
    assert [m.rcpt_tos for m in second.messages] == [["zoe@busy.test"]]


def test_mx_and_address_answers_are_reused_for_their_ttl(verified_domain, dns_server, two_hosts):
    first, second = two_hosts
    dns_server.set_zone(
        "cached.test",
        ["cached.test. 2 IN MX 10 mx.cached.test.", f"mx.cached.test. 2 IN A {FIRST}"],
    )
    deliver_message(send(verified_domain, "a@cached.test").pk)
    assert len(first.messages) == 1

    # The domain moves to another host; within the TTL the relay still uses its answers.
    dns_server.set_zone(
        "cached.test",
        ["cached.test. 2 IN MX 10 mx.cached.test.", f"mx.cached.test. 2 IN A {SECOND}"],
    )
    deliver_message(send(verified_domain, "b@cached.test").pk)
    assert (len(first.messages), len(second.messages)) == (2, 0)

    time.sleep(2.1)  # the TTL runs out: asked again
    deliver_message(send(verified_domain, "c@cached.test").pk)
    assert (len(first.messages), len(second.messages)) == (2, 1)


def test_flushing_the_cache_sees_a_change_at_once(verified_domain, dns_server, two_hosts):
    first, second = two_hosts
    dns_server.set_zone(
        "moved.test", ["moved.test. IN MX 10 mx.moved.test.", f"mx.moved.test. IN A {FIRST}"]
    )
    deliver_message(send(verified_domain, "a@moved.test").pk)
    dns_server.set_zone(
        "moved.test", ["moved.test. IN MX 10 mx.moved.test.", f"mx.moved.test. IN A {SECOND}"]
    )
    flush_cache()
    deliver_message(send(verified_domain, "b@moved.test").pk)
    assert (len(first.messages), len(second.messages)) == (1, 1)
