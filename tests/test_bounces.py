"""Bounces fed over SMTP to the real inbound MX: the recipient's state, the event with the
remote's reply and our classification, the suppression list. The reports are fixtures
in tests/fixtures/bounces/ (one a DSN captured from a real Postfix; see its README), sent
to the return path the relay really used for the message.

Also the classifier's table against real-world replies, the relay's own failures
classified the same way, and a bounce event going out as a webhook."""

from __future__ import annotations

import json
import re
import smtplib
import uuid
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from django.conf import settings
from django.utils import timezone

from delivery.accept import Sender, accept_message
from delivery.api.event_schema import EVENT_RELATED, EventSerializer
from delivery.models import Event, EventType, Message, Recipient, RecipientState, Source
from delivery.relay import deliver_message
from delivery.verp import group_verp_address, verp_address
from delivery.webhooks import tasks as webhook_tasks
from delivery.webhooks.endpoints import create_endpoint
from reputation.bounce_patterns import BounceClass, BounceReason, classify
from reputation.bounce_processing import suppress_after_bounce
from reputation.bounces import ReportKind, parse_report
from reputation.inbound import store_reports
from reputation.models import InboundReport, Suppression, SuppressionReason
from tests.conftest import wait_until
from tests.peers.http_receiver import HttpReceiver

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "bounces"
S = RecipientState


def report(name: str, *, return_path: str, rcpt: str) -> bytes:
    """A fixture with its placeholders filled in, with CRLF line ends as on the wire."""
    data = (FIXTURES / name).read_bytes()
    data = data.replace(b"{return_path}", return_path.encode()).replace(b"{rcpt}", rcpt.encode())
    return re.sub(rb"\r?\n", b"\r\n", data)


def feed(data: bytes, *, to: str, mail_from: str = "") -> tuple[int, int | None]:
    """Send a report to the inbound MX as a remote MTA would: (RCPT reply, DATA reply)."""
    with smtplib.SMTP("127.0.0.1", settings.SENDMSG_INBOUND_PORT, timeout=15) as client:
        client.ehlo("mx.dest.test")
        assert client.mail(mail_from)[0] == 250
        rcpt = client.rcpt(to)[0]
        if rcpt != 250:
            client.rset()
            return rcpt, None
        return rcpt, client.data(data)[0]


@dataclass
class Sent:
    message: Message
    recipients: dict[str, Recipient]
    return_path: str  # the envelope sender the recipients' MX got

    def recipient(self, address: str | None = None) -> Recipient:
        found = self.recipients[address] if address else next(iter(self.recipients.values()))
        found.refresh_from_db()
        return found


def accept(domain, *addresses: str) -> Message:
    return accept_message(
        sender=Sender(tenant_id=domain.tenant_id),
        mail_from="news@acme.test",
        recipients=list(addresses),
        raw=f"From: news@acme.test\r\nSubject: {uuid.uuid4()}\r\n\r\nSpring news.\r\n".encode(),
        source=Source.API,
    )


def sent_and_delivered(domain, mx, *addresses: str) -> Sent:
    """A message the platform's workers relayed to the MX, which said 250 for each."""
    message = accept(domain, *addresses)
    rows = {r.address: r for r in Recipient.objects.filter(message=message)}
    wait_until(
        lambda: all(r.state == S.DELIVERED for r in Recipient.objects.filter(message=message))
    )
    subject = message.subject.encode()
    [received] = [m for m in mx.messages if subject in m.data]
    return Sent(message, rows, received.mail_from)


def bounced_events(recipient: Recipient) -> list[Event]:
    return list(Event.objects.filter(recipient=recipient, type=EventType.BOUNCED))


# -- DSNs and bounces over SMTP --------------------------------------------------------------


