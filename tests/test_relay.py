"""The relay against a real DNS server and real SMTP receivers: every outcome a recipient
can have from one attempt, with the remote reply recorded."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
import time_machine
from django.conf import settings
from django.utils import timezone
from django_q.models import OrmQ

from delivery import tasks
from delivery.accept import Sender, accept_message
from delivery.models import Event, Message, Recipient, RecipientState, Source
from delivery.relay import deliver_message, deliver_messages, worst_transaction_seconds
from tests.conftest import MX_ADDRESS
from tests.peers.smtp_receiver import SmtpReceiver

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True, params=[False, True], ids=["one-by-one", "pipelining"])
def pipelining(request, mx):
    """Every test here runs against an MX without PIPELINING and one that offers it (the
    relay then sends MAIL, the RCPTs and DATA in one write, RFC 2920)."""
    mx.offer_pipelining(request.param)
    return request.param


def send(domain, *recipients: str) -> Message:
    body = "From: news@acme.test\r\nTo: {}\r\nSubject: relay test\r\n\r\nHello.\r\n".format(
        ", ".join(recipients)
    ).encode()
    return accept_message(
        sender=Sender(tenant_id=domain.tenant_id),
        mail_from="news@acme.test",
        recipients=list(recipients),
        raw=body,
        source=Source.API,
    )


def states(message: Message) -> dict[str, tuple[str, int | None, str]]:
    return {
        r.address: (r.state, r.last_code, r.last_enhanced)
        for r in Recipient.objects.filter(message=message)
    }


def test_delivered_and_refused_recipients_of_one_message(verified_domain, mx):
    mx.reply_rcpt("nobody@dest.test", "550 5.1.1 No such user")
    message = send(verified_domain, "alice@dest.test", "nobody@dest.test")
    assert deliver_message(message.pk) == 2
    assert states(message) == {
        "alice@dest.test": ("delivered", 250, "2.0.0"),
        "nobody@dest.test": ("bounced", 550, "5.1.1"),
    }
    bounced = Recipient.objects.get(address="nobody@dest.test")
    assert "No such user" in bounced.last_text
    assert [e.type for e in Event.objects.filter(recipient=bounced)] == ["accepted", "bounced"]
    assert [m.rcpt_tos for m in mx.messages] == [["alice@dest.test"]]
    # a second run finds nothing due: nothing is sent twice
    assert deliver_message(message.pk) == 0
    assert len(mx.messages) == 1


def test_an_mx_offering_pipelining_gets_the_envelope_in_one_write(verified_domain, mx, pipelining):
    mx.reply_rcpt("nobody@dest.test", "550 5.1.1 No such user")
    message = send(verified_domain, "alice@dest.test", "nobody@dest.test", "bob@dest.test")
    assert deliver_message(message.pk) == 3
    assert states(message) == {
        "alice@dest.test": ("delivered", 250, "2.0.0"),
        "nobody@dest.test": ("bounced", 550, "5.1.1"),
        "bob@dest.test": ("delivered", 250, "2.0.0"),
    }
    assert [m.rcpt_tos for m in mx.messages] == [["alice@dest.test", "bob@dest.test"]]
    assert mx.pipelined == (1 if pipelining else 0)


def test_refused_envelopes_leave_the_connection_ready_for_the_next_message(verified_domain, mx):
    mx.reply_rcpt("nobody@dest.test", "550 5.1.1 No such user")
    refused = send(verified_domain, "nobody@dest.test")
    taken = send(verified_domain, "alice@dest.test")
    deliver_messages([refused.pk, taken.pk])
    assert states(refused) == {"nobody@dest.test": ("bounced", 550, "5.1.1")}
    assert states(taken) == {"alice@dest.test": ("delivered", 250, "2.0.0")}
    assert mx.connections == 1  # the refused transaction was reset, not the connection
    assert mx.attempts == 1  # no DATA went with the refused envelope


def test_lines_starting_with_a_dot_arrive_as_written(verified_domain, mx):
    body = b".leading dot\r\n..two dots\r\n.\r\nafter a lone dot\r\n"
    message = accept_message(
        sender=Sender(tenant_id=verified_domain.tenant_id),
        mail_from="news@acme.test",
        recipients=["alice@dest.test"],
        raw=b"From: news@acme.test\r\nTo: alice@dest.test\r\nSubject: dots\r\n\r\n" + body,
        source=Source.API,
    )
    deliver_message(message.pk)
    assert states(message)["alice@dest.test"][0] == "delivered"
    assert mx.messages[0].data.endswith(b"\r\n\r\n" + body)


def test_temporary_failure_defers_with_a_retry_time(verified_domain, mx):
    mx.reply_data("451 4.3.0 Try again later")
    message = send(verified_domain, "alice@dest.test")
    deliver_message(message.pk)
    recipient = Recipient.objects.get(message=message)
    assert (recipient.state, recipient.last_code) == (RecipientState.DEFERRED, 451)
    assert recipient.next_attempt_at > timezone.now()
    assert recipient.attempts == 1
    assert deliver_message(message.pk) == 0  # not due yet

    mx.reply_data(None)
    Recipient.objects.filter(pk=recipient.pk).update(next_attempt_at=timezone.now())
    deliver_message(message.pk)
    assert states(message)["alice@dest.test"][0] == "delivered"
    types = list(Event.objects.filter(recipient=recipient).values_list("type", flat=True))
    assert types == ["accepted", "deferred", "delivered"]


def test_dns_outcomes(verified_domain, dns_server, mx):
    dns_server.set_zone("nullmx.test", ["nullmx.test. IN MX 0 ."])
    dns_server.set_zone("broken.test", ["x.broken.test. IN A 127.0.0.9"])
    dns_server.servfail("broken.test")
    dns_server.set_zone("implicit.test", [f"implicit.test. IN A {MX_ADDRESS}"])
    message = send(
        verified_domain,
        "a@nullmx.test",
        "b@nxdomain.dest.test",
        "c@broken.test",
        "d@implicit.test",
    )
    deliver_message(message.pk)
    assert states(message) == {
        "a@nullmx.test": ("bounced", 556, "5.1.10"),
        "b@nxdomain.dest.test": ("bounced", 550, "5.1.2"),
        "c@broken.test": ("deferred", 451, "4.4.3"),
        "d@implicit.test": ("delivered", 250, "2.0.0"),
    }


def test_next_mx_is_tried_when_the_first_is_down(verified_domain, dns_server, mx):
    backup = SmtpReceiver("127.0.0.3", settings.SENDMSG_RELAY_PORT, hostname="mx2.two.test")
    backup.start()
    try:
        dns_server.set_zone(
            "two.test",
            [
                "two.test. IN MX 10 mx1.two.test.",
                "two.test. IN MX 20 mx2.two.test.",
                "mx1.two.test. IN A 127.0.0.4",  # nothing listens there
                "mx2.two.test. IN A 127.0.0.3",
            ],
        )
        message = send(verified_domain, "zoe@two.test")
        deliver_message(message.pk)
        recipient = Recipient.objects.get(message=message)
        assert (recipient.state, recipient.mx_host) == ("delivered", "mx2.two.test")
        assert backup.wait_for(1)[0].rcpt_tos == ["zoe@two.test"]
    finally:
        backup.stop()


def test_greeting_refusal_and_dropped_connection_defer(verified_domain, mx):
    mx.reply_greeting("421 4.3.2 Too busy")
    message = send(verified_domain, "alice@dest.test")
    deliver_message(message.pk)
    assert states(message)["alice@dest.test"][:2] == ("deferred", 421)

    mx.reply_greeting(None)
    mx.drop_in_data(True)
    message = send(verified_domain, "bob@dest.test")
    deliver_message(message.pk)
    assert states(message)["bob@dest.test"][:2] == ("deferred", 451)
    assert mx.messages == []


def test_expired_lease_is_taken_over_and_a_lost_lease_records_nothing(verified_domain, mx):
    message = send(verified_domain, "alice@dest.test")
    token, [claimed] = Recipient.objects.filter(message=message).claim(lease_seconds=60)
    assert deliver_message(message.pk) == 0  # leased to someone else: not touched
    Recipient.objects.filter(pk=claimed.pk).update(lease_until=timezone.now())
    assert deliver_message(message.pk) == 1  # the lease ran out: picked up again
    assert states(message)["alice@dest.test"][0] == "delivered"
    # the first worker comes back late: its outcome is not recorded over the real one
    from delivery.models import EventType
    from delivery.replies import SmtpReply

    assert not claimed.finish(
        state=RecipientState.BOUNCED,
        reply=SmtpReply(550, "5.0.0", "late"),
        lease_token=token,
        event=EventType.BOUNCED,
    )
    assert states(message)["alice@dest.test"][0] == "delivered"


def test_a_deliver_task_hands_on_what_it_has_no_time_left_for(verified_domain, mx, settings):
    """A task starts a message only while a worst-case SMTP transaction still fits in
    django-q2's timeout; the messages it has no time for go to a new task."""
    messages = [send(verified_domain, f"r{i}@dest.test") for i in range(3)]
    # A timeout of exactly one worst-case transaction leaves time to start one message.
    settings.Q_CLUSTER = {**settings.Q_CLUSTER, "timeout": worst_transaction_seconds()}
    assert tasks.deliver([m.pk for m in messages]) == 1
    assert [m.rcpt_tos for m in mx.messages] == [["r0@dest.test"]]
    (queued,) = OrmQ.objects.all()
    assert queued.task["func"] == "delivery.tasks.deliver"
    assert queued.task["args"] == ([messages[1].pk, messages[2].pk],)
    # That task delivers the rest (with a normal timeout, in one go).
    settings.Q_CLUSTER = {**settings.Q_CLUSTER, "timeout": 10 * worst_transaction_seconds()}
    assert tasks.deliver(*queued.task["args"]) == 2
    assert sorted(a for m in mx.messages for a in m.rcpt_tos) == [
        "r0@dest.test",
        "r1@dest.test",
        "r2@dest.test",
    ]


