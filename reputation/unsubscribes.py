"""One-click unsubscribe (RFC 8058), the recipient's side: what a click does.

The token and the headers are delivery's (delivery/unsubscribe.py), and so is the
``unsubscribed`` event; the suppression list is ours. A click records the event once
per recipient and lists the address for the message's tenant (reason ``unsubscribe``,
that event as its source). Clicking again changes nothing; an address already listed
(by hand, by a bounce) keeps its entry as it is.
"""

from __future__ import annotations

import logging

from django.db import transaction

from delivery.models import EventType
from delivery.outcomes import record_once
from delivery.unsubscribe import find_recipient
from reputation.models import Suppression, SuppressionReason
from reputation.suppressions import add_after, listed_as
from sendmsg.write_turn import write_turn

log = logging.getLogger(__name__)

ONE_CLICK_NOTE = "One-click unsubscribe"


def unsubscribe(*, token: str) -> Suppression | None:
    """Unsubscribe the recipient ``token`` names; its tenant's entry for the address, or
    None (and nothing changed) when the token is malformed or forged."""
    recipient = find_recipient(token)
    if recipient is None:
        log.info("unsubscribe refused: no recipient for the token")
        return None
    with write_turn(), transaction.atomic():
        event, _ = record_once(recipient, EventType.UNSUBSCRIBED)
        added = add_after(
            event, recipient.address, reason=SuppressionReason.UNSUBSCRIBE, note=ONE_CLICK_NOTE
        )
        entry = added or Suppression.objects.get(
            tenant_id=recipient.tenant_id, address=listed_as(recipient.address)
        )
    return entry
