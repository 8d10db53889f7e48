"""What an SMTP reply does to a recipient: delivered, bounced, deferred (when to retry)
or expired, written with its event.

A worker writes outcomes in batches (OutcomeBatch): one transaction, so one commit and
one turn at SQLite's write lock, for up to SENDMSG_OUTCOME_BATCH recipients, instead of
one each. The batch is written when full, before the worker waits on a new connection,
and when its task ends. Until then those recipients stay ``sending`` under their lease:
if the worker dies first, the lease runs out and they are sent again (at least once,
never marked delivered without a 2xx).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from delivery.models import (
    WAITING_STATES,
    Event,
    EventType,
    Outcome,
    Recipient,
    RecipientState,
    finish_all,
)
from delivery.replies import SmtpReply
from reputation.bounce_patterns import classify
from sendmsg.log_context import log_context, message_context
from sendmsg.write_turn import write_turn

log = logging.getLogger(__name__)

FAILED_STATES = {RecipientState.BOUNCED, RecipientState.EXPIRED}
"""Outcomes logged as warnings: the recipient will not get the message."""


def outcome_of(recipient: Recipient, reply: SmtpReply, *, mx_host: str) -> Outcome:
    """The recipient's next state (and event) after ``reply``; a failure's event says
    hard or soft and why, as a DSN's would (reputation/bounce_patterns.py)."""
    retry_at = None
    if reply.is_success:
        state, event = RecipientState.DELIVERED, EventType.DELIVERED
        return Outcome(recipient, state, reply, recipient.lease_token, event, None, mx_host)
    if reply.is_permanent:
        state, event = RecipientState.BOUNCED, EventType.BOUNCED
    else:
        retry_at = next_attempt_at(recipient)
        if retry_at is None:
            state, event = RecipientState.EXPIRED, EventType.EXPIRED
        else:
            state, event = RecipientState.DEFERRED, EventType.DEFERRED
    why = classify(reply.code, reply.enhanced, reply.text)
    return Outcome(
        recipient,
        state,
        reply,
        recipient.lease_token,
        event,
        retry_at,
        mx_host,
        bounce_class=why.bounce_class,
        reason=why.reason,
    )


class OutcomeBatch:
    def __init__(self, size: int | None = None) -> None:
        self.size = size or settings.SENDMSG_OUTCOME_BATCH
        self.pending: list[Outcome] = []

    def add(self, recipients: list[Recipient], reply: SmtpReply, *, mx_host: str) -> None:
        self.pending += [outcome_of(r, reply, mx_host=mx_host) for r in recipients]
        if len(self.pending) >= self.size:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        outcomes, self.pending = self.pending, []
        with batch_context([o.recipient for o in outcomes]):
            written = {id(o) for o in finish_all(outcomes)}
        for outcome in outcomes:
            recipient = outcome.recipient
            with message_context(recipient.message, [recipient.pk]):
                if id(outcome) not in written:
                    log.warning("lease lost before recording %s", outcome.reply)
                    continue
                level = logging.WARNING if outcome.state in FAILED_STATES else logging.INFO
                log.log(
                    level, "%s mx=%s reply=%s", outcome.state, outcome.mx_host or "-", outcome.reply
                )

    def __enter__(self) -> OutcomeBatch:
        return self

    def __exit__(self, *exc) -> None:
        self.flush()


def batch_context(recipients: list[Recipient]) -> log_context:
    """The log context of writing these recipients' outcomes together: their message's,
    or the ids of all their messages when there are several."""
    messages = {r.message_id: r.message for r in recipients}
    ids = [r.pk for r in recipients]
    if len(messages) == 1:
        return message_context(next(iter(messages.values())), ids)
    return log_context(
        queue_id=None,
        message_id=None,
        tenant_id=None,
        message_ids=list(messages),
        recipient_ids=ids,
    )


def retry_delay(attempts: int) -> timedelta:
    """The wait after ``attempts`` failed attempts (at least 1), as Postfix's defaults
    have it: SENDMSG_RETRY_FIRST_SECONDS (300), doubling, at most
    SENDMSG_RETRY_MAX_SECONDS (4,000)."""
    first, cap = settings.SENDMSG_RETRY_FIRST_SECONDS, settings.SENDMSG_RETRY_MAX_SECONDS
    return timedelta(seconds=min(cap, first * 2 ** min(max(attempts - 1, 0), 32)))