@pytest.mark.skipif(
    settings.DATABASES["default"]["ENGINE"].endswith("sqlite3"),
    reason="FOR UPDATE SKIP LOCKED is PostgreSQL's; SQLite has one writer at a time",
)
@pytest.mark.django_db(transaction=True)
def test_a_claim_passes_over_rows_another_worker_is_claiming(verified_domain):
    """On PostgreSQL a worker claiming recipients skips the rows another holds locked,
    instead of waiting for that worker's transaction."""
    import psycopg

    from tests.conftest import database_url

    message = send(verified_domain, "a@dest.test", "b@dest.test")
    busy = Recipient.objects.get(address="a@dest.test")
    url = database_url().replace("postgres://", "postgresql://")
    with psycopg.connect(url) as other:
        other.execute(  # the other worker, mid-claim: the row is locked
            f"SELECT id FROM {Recipient._meta.db_table} WHERE id = %s FOR UPDATE", [busy.pk]
        )
        started = time.monotonic()
        _, claimed = Recipient.objects.filter(message=message).claim(lease_seconds=60)
        assert time.monotonic() - started < 1  # did not wait for the lock
        other.rollback()
    assert [r.address for r in claimed] == ["b@dest.test"]
    busy.refresh_from_db()
    assert busy.state == RecipientState.QUEUED  # left for whoever holds it, or the next run