@pytest.mark.peers
@pytest.mark.django_db(transaction=True)
def test_real_postfix_dsn_after_delivery_bounces_suppresses_and_stops_the_next_send(
    platform, verified_domain, mx
):
    """The DSN a real Postfix made for `550 5.1.1 user unknown` turns a delivered recipient
    into bounced (its own event, after the delivered one), hard, mailbox_unknown; the
    address goes on the tenant's suppression list, so the next message to it is not sent."""
    sent = sent_and_delivered(verified_domain, mx, "alice@dest.test")
    assert sent.return_path.startswith("b-") and sent.return_path.endswith("@rp.acme.test")
    data = report(
        "postfix-5.1.1-user-unknown.eml", return_path=sent.return_path, rcpt="alice@dest.test"
    )

    assert feed(data, to=sent.return_path) == (250, 250)

    alice = sent.recipient()
    assert (alice.state, alice.last_code, alice.last_enhanced) == (S.BOUNCED, 550, "5.1.1")
    assert [e.type for e in Event.objects.filter(recipient=alice)] == [
        "accepted",
        "delivered",
        "bounced",
    ]
    [bounce] = bounced_events(alice)
    assert (bounce.code, bounce.enhanced) == (550, "5.1.1")
    assert bounce.text == "<alice@dest.test>: user unknown"
    assert bounce.mx_host == "127.0.0.1"  # the Remote-MTA Postfix reported
    assert (bounce.bounce_class, bounce.reason) == ("hard", "mailbox_unknown")
    entry = Suppression.objects.get(tenant=verified_domain.tenant, address="alice@dest.test")
    assert entry.reason == SuppressionReason.HARD_BOUNCE and entry.source_event == bounce
    assert "mailbox_unknown" in entry.note
    stored = InboundReport.objects.get(recipient=alice)
    assert b"Final-Recipient: rfc822; alice@dest.test" in bytes(stored.raw)

    # The API and webhooks show why.
    shown = EventSerializer(Event.objects.select_related(*EVENT_RELATED).get(pk=bounce.pk)).data
    assert shown["reply"]["bounce_class"] == "hard"
    assert shown["reply"]["reason"] == "mailbox_unknown"

    mx.reset()
    again = accept(verified_domain, "Alice@dest.test")
    assert Recipient.objects.get(message=again).state == S.SUPPRESSED
    assert not [m for m in mx.messages if again.subject.encode() in m.data]


THIRD_PARTY = [
    # fixture, class, reason, code, enhanced, words of the diagnostic, Remote-MTA, suppressed
    ("exim-unrouteable-address.eml", "hard", "domain_unknown", None, "", "Unrouteable", "", True),
    ("exim-mailbox-full.eml", "soft", "mailbox_full", 552, "5.2.2", "over quota", "", False),
    (
        "gmail-no-such-user.eml",
        "hard",
        "mailbox_unknown",
        550,
        "5.1.1",
        "tried to reach does not exist. Please try double-checking",
        "gmail-smtp-in.l.google.com",
        True,
    ),
    (
        "microsoft-recipient-not-found.eml",
        "hard",
        "mailbox_unknown",
        550,
        "5.1.10",
        "RecipientNotFound",
        "",
        True,
    ),
    (
        "exchange-legacy-mailbox-disabled.eml",
        "hard",
        "mailbox_disabled",
        550,
        "5.2.1",
        "Mailbox disabled",
        "",
        True,
    ),
    (
        "qmail-failure-notice.eml",
        "hard",
        "mailbox_unknown",
        None,
        "5.1.1",
        "no mailbox here",
        "",
        True,
    ),
    (
        "postfix-spam-block.eml",
        "soft",
        "spam_block",
        554,
        "5.7.1",
        "blocked using zen.spamhaus.org",
        "filter.dest.test",
        False,
    ),
]


@pytest.mark.peers
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    "name, bounce_class, reason, code, enhanced, words, remote_mta, suppressed", THIRD_PARTY
)
def test_bounces_in_each_mta_style_bounce_the_recipient_classified(
    platform,
    verified_domain,
    mx,
    name,
    bounce_class,
    reason,
    code,
    enhanced,
    words,
    remote_mta,
    suppressed,
):
    """Exim, Gmail, Microsoft (today's NDR and a legacy text-only one), qmail and Postfix
    bounces each bounce the recipient with the remote's reply and our reading of it; only
    the hard ones suppress the address (a full mailbox or a spam block is not the
    address's fault)."""
    sent = sent_and_delivered(verified_domain, mx, "bob@dest.test")
    assert feed(
        report(name, return_path=sent.return_path, rcpt="bob@dest.test"), to=sent.return_path
    ) == (250, 250)

    bob = sent.recipient()
    assert bob.state == S.BOUNCED
    [bounce] = bounced_events(bob)
    assert (bounce.bounce_class, bounce.reason) == (bounce_class, reason)
    assert (bounce.code, bounce.enhanced, bounce.mx_host) == (code, enhanced, remote_mta)
    assert words in bounce.text and "\n" not in bounce.text
    assert (bob.last_code, bob.last_enhanced, bob.last_text) == (code, enhanced, bounce.text)
    entry = Suppression.objects.filter(tenant=verified_domain.tenant, address="bob@dest.test")
    if suppressed:
        assert [(e.reason, e.source_event_id) for e in entry] == [("hard_bounce", bounce.pk)]
    else:
        assert not entry.exists()


