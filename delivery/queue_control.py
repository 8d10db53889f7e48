"""Hands on the queue: an operator holds, releases, retries now or cancels; a tenant
cancels. One place for all of them, whatever the door (admin action, API).

Each action moves the recipients that are in a state it applies to, with one conditional
UPDATE per recipient, so a recipient a worker is sending right now (``sending``) or one
already final is left as it is: that attempt decides. Every move is a state change, and
so an event. The result says which recipients moved and which could not.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from delivery.models import Event, EventType, Recipient, RecipientState
from delivery.wake import wake_delivery

S = RecipientState


@dataclass(frozen=True)
class Move:
    sources: frozenset[RecipientState]
    target: RecipientState
    event: EventType | None  # None: not a change of state (a retry now stays deferred)
    wake: bool  # whether delivery should look at the recipients now


class Action(Enum):
    HOLD = Move(frozenset({S.QUEUED, S.DEFERRED}), S.HELD, EventType.HELD, False)
    RELEASE = Move(frozenset({S.HELD}), S.QUEUED, EventType.RELEASED, True)
    RETRY_NOW = Move(frozenset({S.DEFERRED}), S.DEFERRED, None, True)
    CANCEL = Move(
        frozenset({S.QUEUED, S.DEFERRED, S.HELD}), S.CANCELLED, EventType.CANCELLED, False
    )


@dataclass
class Outcome:
    moved: list[Recipient]
    left: list[Recipient]  # in a state the action does not apply to (as read just now)


def apply(action: Action, recipients: QuerySet[Recipient]) -> Outcome:
    """Apply ``action`` to ``recipients`` (already scoped to who may touch them)."""
    move: Move = action.value
    moved, left = [], []
    now = timezone.now()
    fields = {"state": move.target, "updated_at": now}
    if move.wake:
        fields["next_attempt_at"] = now
    for recipient in recipients.order_by("pk"):
        with transaction.atomic():
            changed = Recipient.objects.filter(pk=recipient.pk, state__in=move.sources).update(
                **fields
            )
            if changed and move.event is not None:
                Event.record(recipient=recipient, type=move.event)
        if changed:
            recipient.state = move.target
            moved.append(recipient)
        else:
            recipient.refresh_from_db(fields=["state"])
            left.append(recipient)
    if move.wake:
        for message_id in sorted({r.message_id for r in moved}):
            transaction.on_commit(lambda message_id=message_id: wake_delivery(message_id))
    return Outcome(moved, left)