def test_retries_back_off_as_postfix_does_then_the_recipient_expires(verified_domain, mx):
    """5 minutes, doubling, at most 4,000 s between attempts; after 5 days queued, the
    next failure expires the recipient (a final state with its event)."""
    mx.reply_data("451 4.3.0 Try again later")
    with time_machine.travel(timezone.now(), tick=False) as clock:
        message = send(verified_domain, "alice@dest.test")
        waits = []
        for _ in range(6):
            assert deliver_message(message.pk) == 1
            recipient = Recipient.objects.get(message=message)
            assert recipient.state == RecipientState.DEFERRED
            waits.append((recipient.next_attempt_at - timezone.now()).total_seconds())
            clock.move_to(recipient.next_attempt_at)
        assert waits == [300, 600, 1200, 2400, 4000, 4000]
        clock.move_to(message.created_at + timedelta(days=5))
        assert deliver_message(message.pk) == 1
    recipient = Recipient.objects.get(message=message)
    assert (recipient.state, recipient.attempts) == (RecipientState.EXPIRED, 7)
    types = list(Event.objects.filter(recipient=recipient).values_list("type", flat=True))
    assert types == ["accepted", *["deferred"] * 6, "expired"]
    assert len(mx.messages) == 0  # the receiver never took it


def test_recipients_at_one_domain_share_one_transaction(verified_domain, mx):
    mx.reply_rcpt("bob@dest.test", "452 4.2.2 Mailbox full")
    message = send(verified_domain, "alice@dest.test", "bob@dest.test", "carol@dest.test")
    assert deliver_message(message.pk) == 3
    assert states(message) == {
        "alice@dest.test": ("delivered", 250, "2.0.0"),
        "bob@dest.test": ("deferred", 452, "4.2.2"),
        "carol@dest.test": ("delivered", 250, "2.0.0"),
    }
    [received] = mx.messages
    assert received.rcpt_tos == ["alice@dest.test", "carol@dest.test"]
    # one return path for the transaction: the message's shared VERP address
    assert received.mail_from.startswith("m-") and received.mail_from.endswith("@rp.acme.test")
    assert received.data.count(b"DKIM-Signature:") == 1  # signed once, sent once

    # the retry goes to bob alone, with his own VERP address
    Recipient.objects.filter(address="bob@dest.test").update(next_attempt_at=timezone.now())
    mx.reply_rcpt("bob@dest.test", None)
    assert deliver_message(message.pk) == 1
    assert states(message)["bob@dest.test"][0] == "delivered"
    assert mx.messages[1].rcpt_tos == ["bob@dest.test"]
    assert mx.messages[1].mail_from.startswith("b-")


