"""The inbound MX: accepts mail only for our own VERP bounce addresses (never a relay)."""

from __future__ import annotations

import logging

from aiosmtpd.smtp import SMTP, Envelope, Session
from django.db import transaction

from delivery.accept import normalize_line_endings
from delivery.verp import find_recipient, is_return_path
from reputation.models import InboundReport
from sendmsg.smtp import BaseHandler, in_thread

log = logging.getLogger(__name__)

NO_SUCH_USER = "550 5.1.1 No such mailbox here (this host takes only bounces for its own mail)"


def store_reports(*, rcpt_tos: list[str], envelope_from: str, peer: str, raw: bytes) -> int:
    data = normalize_line_endings(raw)
    recipients = [r for r in (find_recipient(a, data) for a in rcpt_tos) if r is not None]
    if len(recipients) < len(rcpt_tos):
        log.info("inbound report from %s names no single recipient for some addresses", peer)
    with transaction.atomic():
        for recipient in recipients:
            InboundReport.objects.create(
                tenant_id=recipient.tenant_id,
                recipient=recipient,
                envelope_from=envelope_from[:320],
                peer=peer[:64],
                raw=data,
            )
    return len(recipients)


class InboundHandler(BaseHandler):
    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if not await in_thread(is_return_path)(address):
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