@pytest.mark.peers
@pytest.mark.django_db(transaction=True)
def test_a_delayed_dsn_records_a_deferral_and_nothing_else(platform, verified_domain, mx):
    """Postfix's real "Delayed Mail (still being retried)" notice: a deferred event with
    the 4.2.2 reply (soft, mailbox_full); the recipient stays delivered, nothing is
    suppressed."""
    sent = sent_and_delivered(verified_domain, mx, "carol@dest.test")
    data = report("postfix-4.2.2-delayed.eml", return_path=sent.return_path, rcpt="carol@dest.test")

    assert feed(data, to=sent.return_path) == (250, 250)

    carol = sent.recipient()
    assert carol.state == S.DELIVERED and (carol.last_code, carol.last_enhanced) == (250, "2.0.0")
    deferred = Event.objects.get(recipient=carol, type=EventType.DEFERRED)
    assert (deferred.code, deferred.enhanced, deferred.mx_host) == (452, "4.2.2", "127.0.0.1")
    assert (deferred.bounce_class, deferred.reason) == ("soft", "mailbox_full")
    assert not bounced_events(carol)
    assert not Suppression.objects.exists()


@pytest.mark.peers
@pytest.mark.django_db(transaction=True)
def test_a_dsn_for_a_recipient_waiting_for_a_retry_bounces_it(platform, verified_domain, mx):
    """A recipient the relay deferred (the MX answered 451; a relay in between may have
    taken the message earlier all the same) is bounced by a DSN, and not retried."""
    mx.reply_rcpt("dave@dest.test", "451 4.3.0 Try again later")
    message = accept(verified_domain, "dave@dest.test")
    dave = Recipient.objects.get(message=message)
    wait_until(lambda: Recipient.objects.get(pk=dave.pk).state == S.DEFERRED)
    return_path = verp_address(
        tenant_id=dave.tenant_id,
        message_id=message.pk,
        recipient_id=dave.pk,
        host=verified_domain.return_path_host,
    )

    data = report("postfix-5.1.1-user-unknown.eml", return_path=return_path, rcpt="dave@dest.test")
    assert feed(data, to=return_path) == (250, 250)

    dave.refresh_from_db()
    assert dave.state == S.BOUNCED and dave.lease_token == ""
    assert [e.type for e in Event.objects.filter(recipient=dave)] == [
        "accepted",
        "deferred",
        "bounced",
    ]
    assert Recipient.objects.filter(pk=dave.pk).due(timezone.now() + timedelta(days=1)).count() == 0


@pytest.mark.peers
@pytest.mark.django_db(transaction=True)
def test_the_same_dsn_twice_records_one_bounce(platform, verified_domain, mx):
    """An already bounced recipient records nothing new: one bounce event, one
    suppression, though both reports are kept."""
    sent = sent_and_delivered(verified_domain, mx, "erin@dest.test")
    data = report("gmail-no-such-user.eml", return_path=sent.return_path, rcpt="erin@dest.test")

    assert feed(data, to=sent.return_path) == (250, 250)
    assert feed(data, to=sent.return_path) == (250, 250)

    erin = sent.recipient()
    assert erin.state == S.BOUNCED and len(bounced_events(erin)) == 1
    assert Suppression.objects.filter(address="erin@dest.test").count() == 1
    assert InboundReport.objects.filter(recipient=erin).count() == 2


@pytest.mark.peers
@pytest.mark.django_db(transaction=True)
def test_a_forged_dsn_is_refused_at_rcpt_and_changes_nothing(platform, verified_domain, mx):
    """A DSN to our return path with one character of its signature changed (someone
    trying to get a tenant's recipients suppressed) is refused at RCPT."""
    sent = sent_and_delivered(verified_domain, mx, "frank@dest.test")
    local, _, host = sent.return_path.partition("@")
    forged = f"{local[:-1]}{'a' if local[-1] != 'a' else 'b'}@{host}"
    events = Event.objects.count()

    data = report("postfix-5.1.1-user-unknown.eml", return_path=forged, rcpt="frank@dest.test")
    assert feed(data, to=forged) == (550, None)

    assert sent.recipient().state == S.DELIVERED
    assert Event.objects.count() == events
    assert not Suppression.objects.exists() and not InboundReport.objects.exists()