def test_consecutive_messages_share_one_connection(verified_domain, mx):
    messages = [send(verified_domain, f"user{i}@dest.test") for i in range(3)]
    assert tasks.deliver([m.pk for m in messages]) == 3
    assert len(mx.messages) == 3
    assert mx.connections == 1
    assert all(
        states(m) == {f"user{i}@dest.test": ("delivered", 250, "2.0.0")}
        for i, m in enumerate(messages)
    )


def test_a_kept_connection_the_server_closed_is_replaced(verified_domain, mx, monkeypatch):
    from delivery import relay

    first, second = send(verified_domain, "a@dest.test"), send(verified_domain, "b@dest.test")
    sign = relay.sign_message

    def sign_and_drop(message, keys=None):
        if message.pk == second.pk:
            mx.drop_connections()  # the server drops the kept connection before message 2
        return sign(message, keys)

    monkeypatch.setattr(relay, "sign_message", sign_and_drop)
    assert tasks.deliver([first.pk, second.pk]) == 2
    assert states(second) == {"b@dest.test": ("delivered", 250, "2.0.0")}
    assert mx.connections == 2
    assert [m.rcpt_tos for m in mx.messages] == [["a@dest.test"], ["b@dest.test"]]
    assert Event.objects.filter(type="deferred").count() == 0


def test_connections_are_not_kept_past_their_limit(verified_domain, mx, settings):
    settings.SENDMSG_RELAY_REUSE_LIMIT = 2
    messages = [send(verified_domain, f"user{i}@dest.test") for i in range(5)]
    assert tasks.deliver([m.pk for m in messages]) == 5
    assert len(mx.messages) == 5
    assert mx.connections == 3  # 2 + 2 + 1 transactions


def test_a_connection_dropped_mid_data_defers_and_the_retry_delivers_once(verified_domain, mx):
    mx.drop_in_data(True)
    message = send(verified_domain, "alice@dest.test")
    deliver_message(message.pk)
    assert states(message)["alice@dest.test"][:2] == ("deferred", 451)
    assert mx.messages == [] and mx.attempts == 1

    mx.drop_in_data(False)
    Recipient.objects.filter(message=message).update(next_attempt_at=timezone.now())
    deliver_message(message.pk)
    assert states(message)["alice@dest.test"] == ("delivered", 250, "2.0.0")
    assert [m.rcpt_tos for m in mx.messages] == [["alice@dest.test"]]
    recipient = Recipient.objects.get(message=message)
    assert list(Event.objects.filter(recipient=recipient).values_list("type", flat=True)) == [
        "accepted",
        "deferred",
        "delivered",
    ]


def test_a_receiver_that_never_answers_the_data_times_out_and_defers(verified_domain, mx, settings):
    settings.SENDMSG_RELAY_TIMEOUT = 2
    mx.hang_after(".")
    message = send(verified_domain, "alice@dest.test")
    started = time.monotonic()
    deliver_message(message.pk)
    assert time.monotonic() - started < 10
    recipient = Recipient.objects.get(message=message)
    assert (recipient.state, recipient.last_code) == ("deferred", 451)
    assert "timed out" in recipient.last_text
    assert recipient.next_attempt_at > timezone.now()
    assert mx.messages == []  # the receiver never said it took it
