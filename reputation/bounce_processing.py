"""What an arrived bounce does: the recipient's state and event, and the suppression list.

The recipient's row and event are delivery's to write (delivery/outcomes.py records a
reported failure or delay); the suppression list is ours. The caller (the inbound MX,
reputation/inbound.py) holds one transaction around a report, so the stored report, the
bounce and the suppression commit together or not at all.
"""

from __future__ import annotations

import enum
import logging
from datetime import timedelta

from django.conf import settings

from delivery.models import Event, EventType, Recipient
from delivery.outcomes import ReportedReply, record_reported_delay, record_reported_failure
from reputation.bounce_patterns import BounceClass
from reputation.bounces import DELAYED, Report, ReportKind
from reputation.models import Suppression, SuppressionReason
from reputation.suppressions import add_after

log = logging.getLogger(__name__)


class ReportResult(enum.StrEnum):
    """What a report did to the recipient it was about (logged with it)."""

    BOUNCED = "bounced"
    DEFERRED = "deferred event recorded"
    UNCHANGED = "unchanged: the recipient is already bounced or was never sent"
    NOT_A_BOUNCE = "not a bounce (a complaint, an auto-reply, or unreadable)"
    ABOUT_A_BOUNCE = "ignored: it is about a bounce, not about the recipient"
    SILENT = "ignored: it reports no failure for this recipient"


def process_report(*, recipient: Recipient, report: Report) -> ReportResult:
    """Act on what ``report`` says about ``recipient`` (the one its signed return path
    names): bounce it (from waiting, sending or delivered), or record a delay; a hard
    bounce, or soft ones repeated, suppress the address for its tenant."""
    if report.kind == ReportKind.OTHER:
        return ReportResult.NOT_A_BOUNCE
    if report.about_a_bounce:
        return ReportResult.ABOUT_A_BOUNCE
    bounce = report.bounce_for(recipient.address)
    if bounce is None:
        return ReportResult.SILENT
    why = bounce.classification
    diagnostic = ReportedReply(
        code=bounce.code,
        enhanced=bounce.enhanced,
        text=bounce.text,
        remote_mta=bounce.remote_mta,
        bounce_class=why.bounce_class,
        reason=why.reason,
    )
    if bounce.action == DELAYED:
        delayed = record_reported_delay(recipient=recipient, diagnostic=diagnostic)
        return ReportResult.DEFERRED if delayed else ReportResult.UNCHANGED
    event = record_reported_failure(recipient=recipient, diagnostic=diagnostic)
    if event is None:
        return ReportResult.UNCHANGED
    suppress_after_bounce(event=event, address=recipient.address)
    return ReportResult.BOUNCED


def suppress_after_bounce(*, event: Event, address: str) -> Suppression | None:
    """Add ``address`` to the tenant's suppression list after the BOUNCED ``event``, if
    it calls for it: a hard bounce at once; a soft one when it makes
    SENDMSG_SOFT_BOUNCE_SUPPRESS_COUNT soft bounces for the address within
    SENDMSG_SOFT_BOUNCE_SUPPRESS_DAYS. An address already listed keeps its entry; returns
    the entry added, or None."""
    if event.bounce_class == BounceClass.HARD:
        reason, note = SuppressionReason.HARD_BOUNCE, _described(event)
    else:
        count = soft_bounces(event=event, address=address)
        wanted = settings.SENDMSG_SOFT_BOUNCE_SUPPRESS_COUNT
        if not wanted or count < wanted:
            return None
        days = settings.SENDMSG_SOFT_BOUNCE_SUPPRESS_DAYS
        reason = SuppressionReason.SOFT_BOUNCES
        note = f"{count} soft bounces in {days} days, the last: {_described(event)}"
    return add_after(event, address, reason=reason, note=note)


def soft_bounces(*, event: Event, address: str) -> int:
    """Soft bounces of the tenant's mail to ``address`` within the window before
    ``event``, that one included. Only bounces count (a recipient failed for good): the
    deferrals of one message being retried are not several failures."""
    since = event.created_at - timedelta(days=settings.SENDMSG_SOFT_BOUNCE_SUPPRESS_DAYS)
    return Event.objects.filter(
        tenant_id=event.tenant_id,
        type=EventType.BOUNCED,
        bounce_class=BounceClass.SOFT,
        created_at__gte=since,
        created_at__lte=event.created_at,
        recipient__address__iexact=address,
    ).count()


def _described(event: Event) -> str:
    reply = " ".join(str(part) for part in (event.code, event.enhanced) if part)
    return f"{event.reason} ({reply})" if reply else str(event.reason)
