"""Reading the event stream in id order without skipping an event that is not visible yet.

Ids are not committed in order on PostgreSQL: id 11 may be visible while the
transaction that took id 10 is still open. So a reader stops before a missing id and
waits for it; once an id has been missing for ``SENDMSG_WEBHOOK_GAP_SECONDS`` (rolled
back, or deleted), it is passed over. On SQLite, one writer at a time, ids commit in
order and a missing id is one that was deleted.

Readers: the webhook outbox (delivery/webhooks/outbox.py) and the reputation counters
(reputation/stats.py), each keeping its own position in a WebhookOutbox row.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings


@dataclass
class Walk:
    rows: list  # the rows read, in id order, up to the first gap still waited for
    position: int  # the last id read (or passed over)
    gap_seen_at: datetime | None  # when the id after ``position`` was first missed
    waiting: bool  # stopped at a gap


def walk(
    rows: Sequence[Sequence], *, position: int, gap_seen_at: datetime | None, now: datetime
) -> Walk:
    """Take ``rows`` (each starting with its event id, ascending, all after ``position``)
    as far as no gap younger than the gap wait stands in the way."""
    gap_wait = timedelta(seconds=settings.SENDMSG_WEBHOOK_GAP_SECONDS)
    taken = []
    waiting = False
    for row in rows:
        if row[0] != position + 1:
            if gap_seen_at is None:
                gap_seen_at = now  # first seen: its transaction may still commit
            if now - gap_seen_at < gap_wait:
                waiting = True
                break
        position, gap_seen_at = row[0], None
        taken.append(row)
    return Walk(taken, position, gap_seen_at, waiting)
