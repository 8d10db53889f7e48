"""Spam complaints: ARF reports (RFC 5965) from feedback loops, mapped to one recipient.

A feedback loop sends a ``multipart/report; report-type=feedback-report``: words for
people, a ``message/feedback-report`` part (Feedback-Type, User-Agent, Original-Rcpt-To,
Original-Mail-From, Arrival-Date, Source-IP, Reported-Domain, ...) and the message
complained about, whole (``message/rfc822``) or only its header (``text/rfc822-headers``).
Receivers often redact the recipient's address in it (RFC 6590), so a report may not
name the recipient at all.

A complaint maps to exactly one recipient only through something we signed, so nobody
can get an address suppressed (or a tenant's complaint rate raised) by forging one:

1. the tracking header on every message we accept (``Sendmsg-Ref``, delivery/accept.py,
   DKIM-signed), whose MAC binds tenant and message; then the recipient among that
   message's recipients by Original-Rcpt-To, else the message's only recipient, else its
   only recipient at the reported recipient's domain;
2. else a VERP return path (delivery/verp.py): the Return-Path the receiver recorded on
   the original, or the address the report was sent to.

A Message-ID or an address alone can be written by anyone: a report that maps to no
recipient this way is logged and changes nothing.

What a complaint does (``record_complaint``): a COMPLAINED event for the recipient (its
state does not change: it was delivered) and the address on the tenant's suppression list
(reason complaint), once per recipient: the same report twice changes nothing the second
time. A ``not-spam`` report counts for nothing.
"""

from __future__ import annotations

import email
import email.message
import email.parser
import email.policy
import email.utils
import enum
import hmac
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from django.conf import settings
from django.db import transaction

from delivery.accept import REF_HEADER, tracking_ref
from delivery.models import EventType, Message, Recipient
from delivery.outcomes import record_once
from delivery.verp import find_recipient
from domains.names import InvalidDomain, domain_of
from reputation.models import InboundReport, SuppressionReason
from reputation.suppressions import add_after
from sendmsg.log_context import message_context
from sendmsg.write_turn import write_turn

log = logging.getLogger(__name__)

COUNTED_TYPES = frozenset({"abuse", "fraud", "virus", "other"})
"""Feedback-Types (RFC 5965 §7.3) that are complaints; ``not-spam`` is the opposite one,
and ``auth-failure`` (RFC 6591) is about authentication, not about the recipient."""
MAX_TEXT = 1000  # characters of the report's summary kept on the event
ORIGINAL_TYPES = ("message/rfc822", "message/global", "text/rfc822-headers", "text/global-headers")
# Microsoft's JMRP redacts To: in the original and names the recipient in this header.
RECIPIENT_HEADERS = ("X-HmXmrOriginalRecipient",)


@dataclass(frozen=True)
class Complaint:
    """What an ARF report says."""

    feedback_type: str
    user_agent: str = ""
    original_rcpt_to: tuple[str, ...] = ()  # with the recipient headers of the original
    original_mail_from: str = ""
    arrival_date: str = ""
    source_ip: str = ""
    reported_domain: str = ""
    refs: tuple[str, ...] = ()  # tracking headers of the original
    return_paths: tuple[str, ...] = ()  # Return-Path fields of the original
    message_id: str = ""

    @property
    def counts(self) -> bool:
        return self.feedback_type in COUNTED_TYPES

    def summary(self) -> str:
        """One line for the event: the type and who reported it, from where."""
        words = [f"{self.feedback_type} report"]
        if self.user_agent:
            words.append(f"by {self.user_agent}")
        if self.source_ip:
            words.append(f"(source IP {self.source_ip})")
        if self.arrival_date:
            words.append(f"for mail that arrived {self.arrival_date}")
        return " ".join(words)[:MAX_TEXT]


class ComplaintResult(enum.StrEnum):
    """What a complaint did to the recipient it was about (logged with it)."""

    COMPLAINED = "complaint recorded"
    DUPLICATE = "unchanged: a complaint about this recipient was recorded already"
    NOT_COUNTED = "ignored: the report is no complaint (not-spam, auth-failure)"


