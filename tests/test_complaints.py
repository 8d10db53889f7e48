"""Spam complaints (ARF, RFC 5965) fed over SMTP to the real inbound MX: the recipient they
map to through the signed tracking header or the VERP return path, its COMPLAINED event,
the suppression list, and the next send to it. The reports are fixtures in
tests/fixtures/complaints/ (see its README), carrying the message the platform really
relayed as the receiver got it.

Also the tracking header itself: on relayed mail, covered by DKIM, never the sender's."""

from __future__ import annotations

import re
import smtplib
from pathlib import Path

import pytest
from django.conf import settings

from delivery.accept import Sender, accept_message, tracking_ref
from delivery.models import Event, EventType, Message, Recipient, RecipientState, Source
from reputation.bounces import ReportKind, parse_report
from reputation.complaints import Complaint, find_complained_recipient, parse_complaint
from reputation.models import InboundReport, Suppression, SuppressionReason
from tests.peers.dkim_verifiers import dkim_signatures
from tests.test_bounces import accept, feed, sent_and_delivered

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "complaints"
S = RecipientState
REF = re.compile(rb"^Sendmsg-Ref: (\S+)\r\n", re.MULTILINE | re.IGNORECASE)


def received_copy(mx, message: Message) -> bytes:
    """The message as the recipients' MX stored it: a Return-Path added, as on delivery."""
    [received] = [m for m in mx.messages if message.subject.encode() in m.data]
    return f"Return-Path: <{received.mail_from}>\r\n".encode() + received.data


def arf(
    name: str,
    *,
    original: bytes,
    rcpt: str,
    return_path: str = "",
    feedback_type: str = "abuse",
    to: str = "",
) -> bytes:
    """A fixture filled in, with CRLF line ends as on the wire."""
    data = (FIXTURES / name).read_bytes()
    data = re.sub(rb"\r?\n", b"\r\n", data)
    headers = original.split(b"\r\n\r\n", 1)[0]
    to = to or settings.SENDMSG_COMPLAINT_ADDRESS
    for key, value in {
        b"{original}": original.rstrip(b"\r\n"),
        b"{original_headers}": headers,
        b"{rcpt}": rcpt.encode(),
        b"{return_path}": return_path.encode(),
        b"{feedback_type}": feedback_type.encode(),
        b"{complaint_address}": settings.SENDMSG_COMPLAINT_ADDRESS.encode(),
        b"{to}": to.encode(),
    }.items():
        data = data.replace(key, value)
    return data


def complaints(recipient: Recipient) -> list[Event]:
    return list(Event.objects.filter(recipient=recipient, type=EventType.COMPLAINED))


def nothing_changed(*recipients: Recipient) -> None:
    assert not Event.objects.filter(type=EventType.COMPLAINED).exists()
    assert not Suppression.objects.exists()
    assert not InboundReport.objects.exists()
    for recipient in recipients:
        recipient.refresh_from_db()
        assert recipient.state == S.DELIVERED


# -- over SMTP ---------------------------------------------------------------------------------


@pytest.mark.parametrize("fixture", ["yahoo-abuse.eml", "microsoft-jmrp.eml"])
@pytest.mark.peers
@pytest.mark.django_db(transaction=True)
def test_a_report_to_the_complaint_address_maps_through_the_tracking_header(
    fixture, platform, verified_domain, mx
):
    """A feedback loop's report to SENDMSG_COMPLAINT_ADDRESS maps through the original's
    signed tracking header: a COMPLAINED event for the recipient (still delivered), the
    address suppressed with reason complaint and that event as its source, the report
    stored; the next message to the address is not sent."""
    sent = sent_and_delivered(verified_domain, mx, "alice@dest.test")
    original = received_copy(mx, sent.message)
    data = arf(fixture, original=original, rcpt="alice@dest.test")
    assert settings.SENDMSG_COMPLAINT_ADDRESS == "fbl@rp.sendmsg.test"

    assert feed(data, to=settings.SENDMSG_COMPLAINT_ADDRESS, mail_from="") == (250, 250)

    alice = sent.recipient()
    assert alice.state == S.DELIVERED
    [event] = complaints(alice)
    assert event.reason == "abuse" and event.tenant_id == verified_domain.tenant_id
    assert "127.0.0.1" in event.text
    entry = Suppression.objects.get(tenant=verified_domain.tenant, address="alice@dest.test")
    assert entry.reason == SuppressionReason.COMPLAINT and entry.source_event == event
    assert InboundReport.objects.get(recipient=alice).tenant_id == verified_domain.tenant_id

    mx.reset()
    again = accept(verified_domain, "alice@dest.test")
    assert Recipient.objects.get(message=again).state == S.SUPPRESSED
    assert not [m for m in mx.messages if again.subject.encode() in m.data]