@pytest.mark.peers
@pytest.mark.django_db(transaction=True)
def test_bounces_to_unknown_addresses_change_nothing(platform, verified_domain, mx):
    """A bounce to an address that is none of our return paths is refused at RCPT; one to
    a message's shared return path that names an address the message was not sent to is
    taken (250: a bounce is never bounced) but stored nowhere and changes nothing."""
    sent = sent_and_delivered(verified_domain, mx, "gina@dest.test", "hank@dest.test")
    assert sent.return_path.startswith("m-")  # one transaction for both: a shared path
    events = Event.objects.count()

    for address in (
        "postmaster@rp.acme.test",
        "bounces@acme.test",
        "b-1-aaaaaaaaaaaaaaaa@rp.acme.test",
    ):
        data = report("postfix-5.1.1-user-unknown.eml", return_path=address, rcpt="gina@dest.test")
        assert feed(data, to=address) == (550, None), address
    stranger = report(
        "postfix-5.1.1-user-unknown.eml", return_path=sent.return_path, rcpt="ivan@dest.test"
    )
    assert feed(stranger, to=sent.return_path) == (250, 250)

    assert {r.address: r.state for r in Recipient.objects.filter(message=sent.message)} == {
        "gina@dest.test": S.DELIVERED,
        "hank@dest.test": S.DELIVERED,
    }
    assert Event.objects.count() == events
    assert not Suppression.objects.exists() and not InboundReport.objects.exists()


@pytest.mark.peers
@pytest.mark.django_db(transaction=True)
def test_a_dsn_to_a_shared_return_path_bounces_only_the_recipient_it_names(
    platform, verified_domain, mx
):
    sent = sent_and_delivered(verified_domain, mx, "gina@dest.test", "hank@dest.test")
    assert sent.return_path == group_verp_address(
        tenant_id=sent.message.tenant_id,
        message_id=sent.message.pk,
        domain="dest.test",
        host="rp.acme.test",
    )
    data = report(
        "postfix-5.1.1-user-unknown.eml", return_path=sent.return_path, rcpt="hank@dest.test"
    )

    assert feed(data, to=sent.return_path) == (250, 250)

    assert sent.recipient("gina@dest.test").state == S.DELIVERED
    assert sent.recipient("hank@dest.test").state == S.BOUNCED
    assert list(Suppression.objects.values_list("address", flat=True)) == ["hank@dest.test"]


@pytest.mark.peers
@pytest.mark.django_db(transaction=True)
def test_a_bounce_of_a_bounce_changes_nothing(platform, verified_domain, mx):
    """A DSN whose returned message was itself a DSN (a tenant relayed a bounce through
    us) is about that notice, not about the recipient: kept, logged, nothing changed."""
    sent = sent_and_delivered(verified_domain, mx, "iris@dest.test")
    events = Event.objects.count()
    data = report("bounce-of-a-bounce.eml", return_path=sent.return_path, rcpt="iris@dest.test")

    assert feed(data, to=sent.return_path) == (250, 250)

    assert sent.recipient().state == S.DELIVERED
    assert Event.objects.count() == events
    assert not Suppression.objects.exists()
    assert InboundReport.objects.filter(recipient=sent.recipient()).count() == 1


@pytest.mark.peers
@pytest.mark.django_db(transaction=True)
def test_an_out_of_office_reply_to_the_return_path_is_not_a_bounce(platform, verified_domain, mx):
    sent = sent_and_delivered(verified_domain, mx, "jane@dest.test")
    events = Event.objects.count()
    data = report("out-of-office.eml", return_path=sent.return_path, rcpt="jane@dest.test")

    assert feed(data, to=sent.return_path, mail_from="jane@dest.test") == (250, 250)

    assert sent.recipient().state == S.DELIVERED
    assert Event.objects.count() == events and not Suppression.objects.exists()