def is_complaint_address(address: str) -> bool:
    """Whether ``address`` is the platform's complaint address (SENDMSG_COMPLAINT_ADDRESS),
    where feedback loops are registered to send."""
    wanted = settings.SENDMSG_COMPLAINT_ADDRESS.strip().lower()
    return bool(wanted) and address.strip().strip("<>").lower() == wanted


# -- reading a report ----------------------------------------------------------------------


def parse_complaint(data: bytes) -> Complaint | None:
    """The complaint an ARF report (CRLF or LF line endings) makes, or None when ``data``
    is no ARF report (it has no message/feedback-report part of its own)."""
    message = email.message_from_bytes(data, policy=email.policy.compat32)
    parts = list(_parts(message))
    feedback = next((p for p in parts if p.get_content_type() == "message/feedback-report"), None)
    if feedback is None:
        return None
    fields = _fields(feedback)
    original = next((_headers_of(p) for p in parts if p.get_content_type() in ORIGINAL_TYPES), None)
    recipients = [_address(v) for v in fields.get_all("Original-Rcpt-To", [])]
    refs: list[str] = []
    return_paths: list[str] = []
    message_id = ""
    if original is not None:
        for name in RECIPIENT_HEADERS:
            recipients += [_address(v) for v in original.get_all(name, [])]
        refs = [_unfold(v) for v in original.get_all(REF_HEADER, [])]
        return_paths = [_address(v) for v in original.get_all("Return-Path", [])]
        message_id = _unfold(original.get("Message-ID", ""))
    return Complaint(
        feedback_type=(_unfold(fields.get("Feedback-Type", "")).lower().split() or [""])[0],
        user_agent=_unfold(fields.get("User-Agent", ""))[:200],
        original_rcpt_to=tuple(dict.fromkeys(a for a in recipients if a)),
        original_mail_from=_address(fields.get("Original-Mail-From", "")),
        arrival_date=_unfold(fields.get("Arrival-Date", fields.get("Received-Date", ""))),
        source_ip=_unfold(fields.get("Source-IP", "")),
        reported_domain=_unfold(fields.get("Reported-Domain", "")),
        refs=tuple(r for r in refs if r),
        return_paths=tuple(a for a in return_paths if a),
        message_id=message_id,
    )


def read_complaint(data: bytes, *, peer: str) -> Complaint | None:
    """``parse_complaint``, or None for a report we fail to read (logged): it is then
    taken as any other report, which changes nothing."""
    try:
        return parse_complaint(data)
    except Exception:  # noqa: BLE001 - any parser failure means "no complaint we can use"
        log.exception("inbound report from %s could not be read as a complaint", peer)
        return None


def _parts(message: email.message.Message) -> Iterator[email.message.Message]:
    """The report's own parts, never the parts of the message it carries."""
    yield message
    if message.is_multipart() and message.get_content_maintype() != "message":
        for part in message.get_payload():
            yield from _parts(part)


def _fields(part: email.message.Message) -> email.message.Message:
    """The fields of a message/feedback-report part (the library reads them as the
    header of a message; a part it left as text is read again)."""
    payload = part.get_payload()
    if isinstance(payload, list):
        return payload[0] if payload else email.message.Message()
    return _header_parser().parsestr(_text(part).lstrip("\r\n"))


def _headers_of(part: email.message.Message) -> email.message.Message:
    """The header of the original message a report carries."""
    payload = part.get_payload()
    if isinstance(payload, list):
        return payload[0] if payload else email.message.Message()
    return _header_parser().parsestr(_text(part).lstrip("\r\n"))


def _header_parser() -> email.parser.HeaderParser:
    return email.parser.HeaderParser(policy=email.policy.compat32)


def _text(part: email.message.Message) -> str:
    data = part.get_payload(decode=True) or b""
    return data.decode(part.get_content_charset() or "utf-8", "replace").replace("\r\n", "\n")


def _address(value: str) -> str:
    """``<a@b>``, ``rfc822; a@b`` or ``Name <a@b>`` → ``a@b``."""
    value = _unfold(value)
    if ";" in value and value.lower().startswith(("rfc822", "utf-8")):
        value = value.partition(";")[2]
    return email.utils.parseaddr(value)[1] or value.strip("<> ")


def _unfold(value: object) -> str:
    return " ".join(str(value).split())


# -- mapping it to a recipient -------------------------------------------------------------