def next_attempt_at(recipient: Recipient):
    """When to retry after this failed attempt, or None when the message has been queued
    for its whole lifetime (SENDMSG_MESSAGE_EXPIRY_HOURS, default 5 days): then it
    expires. As with Postfix, a retry due after the lifetime is still made, once."""
    now = timezone.now()
    lifetime = timedelta(hours=settings.SENDMSG_MESSAGE_EXPIRY_HOURS)
    if now >= recipient.message.created_at + lifetime:
        return None
    return now + retry_delay(recipient.attempts + 1)


# -- what a report arriving later does (reputation/bounce_processing.py) -------------------


@dataclass(frozen=True)
class ReportedReply:
    """What a report says the remote side answered, and what that means."""

    code: int | None  # None when the report gives only an enhanced status
    enhanced: str
    text: str
    remote_mta: str
    bounce_class: str
    reason: str


REPORTABLE_STATES = WAITING_STATES | {RecipientState.SENDING, RecipientState.DELIVERED}
"""States a DSN can move a recipient out of: before its final reply, or after a relay
said 250 and failed it later (DESIGN invariant 2: the one move out of a final state)."""


def record_reported_failure(*, recipient: Recipient, diagnostic: ReportedReply) -> Event | None:
    """A DSN says delivery to ``recipient`` failed: it is bounced now, with its BOUNCED
    event. None, and nothing changed, when it is in no state a DSN can move it from
    (already bounced, or never sent).

    One conditional UPDATE, so two reports about one recipient record one bounce. A
    worker leasing the recipient right now loses its lease: its outcome is not written
    (it logs the lost lease), so the bounce stands.
    """
    now = timezone.now()
    fields = {
        "state": RecipientState.BOUNCED,
        "lease_token": "",
        "lease_until": None,
        "updated_at": now,
        "last_code": diagnostic.code,
        "last_enhanced": diagnostic.enhanced,
        "last_text": diagnostic.text,
    }
    if diagnostic.remote_mta:
        fields["mx_host"] = diagnostic.remote_mta
    with write_turn(), transaction.atomic():
        moved = Recipient.objects.filter(pk=recipient.pk, state__in=REPORTABLE_STATES).update(
            **fields
        )
        if not moved:
            return None
        return _reported_event(recipient, EventType.BOUNCED, diagnostic, now)


def record_reported_delay(*, recipient: Recipient, diagnostic: ReportedReply) -> Event | None:
    """A DSN says delivery to ``recipient`` is delayed further on (a relay is still
    retrying): a DEFERRED event, the state unchanged. None when the recipient is past
    caring (bounced, or never sent)."""
    if not Recipient.objects.filter(pk=recipient.pk, state__in=REPORTABLE_STATES).exists():
        return None
    return _reported_event(recipient, EventType.DEFERRED, diagnostic, timezone.now())


def record_once(
    recipient: Recipient, type: EventType, *, text: str = "", reason: str = ""
) -> tuple[Event, bool]:
    """The recipient's event of ``type``, recorded now if it has none, and whether it is
    new: a complaint or an unsubscribe counts once per recipient, however many reports
    or clicks come. Call in a transaction: the recipient's row is locked on PostgreSQL
    (SQLite's writers take turns), so two at once record one."""
    Recipient.objects.select_for_update().filter(pk=recipient.pk).values_list("pk").first()
    existing = Event.objects.filter(recipient_id=recipient.pk, type=type).first()
    if existing is not None:
        return existing, False
    event = Event.objects.create(
        tenant_id=recipient.tenant_id,
        message_id=recipient.message_id,
        recipient_id=recipient.pk,
        type=type,
        text=text,
        reason=reason,
    )
    return event, True


def _reported_event(recipient: Recipient, type: EventType, diagnostic: ReportedReply, now) -> Event:
    return Event.objects.create(
        tenant_id=recipient.tenant_id,
        message_id=recipient.message_id,
        recipient_id=recipient.pk,
        type=type,
        created_at=now,
        code=diagnostic.code,
        enhanced=diagnostic.enhanced,
        text=diagnostic.text,
        mx_host=diagnostic.remote_mta,
        bounce_class=diagnostic.bounce_class,
        reason=diagnostic.reason,
    )