@pytest.mark.peers
@pytest.mark.django_db(transaction=True)
def test_repeated_soft_bounces_suppress_the_address(platform, verified_domain, mx):
    """A full mailbox once is no reason to stop mailing an address; five soft bounces
    within seven days (the defaults) are. Delay notices about a message still being
    retried do not count."""
    assert settings.SENDMSG_SOFT_BOUNCE_SUPPRESS_COUNT == 5
    assert settings.SENDMSG_SOFT_BOUNCE_SUPPRESS_DAYS == 7
    first = sent_and_delivered(verified_domain, mx, "kim@dest.test")
    delayed = report(
        "postfix-4.2.2-delayed.eml", return_path=first.return_path, rcpt="kim@dest.test"
    )
    for _ in range(5):
        assert feed(delayed, to=first.return_path) == (250, 250)
    assert not Suppression.objects.exists()

    for number in range(1, 6):
        sent = first if number == 1 else sent_and_delivered(verified_domain, mx, "kim@dest.test")
        full = report("exim-mailbox-full.eml", return_path=sent.return_path, rcpt="kim@dest.test")
        assert feed(full, to=sent.return_path) == (250, 250)
        assert sent.recipient().state == S.BOUNCED
        if number < 5:
            assert not Suppression.objects.exists(), number

    [entry] = Suppression.objects.all()
    last = Event.objects.filter(type=EventType.BOUNCED).latest("pk")
    assert (entry.address, entry.reason, entry.source_event) == (
        "kim@dest.test",
        SuppressionReason.SOFT_BOUNCES,
        last,
    )
    assert entry.note.startswith("5 soft bounces in 7 days")
    again = accept(verified_domain, "kim@dest.test")
    assert Recipient.objects.get(message=again).state == S.SUPPRESSED


# -- in this process -----------------------------------------------------------------------


@pytest.mark.django_db
def test_soft_bounces_before_the_window_do_not_count(verified_domain, settings):
    settings.SENDMSG_SOFT_BOUNCE_SUPPRESS_COUNT = 2
    settings.SENDMSG_SOFT_BOUNCE_SUPPRESS_DAYS = 7

    def soft_bounce(days_ago: float) -> Event:
        recipient = Recipient.objects.get(message=accept(verified_domain, "lee@dest.test"))
        return Event.objects.create(
            tenant_id=recipient.tenant_id,
            message_id=recipient.message_id,
            recipient=recipient,
            type=EventType.BOUNCED,
            created_at=timezone.now() - timedelta(days=days_ago),
            code=552,
            enhanced="5.2.2",
            bounce_class="soft",
            reason="mailbox_full",
        )

    soft_bounce(8)
    assert suppress_after_bounce(event=soft_bounce(0), address="lee@dest.test") is None
    entry = suppress_after_bounce(event=soft_bounce(6.9), address="LEE@dest.test")
    assert entry is not None and entry.address == "lee@dest.test"
    assert entry.reason == SuppressionReason.SOFT_BOUNCES


@pytest.mark.django_db
def test_the_relays_own_failures_are_classified_like_dsns(verified_domain, mx):
    """The relay's synchronous 5xx and 4xx replies give the events the same reading a DSN
    with that reply would get."""
    mx.reply_rcpt("gone@dest.test", "550 5.1.1 <gone@dest.test>: Recipient address rejected")
    mx.reply_rcpt("full@dest.test", "452 4.2.2 Mailbox full")
    mx.reply_rcpt("spam@dest.test", "554 5.7.1 Message rejected as spam")
    message = accept(verified_domain, "gone@dest.test", "full@dest.test", "spam@dest.test")
    assert deliver_message(message.pk) == 3

    failures = {
        e.recipient.address: (e.type, e.bounce_class, e.reason)
        for e in Event.objects.filter(message=message).exclude(type=EventType.ACCEPTED)
    }
    assert failures == {
        "gone@dest.test": ("bounced", "hard", "mailbox_unknown"),
        "full@dest.test": ("deferred", "soft", "mailbox_full"),
        "spam@dest.test": ("bounced", "soft", "spam_block"),
    }


@pytest.mark.django_db
def test_a_bounce_event_goes_out_as_a_webhook_with_its_classification(
    verified_domain, mx, settings
):
    """A bounce a DSN recorded reaches the tenant's webhook like the relay's events do,
    with the reply and why."""
    settings.SENDMSG_WEBHOOK_ALLOW_PRIVATE = True
    message = accept(verified_domain, "mia@dest.test")
    assert deliver_message(message.pk) == 1
    mia = Recipient.objects.get(message=message)
    [received] = mx.messages
    with HttpReceiver("127.0.0.5") as receiver:
        create_endpoint(tenant=verified_domain.tenant, url=receiver.url(), event_types=["bounced"])
        data = report(
            "gmail-no-such-user.eml", return_path=received.mail_from, rcpt="mia@dest.test"
        )
        assert (
            store_reports(
                rcpt_tos=[received.mail_from], envelope_from="", peer="127.0.0.9", raw=data
            )
            == 1
        )

        assert webhook_tasks.dispatch() == 1
        [request] = receiver.wait_for(1)
    body = json.loads(request.body)
    assert body["type"] == "bounced" and body["recipient"]["id"] == mia.pk
    assert body["reply"]["code"] == 550 and body["reply"]["enhanced"] == "5.1.1"
    assert body["reply"]["mx_host"] == "gmail-smtp-in.l.google.com"
    assert (body["reply"]["bounce_class"], body["reply"]["reason"]) == ("hard", "mailbox_unknown")