def find_complained_recipient(
    complaint: Complaint, *, arrived_at: Sequence[str] = ()
) -> Recipient | None:
    """The one recipient ``complaint`` is about, through a verified tracking header,
    else a VERP return path (the original's Return-Path, then ``arrived_at``: the
    addresses the report was sent to); None when nothing we signed names exactly one."""
    for ref in complaint.refs:
        message = message_by_ref(ref)
        if message is None:
            log.info("complaint with a tracking header that does not verify: %r", ref[:100])
            continue
        recipient = _recipient_of(message, complaint)
        if recipient is not None:
            recipient.message = message  # what the log needs, without the raw message
            return recipient
    # A shared return path (m-…) names its recipient through the report's addresses,
    # given to it in the form a DSN reports them.
    named = "".join(f"Original-Recipient: rfc822; {a}\r\n" for a in complaint.original_rcpt_to)
    for address in (*complaint.return_paths, *arrived_at):
        recipient = find_recipient(address, named.encode())
        if recipient is not None:
            return recipient
    return None


def message_by_ref(value: str) -> Message | None:
    """The message a tracking header value names, if its MAC is ours, else None."""
    queue_id, dot, _ = value.strip().rpartition(".")
    if not dot or not queue_id or len(queue_id) > 32:
        return None
    message = Message.objects.filter(queue_id=queue_id).only("pk", "tenant_id", "queue_id").first()
    if message is None:
        return None
    expected = tracking_ref(tenant_id=message.tenant_id, queue_id=message.queue_id)
    return message if hmac.compare_digest(expected.encode(), value.strip().encode()) else None


def _recipient_of(message: Message, complaint: Complaint) -> Recipient | None:
    """The recipient of ``message`` the report names; else its only recipient; else its
    only one at the reported recipient's domain (a redacted address keeps its domain)."""
    rows = list(Recipient.objects.filter(message_id=message.pk).order_by("pk"))
    wanted = {a.lower() for a in complaint.original_rcpt_to}
    named = [r for r in rows if r.address.lower() in wanted]
    if len(named) == 1:
        return named[0]
    if len(rows) == 1:
        return rows[0]
    domains = set()
    for address in complaint.original_rcpt_to:
        try:
            domains.add(domain_of(address))
        except InvalidDomain:
            continue
    at_domain = [r for r in rows if r.domain.lower() in domains]
    return at_domain[0] if len(at_domain) == 1 else None


# -- what a complaint does -----------------------------------------------------------------


def store_complaint(
    *, complaint: Complaint, rcpt_tos: list[str], envelope_from: str, peer: str, data: bytes
) -> int:
    """Store an ARF report for the recipient it maps to and act on it (one transaction);
    returns how many recipients it was stored for (0 or 1). ``data`` is CRLF."""
    arrived_at = [a for a in rcpt_tos if not is_complaint_address(a)]
    recipient = find_complained_recipient(complaint, arrived_at=arrived_at)
    if recipient is None:
        log.info(
            "complaint from %s (%s, Message-ID %r) maps to no recipient of ours; nothing done",
            peer,
            complaint.summary(),
            complaint.message_id[:200],
        )
        return 0
    with message_context(recipient.message, [recipient.pk]):
        with write_turn(), transaction.atomic():
            InboundReport.objects.create(
                tenant_id=recipient.tenant_id,
                recipient=recipient,
                envelope_from=envelope_from[:320],
                peer=peer[:64],
                raw=data,
            )
            result = record_complaint(recipient=recipient, complaint=complaint)
        log.info("inbound complaint from %s: %s", peer, result.value)
    return 1


def record_complaint(*, recipient: Recipient, complaint: Complaint) -> ComplaintResult:
    """A COMPLAINED event for ``recipient`` and its address on the tenant's suppression
    list, unless the report is no complaint or one was recorded for it already. The
    caller holds the transaction."""
    if not complaint.counts:
        return ComplaintResult.NOT_COUNTED
    event, new = record_once(
        recipient,
        EventType.COMPLAINED,
        text=complaint.summary(),
        reason=complaint.feedback_type[:24],
    )
    if not new:
        return ComplaintResult.DUPLICATE
    add_after(
        event, recipient.address, reason=SuppressionReason.COMPLAINT, note=complaint.summary()
    )
    return ComplaintResult.COMPLAINED
