"""The inbound MX: accepts mail only for our own VERP bounce addresses and the platform's
complaint address, SENDMSG_COMPLAINT_ADDRESS (never a relay).

An ARF complaint (RFC 5965), to either, goes to reputation/complaints.py; any other report
to a VERP address is taken as a bounce. Each report is stored as received, then acted on
(reputation/bounce_processing.py) in the same transaction. The MX never sends mail: a
report it cannot use is answered 250 like any other and changes nothing, so no bounce ever
goes back to a bounce.
"""

from __future__ import annotations

import logging

from aiosmtpd.smtp import SMTP, Envelope, Session
from django.db import transaction

from delivery.accept import normalize_line_endings
from delivery.verp import find_recipient, is_return_path
from reputation.bounce_processing import process_report
from reputation.bounces import Report, ReportKind, parse_report
from reputation.complaints import is_complaint_address, read_complaint, store_complaint
from reputation.models import InboundReport
from sendmsg.log_context import message_context
from sendmsg.smtp import BaseHandler, in_thread
from sendmsg.write_turn import write_turn

log = logging.getLogger(__name__)

NO_SUCH_USER = (
    "550 5.1.1 No such mailbox here (this host takes only bounces and complaints for its own mail)"
)


def store_reports(*, rcpt_tos: list[str], envelope_from: str, peer: str, raw: bytes) -> int:
    """Store the report for each recipient its return paths name, and act on it; returns
    how many recipients it was stored for. A return path that names no single recipient
    (a shared one whose report names none of its recipients, or several) is logged and
    changes nothing. An ARF complaint is stored and acted on by
    reputation/complaints.py instead, whichever of our addresses it came to."""
    data = normalize_line_endings(raw)
    complaint = read_complaint(data, peer=peer)
    if complaint is not None:  # ARF, to the complaint address or a return path
        return store_complaint(
            complaint=complaint,
            rcpt_tos=rcpt_tos,
            envelope_from=envelope_from,
            peer=peer,
            data=data,
        )
    report = read_report(data, peer=peer)
    recipients = []
    for address in rcpt_tos:
        recipient = find_recipient(address, data)
        if recipient is None:
            log.info("inbound report from %s to %r names no single recipient", peer, address)
        else:
            recipients.append(recipient)
    with write_turn(), transaction.atomic():
        results = []
        for recipient in recipients:
            with message_context(recipient.message, [recipient.pk]):
                InboundReport.objects.create(
                    tenant_id=recipient.tenant_id,
                    recipient=recipient,
                    envelope_from=envelope_from[:320],
                    peer=peer[:64],
                    raw=data,
                )
                results.append((recipient, process_report(recipient=recipient, report=report)))
    for recipient, result in results:  # committed: now it is true
        with message_context(recipient.message, [recipient.pk]):
            log.info("inbound %s report from %s: %s", report.kind, peer, result)
    return len(recipients)


def read_report(data: bytes, *, peer: str) -> Report:
    """The report parsed; one we fail to read is kept (stored raw) but acted on as no
    bounce, rather than refused: a 4xx would only have the sender retry it for days."""
    try:
        return parse_report(data)
    except Exception:  # noqa: BLE001 - any parser failure means "not a bounce we can use"
        log.exception("inbound report from %s could not be read; stored, not acted on", peer)
        return Report(ReportKind.OTHER)


class InboundHandler(BaseHandler):
    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if not is_complaint_address(address) and not await in_thread(is_return_path)(address):
            log.info("inbound refused rcpt=%r peer=%s", address[:320], session.peer[0])
            return NO_SUCH_USER
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        count = await in_thread(store_reports)(
            rcpt_tos=list(envelope.rcpt_tos),
            envelope_from=envelope.mail_from or "",
            peer=str(session.peer[0]),
            raw=envelope.original_content or b"",
        )
        log.info("inbound report stored for %d recipients from %s", count, session.peer[0])
        return "250 2.0.0 OK"