@pytest.mark.parametrize("route", ["sent to the return path", "return path in the original"])
@pytest.mark.peers
@pytest.mark.django_db(transaction=True)
def test_a_report_without_tracking_header_maps_through_the_verp_return_path(
    route, platform, verified_domain, mx
):
    """Without a tracking header (only the original's header returned, ours stripped), a
    report maps through the signed VERP token: the address the report was sent to, or the
    Return-Path the receiver recorded on the original."""
    sent = sent_and_delivered(verified_domain, mx, "alice@dest.test")
    original = REF.sub(b"", received_copy(mx, sent.message))
    assert b"Sendmsg-Ref" not in original
    if route == "sent to the return path":
        to = sent.return_path
        original = original.split(b"\r\n", 1)[1]  # no Return-Path either
    else:
        to = settings.SENDMSG_COMPLAINT_ADDRESS
    data = arf(
        "rfc5965-headers-only.eml",
        original=original,
        rcpt="alice@dest.test",
        return_path=sent.return_path,
        to=to,
    )

    assert feed(data, to=to) == (250, 250)

    alice = sent.recipient()
    assert len(complaints(alice)) == 1 and alice.state == S.DELIVERED
    entry = Suppression.objects.get(tenant=verified_domain.tenant, address="alice@dest.test")
    assert entry.reason == SuppressionReason.COMPLAINT


@pytest.mark.peers
@pytest.mark.django_db(transaction=True)
def test_a_forged_tracking_header_changes_nothing(platform, verified_domain, mx):
    """A tracking header whose MAC is not ours (one character changed), or that names a
    queue id we never had, maps to nothing: no event, no suppression, nothing stored.
    Neither does a Message-ID and an address alone."""
    sent = sent_and_delivered(verified_domain, mx, "alice@dest.test")
    original = received_copy(mx, sent.message).split(b"\r\n", 1)[1]  # no Return-Path
    ref = REF.search(original).group(1)
    forged_mac = ref[:-1] + (b"0" if ref[-1:] != b"0" else b"1")
    forged_queue_id = b"0123456789ABCDEF" + ref[ref.index(b".") :]
    for forged in (forged_mac, forged_queue_id, b""):
        copy = REF.sub(b"Sendmsg-Ref: " + forged + b"\r\n" if forged else b"", original)
        data = arf("yahoo-abuse.eml", original=copy, rcpt="alice@dest.test")
        assert feed(data, to=settings.SENDMSG_COMPLAINT_ADDRESS) == (250, 250)

    nothing_changed(sent.recipient())


@pytest.mark.peers
@pytest.mark.django_db(transaction=True)
def test_the_same_report_twice_changes_nothing_the_second_time(platform, verified_domain, mx):
    """A duplicate report (feedback loops resend) records no second complaint and leaves
    the suppression entry as the first made it."""
    sent = sent_and_delivered(verified_domain, mx, "alice@dest.test")
    data = arf("microsoft-jmrp.eml", original=received_copy(mx, sent.message), rcpt="")

    assert feed(data, to=settings.SENDMSG_COMPLAINT_ADDRESS) == (250, 250)
    alice = sent.recipient()
    [first] = complaints(alice)
    entry = Suppression.objects.get(tenant=verified_domain.tenant)

    assert feed(data, to=settings.SENDMSG_COMPLAINT_ADDRESS) == (250, 250)
    assert complaints(alice) == [first]
    assert list(Suppression.objects.all()) == [entry]
    assert Suppression.objects.get().source_event == first
    assert Event.objects.filter(type=EventType.COMPLAINED).count() == 1