@pytest.mark.parametrize("name", sorted(p.name for p in FIXTURES.glob("*.eml")))
def test_every_fixture_is_read_as_the_kind_it_is(name):
    data = report(name, return_path="b-1-aaaaaaaaaaaaaaaa@rp.acme.test", rcpt="pat@dest.test")
    found = parse_report(data)
    if name == "out-of-office.eml":
        assert found.kind == ReportKind.OTHER
    else:
        assert found.bounce_for("pat@dest.test") is not None
        assert found.about_a_bounce == (name == "bounce-of-a-bounce.eml")


def test_a_dsn_prefers_the_remote_code_to_the_reporters_summary():
    """Exim's DSNs say Status: 5.0.0 whatever the remote said; the remote's 5.1.1 in the
    Diagnostic-Code is what tells an unknown mailbox."""
    data = (
        b"From: Mail Delivery System <Mailer-Daemon@mx.dest.test>\r\n"
        b"Subject: Mail delivery failed: returning message to sender\r\n"
        b"Content-Type: multipart/report; report-type=delivery-status; boundary=x\r\n\r\n"
        b"--x\r\nContent-Type: text/plain\r\n\r\nThis message was created automatically.\r\n"
        b"--x\r\nContent-Type: message/delivery-status\r\n\r\n"
        b"Reporting-MTA: dns; mx.dest.test\r\n\r\n"
        b"Action: failed\r\nFinal-Recipient: rfc822;pat@dest.test\r\nStatus: 5.0.0\r\n"
        b"Remote-MTA: dns; mailstore.dest.test\r\n"
        b"Diagnostic-Code: smtp; 550 5.1.1 <pat@dest.test>: Recipient address rejected:\r\n"
        b" User unknown in virtual mailbox table\r\n\r\n--x--\r\n"
    )
    bounce = parse_report(data).bounce_for("pat@dest.test")
    assert (bounce.code, bounce.enhanced, bounce.remote_mta) == (
        550,
        "5.1.1",
        "mailstore.dest.test",
    )
    assert bounce.text.endswith("User unknown in virtual mailbox table")
    assert bounce.classification == classify(550, "5.1.1", bounce.text)
    assert bounce.classification.is_hard


def test_a_utf8_dsn_names_a_non_ascii_recipient():
    """RFC 6533's message/global-delivery-status, as sent about an SMTPUTF8 address."""
    data = (
        "From: MAILER-DAEMON@mx.dest.test\r\nSubject: Undelivered Mail Returned to Sender\r\n"
        "Content-Type: multipart/report; report-type=delivery-status; boundary=x\r\n\r\n"
        "--x\r\nContent-Type: message/global-delivery-status\r\n\r\n"
        "Reporting-MTA: dns; mx.dest.test\r\n\r\n"
        "Final-Recipient: utf-8; jürgen@dest.test\r\nAction: failed\r\nStatus: 5.1.1\r\n"
        "Diagnostic-Code: smtp;\r\n 550 5.1.1 <jürgen@dest.test>: user unknown\r\n\r\n"
        "--x--\r\n"
    ).encode()
    bounce = parse_report(data).bounce_for("Jürgen@dest.test")
    assert (bounce.code, bounce.enhanced, bounce.final_recipient) == (
        550,
        "5.1.1",
        "jürgen@dest.test",
    )
    assert bounce.classification.is_hard


def test_a_dsn_that_reports_success_is_no_bounce():
    data = (
        b"From: MAILER-DAEMON@mx.dest.test\r\nSubject: Successful Mail Delivery Report\r\n"
        b"Content-Type: multipart/report; report-type=delivery-status; boundary=x\r\n\r\n"
        b"--x\r\nContent-Type: text/plain\r\n\r\nYour message was delivered (mailbox full"
        b" warnings are not errors).\r\n"
        b"--x\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx\r\n\r\n"
        b"Final-Recipient: rfc822; pat@dest.test\r\nAction: relayed\r\nStatus: 2.0.0\r\n\r\n"
        b"--x--\r\n"
    )
    found = parse_report(data)
    assert found.kind == ReportKind.OTHER and found.bounce_for("pat@dest.test") is None


