"""Scheduled every minute: count the new events, then recompute the levels they (or
time alone) move."""

from __future__ import annotations

import logging
import time

from reputation.levels import evaluate_all
from reputation.stats import count_events

log = logging.getLogger(__name__)

RUN_SECONDS = 45  # a run stops counting after this and leaves the rest to the next


def update_reputation() -> int:
    touched = count_events(deadline=time.monotonic() + RUN_SECONDS)
    changed = evaluate_all(touched)
    if changed:
        log.info("reputation: %d levels changed", changed)
    return changed