@pytest.mark.peers
@pytest.mark.django_db(transaction=True)
def test_a_not_spam_report_changes_nothing(platform, verified_domain, mx):
    """Feedback-Type not-spam is the opposite of a complaint: no event, no suppression."""
    sent = sent_and_delivered(verified_domain, mx, "alice@dest.test")
    original = received_copy(mx, sent.message)
    data = arf(
        "yahoo-abuse.eml", original=original, rcpt="alice@dest.test", feedback_type="not-spam"
    )

    assert feed(data, to=settings.SENDMSG_COMPLAINT_ADDRESS) == (250, 250)

    alice = sent.recipient()
    assert complaints(alice) == [] and alice.state == S.DELIVERED
    assert not Suppression.objects.exists()


@pytest.mark.peers
@pytest.mark.django_db(transaction=True)
def test_a_message_to_several_recipients_maps_by_original_rcpt_to(platform, verified_domain, mx):
    """Alice and Bob got one message (one transaction, a shared return path): the report
    naming Bob in Original-Rcpt-To is Bob's complaint, not Alice's."""
    sent = sent_and_delivered(verified_domain, mx, "alice@dest.test", "bob@dest.test")
    assert sent.return_path.startswith("m-")
    data = arf("yahoo-abuse.eml", original=received_copy(mx, sent.message), rcpt="bob@dest.test")

    assert feed(data, to=settings.SENDMSG_COMPLAINT_ADDRESS) == (250, 250)

    assert len(complaints(sent.recipient("bob@dest.test"))) == 1
    assert complaints(sent.recipient("alice@dest.test")) == []
    assert list(Suppression.objects.values_list("address", flat=True)) == ["bob@dest.test"]


@pytest.mark.peers
@pytest.mark.django_db(transaction=True)
def test_the_inbound_mx_takes_the_complaint_address_and_still_no_other(platform, verified_domain):
    """The complaint address is accepted at RCPT (any case); other addresses at the
    platform's domains are still refused; a DSN to the complaint address changes nothing."""
    address = settings.SENDMSG_COMPLAINT_ADDRESS
    local, _, host = address.partition("@")
    with smtplib.SMTP("127.0.0.1", settings.SENDMSG_INBOUND_PORT, timeout=15) as client:
        client.ehlo("mx.dest.test")
        assert client.mail("")[0] == 250
        for refused in (f"abuse@{host}", f"{local}@acme.test", f"{local}x@{host}"):
            assert client.rcpt(refused)[0] == 550, refused
        assert client.rcpt(address.upper())[0] == 250
        dsn = (
            b"From: MAILER-DAEMON@mx.dest.test\r\nSubject: Undelivered Mail\r\n"
            b"Content-Type: text/plain\r\n\r\nalice@dest.test: 550 5.1.1 user unknown\r\n"
        )
        assert client.data(dsn)[0] == 250
    assert not InboundReport.objects.exists()
    assert not Event.objects.filter(type__in=[EventType.BOUNCED, EventType.COMPLAINED]).exists()


# -- the tracking header -----------------------------------------------------------------------


@pytest.mark.peers
@pytest.mark.django_db(transaction=True)
def test_relayed_mail_carries_the_tracking_header_under_dkim(platform, verified_domain, mx):
    """What the recipient's MX got has our tracking header (the message's queue id and
    MAC), and every DKIM signature covers it, oversigned so none can be added later (the
    autouse DKIM check verifies the signatures with two independent verifiers)."""
    sent = sent_and_delivered(verified_domain, mx, "alice@dest.test")
    data = received_copy(mx, sent.message)
    expected = tracking_ref(tenant_id=verified_domain.tenant_id, queue_id=sent.message.queue_id)
    assert REF.findall(data) == [expected.encode()]
    signatures = dkim_signatures(data)
    assert signatures
    for signature in signatures:
        unfolded = re.sub(rb"\s+", b"", signature.field)
        h = re.search(rb"[;:]h=([^;]+)", unfolded).group(1).lower()
        assert h.split(b":").count(b"sendmsg-ref") == 2