# -- the classifier's table ----------------------------------------------------------------

H, SO = BounceClass.HARD, BounceClass.SOFT
R = BounceReason
REPLIES = [
    # Postfix, Exim, Sendmail, qmail
    (
        550,
        "5.1.1",
        "<a@b>: Recipient address rejected: User unknown in virtual mailbox table",
        H,
        R.MAILBOX_UNKNOWN,
    ),
    (
        550,
        "5.1.1",
        "<a@b>: Recipient address rejected: User unknown in local recipient table",
        H,
        R.MAILBOX_UNKNOWN,
    ),
    (550, "5.1.1", "<a@b>... User unknown", H, R.MAILBOX_UNKNOWN),
    (550, "", "Unrouteable address", H, R.DOMAIN_UNKNOWN),
    (None, "", "Unrouteable address", H, R.DOMAIN_UNKNOWN),
    (550, "", "No Such User Here", H, R.MAILBOX_UNKNOWN),
    (None, "5.1.1", "Sorry, no mailbox here by that name. (#5.1.1)", H, R.MAILBOX_UNKNOWN),
    (554, "5.7.1", "<a@b>: Relay access denied", H, R.RELAY_DENIED),
    (550, "", "relay not permitted", H, R.RELAY_DENIED),
    (550, "", "Administrative prohibition", SO, R.POLICY_BLOCK),
    (
        554,
        "5.7.1",
        "Service unavailable; Client host [192.0.2.1] blocked using zen.spamhaus.org",
        SO,
        R.SPAM_BLOCK,
    ),
    (550, "5.7.1", "Message rejected as spam by Content Filtering.", SO, R.SPAM_BLOCK),
    (552, "5.3.4", "Message size exceeds fixed limit", SO, R.MESSAGE_TOO_LARGE),
    (552, "", "Message size exceeds maximum permitted", SO, R.MESSAGE_TOO_LARGE),
    (552, "5.2.2", "<a@b>: Mailbox full: user is over quota", SO, R.MAILBOX_FULL),
    (452, "4.2.2", "Mailbox full", SO, R.MAILBOX_FULL),
    (None, "", "retry timeout exceeded", SO, R.TEMPORARY_FAILURE),
    (
        450,
        "4.2.0",
        "<a@b>: Recipient address rejected: Greylisted, see https://postgrey",
        SO,
        R.TEMPORARY_FAILURE,
    ),
    (451, "4.7.1", "Greylisting in action, please come back later", SO, R.TEMPORARY_FAILURE),
    (
        450,
        "4.1.1",
        "<a@b>: Recipient address rejected: User unknown in local recipient table",
        SO,
        R.MAILBOX_UNKNOWN,
    ),
    (
        None,
        "5.4.4",
        "Host or domain name not found. Name service error for name=dest.test type=A: "
        "Host not found",
        H,
        R.DOMAIN_UNKNOWN,
    ),
    (
        None,
        "4.4.3",
        "Host or domain name not found. Name service error for name=dest.test type=MX: "
        "Host not found, try again",
        SO,
        R.DNS_FAILURE,
    ),
    (550, "5.1.0", "<x@acme.test>: Sender address rejected: Domain not found", SO, R.POLICY_BLOCK),
    # Gmail
    (
        550,
        "5.1.1",
        "The email account that you tried to reach does not exist. Please try "
        "double-checking the recipient's email address",
        H,
        R.MAILBOX_UNKNOWN,
    ),
    (550, "5.2.1", "The email account that you tried to reach is disabled.", H, R.MAILBOX_DISABLED),
    (452, "4.2.2", "The email account that you tried to reach is over quota.", SO, R.MAILBOX_FULL),
    (
        450,
        "4.2.1",
        "The user you are trying to contact is receiving mail at a rate that prevents "
        "additional messages from being delivered.",
        SO,
        R.TEMPORARY_FAILURE,
    ),
    (
        550,
        "5.7.26",
        "Unauthenticated email from acme.test is not accepted due to domain's DMARC policy.",
        SO,
        R.POLICY_BLOCK,
    ),
    (
        550,
        "5.7.1",
        "Our system has detected that this message is likely unsolicited mail.",
        SO,
        R.SPAM_BLOCK,
    ),
    (
        421,
        "4.7.28",
        "Our system has detected an unusual rate of unsolicited mail originating from "
        "your IP address.",
        SO,
        R.SPAM_BLOCK,
    ),
    (
        421,
        "4.7.0",
        "This message does not have authentication information or fails to pass "
        "authentication checks.",
        SO,
        R.POLICY_BLOCK,
    ),
    (552, "5.2.3", "Your message exceeded Google's message size limits.", SO, R.MESSAGE_TOO_LARGE),
    # Microsoft
    (
        550,
        "5.1.10",
        "RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup",
        H,
        R.MAILBOX_UNKNOWN,
    ),
    (
        550,
        "5.4.1",
        "Recipient address rejected: Access denied. AS(201806281)",
        H,
        R.MAILBOX_UNKNOWN,
    ),
    (550, "5.7.1", "Unable to relay", H, R.RELAY_DENIED),
    (550, "5.7.606", "Access denied, banned sending IP [192.0.2.1].", SO, R.SPAM_BLOCK),
    (
        550,
        "5.7.708",
        "Service unavailable. Access denied, traffic not accepted from this IP.",
        SO,
        R.POLICY_BLOCK,
    ),
    (
        554,
        "5.2.2",
        "mailbox full; STOREDRV.Deliver.Exception:QuotaExceededException",
        SO,
        R.MAILBOX_FULL,
    ),
    (550, "5.5.0", "Requested action not taken: mailbox unavailable", H, R.MAILBOX_UNKNOWN),
    (550, "", "Mailbox disabled for this recipient", H, R.MAILBOX_DISABLED),
    # Yahoo, AOL and others
    (
        554,
        "",
        "delivery error: dd This user doesn't have a yahoo.com account (a@yahoo.com) [0]",
        H,
        R.MAILBOX_UNKNOWN,
    ),
    (
        553,
        "5.7.1",
        "[BL21] Connections will not be accepted from 192.0.2.1, because the ip is in "
        "Spamhaus's list",
        SO,
        R.SPAM_BLOCK,
    ),
    (
        421,
        "4.7.0",
        "[TSS04] Messages from 192.0.2.1 temporarily deferred due to unexpected volume or "
        "user complaints",
        SO,
        R.TEMPORARY_FAILURE,
    ),
    (
        550,
        "",
        "Requested action not taken: mailbox unavailable (account inactive)",
        H,
        R.MAILBOX_DISABLED,
    ),
    (550, "", "5.1.1 Address rejected: invalid recipient", H, R.MAILBOX_UNKNOWN),
    (550, "", "This mailbox has been suspended", H, R.MAILBOX_DISABLED),
    # the relay's own replies (delivery/mx.py, relay.py, smtp_transaction.py, tls_policy.py)
    (550, "5.1.2", "Domain nowhere.test does not exist", H, R.DOMAIN_UNKNOWN),
    (556, "5.1.10", "Domain dest.test accepts no mail (null MX)", H, R.DOMAIN_UNKNOWN),
    (451, "4.4.3", "DNS lookup of MX for dest.test failed: timeout", SO, R.DNS_FAILURE),
    (451, "4.4.1", "No MX host of dest.test could be reached", SO, R.TEMPORARY_FAILURE),
    (451, "4.4.2", "Connection to mx.dest.test lost: reset", SO, R.TEMPORARY_FAILURE),
    (552, "5.3.4", "Message too big for mx.dest.test (1000 max)", SO, R.MESSAGE_TOO_LARGE),
    (
        553,
        "5.6.7",
        "The recipient's server does not accept non-ASCII addresses (no SMTPUTF8)",
        SO,
        R.UNKNOWN,
    ),
    (451, "4.7.4", "mx.dest.test does not offer STARTTLS; required by MTA-STS", SO, R.POLICY_BLOCK),
    # nothing to go on
    (550, "", "Requested action not taken", SO, R.UNKNOWN),
    (554, "5.0.0", "Error", SO, R.UNKNOWN),
    (421, "", "closing connection", SO, R.UNKNOWN),
]


@pytest.mark.parametrize("code, enhanced, text, bounce_class, reason", REPLIES)
def test_the_classifier_reads_real_world_replies(code, enhanced, text, bounce_class, reason):
    found = classify(code, enhanced, text)
    assert (found.bounce_class, found.reason) == (bounce_class, reason)
