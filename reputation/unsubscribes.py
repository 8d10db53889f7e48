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

from delivery.models import Event, EventType, Recipient
from delivery.unsubscribe import find_recipient, record_unsubscribed
from reputation.models import Suppression, SuppressionReason
from reputation.suppressions import listed_as
from sendmsg.write_turn import write_turn

log = logging.getLogger(__name__)


def unsubscribe(*, token: str) -> Suppression | None:
    """Unsubscribe the recipient ``token`` names; its tenant's entry for the address, or
    None (and nothing changed) when the token is malformed or forged."""
    recipient = find_recipient(token)
    if recipient is None:
        log.info("unsubscribe refused: no recipient for the token")
        return None
    with write_turn(), transaction.atomic():
        # Two clicks at once (a mailbox provider retrying) record one event: the second
        # waits here for the first to commit, then finds its event.
        list(Recipient.objects.select_for_update().filter(pk=recipient.pk).values_list("pk"))
        event = Event.objects.filter(recipient=recipient, type=EventType.UNSUBSCRIBED).first()
        if event is None:
            event = record_unsubscribed(recipient)
        address = listed_as(recipient.address)
        entry, created = Suppression.objects.get_or_create(
            tenant_id=recipient.tenant_id,
            address=address,
            defaults={
                "reason": SuppressionReason.UNSUBSCRIBE,
                "note": "One-click unsubscribe",
                "source_event": event,
                "created_at": event.created_at,
            },
        )
    if created:
        log.info(
            "suppression added: tenant=%s address=%s reason=unsubscribe by event %s",
            recipient.tenant_id,
            address,
            event.pk,
        )
    return entry