@pytest.mark.django_db
def test_a_senders_tracking_header_is_replaced(verified_domain):
    """A Sendmsg-Ref the sender wrote (folded or not, any case) is dropped: the stored
    message has ours alone, and a body line that looks like one is left alone."""
    raw = (
        b"sendmsg-ref: 0123456789ABCDEF.forged\r\nFrom: news@acme.test\r\n"
        b"Sendmsg-Ref:\r\n  FEDCBA9876543210.also-forged\r\nSubject: s\r\n\r\n"
        b"Sendmsg-Ref: in the body\r\n"
    )
    message = accept_message(
        sender=Sender(tenant_id=verified_domain.tenant_id),
        mail_from="news@acme.test",
        recipients=["alice@dest.test"],
        raw=raw,
        source=Source.API,
    )
    stored = bytes(message.raw)
    headers, body = stored.split(b"\r\n\r\n", 1)
    expected = tracking_ref(tenant_id=verified_domain.tenant_id, queue_id=message.queue_id)
    assert REF.findall(headers + b"\r\n") == [expected.encode()]
    assert b"forged" not in headers and b"From: news@acme.test\r\n" in headers
    assert body == b"Sendmsg-Ref: in the body\r\n"


@pytest.mark.django_db
def test_without_the_recipients_address_the_message_names_it_or_nothing(verified_domain):
    """A verified tracking header with a redacted recipient: the message's only
    recipient; else its only one at the reported domain; else (two there) nobody."""
    one = accept(verified_domain, "alice@dest.test")
    three = accept(verified_domain, "ann@dest.test", "bea@dest.test", "cy@other.test")
    ref_one = tracking_ref(tenant_id=one.tenant_id, queue_id=one.queue_id)
    ref_three = tracking_ref(tenant_id=three.tenant_id, queue_id=three.queue_id)

    def found(ref: str, *rcpts: str) -> str | None:
        complaint = Complaint("abuse", refs=(ref,), original_rcpt_to=rcpts)
        recipient = find_complained_recipient(complaint)
        return recipient.address if recipient else None

    assert found(ref_one) == "alice@dest.test"
    assert found(ref_one, "redacted@redacted.test") == "alice@dest.test"
    assert found(ref_three, "bea@dest.test") == "bea@dest.test"
    assert found(ref_three, "redacted@other.test") == "cy@other.test"
    assert found(ref_three, "redacted@dest.test") is None
    assert found(ref_three) is None
    assert found(ref_three[:-1] + ("0" if ref_three[-1] != "0" else "1"), "bea@dest.test") is None


@pytest.mark.parametrize("name", sorted(p.name for p in FIXTURES.glob("*.eml")))
def test_every_fixture_is_read_as_a_complaint_and_not_as_a_bounce(name):
    original = (
        b"Return-Path: <b-1-aaaaaaaaaaaaaaaa@rp.acme.test>\r\nSendmsg-Ref: ABC.def\r\n"
        b"From: news@acme.test\r\nSubject: s\r\n\r\nx\r\n"
    )
    data = arf(name, original=original, rcpt="alice@dest.test", return_path="x@rp.acme.test")
    complaint = parse_complaint(data)
    assert complaint is not None and complaint.counts
    assert complaint.feedback_type == "abuse"
    assert complaint.original_rcpt_to == ("alice@dest.test",)
    assert complaint.refs == ("ABC.def",)
    assert complaint.source_ip == "127.0.0.1"
    assert parse_report(data).kind == ReportKind.OTHER
    not_spam = arf(name, original=original, rcpt="a@dest.test", feedback_type="not-spam")
    assert not parse_complaint(not_spam).counts
