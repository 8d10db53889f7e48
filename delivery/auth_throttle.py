"""AUTH throttling: repeated failed logins are slowed down, then locked out for a while.

The policy (every threshold is a setting, see deploy/env.example):

- A failed AUTH counts against the client's IP address and against the username it tried.
  Counts are forgotten ``SENDMSG_AUTH_LOCKOUT_SECONDS`` after the last failure.
- From the ``SENDMSG_AUTH_SLOWDOWN_AFTER``-th failure on, the ``535 5.7.8`` answer waits:
  ``SENDMSG_AUTH_DELAY_SECONDS``, doubling with each further failure, at most
  ``MAX_DELAY_SECONDS``. The wait is an ``asyncio.sleep`` in that session only.
- At ``SENDMSG_AUTH_LOCKOUT_AFTER`` failures the address, or the username, is locked for
  ``SENDMSG_AUTH_LOCKOUT_SECONDS``. While it is locked, every AUTH for it is answered
  ``454 4.7.0`` (RFC 4954: temporary authentication failure) with the time left, and the
  password is not checked at all, not even a correct one: a lockout must not become a
  way to test passwords. We answer 454 rather than 535 because the condition is
  temporary: a client retries later instead of telling its user the password is wrong.
- A successful login clears its username's count, not its address's: someone holding
  one valid login must not be able to wipe, between guesses, the count of failures their
  address has run up against other usernames.

Every failure, the start of a lockout and every refusal during one are logged (username
truncated, password never).

State lives in Django's cache (``CACHES['default']``: files shared by the processes of one
host, or Redis shared by several hosts), never in the database, so an attack costs no
database write per attempt. Counting is a read and a write without a lock: two processes
racing may lose one increment, which only makes a throttle a little more lenient.

Everything here blocks on the cache: call it off the event loop.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from dataclasses import dataclass

from django.conf import settings
from django.core.cache import cache

log = logging.getLogger(__name__)

MAX_DELAY_SECONDS = 30.0
KEY_PREFIX = "sendmsg:auth"

LOCKED_OUT = "454 4.7.0 Too many failed logins; AUTH is locked for {minutes} more minute(s)"


@dataclass(frozen=True)
class Subject:
    """Who is trying to log in: the client's address and the username it gave."""

    address: str
    username: str

    def keys(self, kind: str) -> list[str]:
        # Usernames are whatever a client sends: hash them into a safe, bounded key.
        user = hashlib.sha256(self.username.encode("utf-8", "surrogateescape")).hexdigest()
        return [f"{KEY_PREFIX}:{kind}:ip:{self.address}", f"{KEY_PREFIX}:{kind}:user:{user[:32]}"]


def locked_reply(seconds: int) -> str:
    """The 454 reply for a lockout with ``seconds`` left."""
    return LOCKED_OUT.format(minutes=max(1, math.ceil(seconds / 60)))


def locked_for(subject: Subject) -> int:
    """Seconds left on a lockout of the address or the username; 0 when neither is locked."""
    now = time.time()
    until = cache.get_many(subject.keys("lock")).values()
    left = max((math.ceil(u - now) for u in until), default=0)
    if left > 0:
        log.warning(
            "AUTH refused during lockout user=%r peer=%s (%d s left)",
            subject.username[:64],
            subject.address,
            left,
        )
    return max(left, 0)


def record_failure(subject: Subject) -> float:
    """Count a failed login; start a lockout at the threshold.

    Returns how long to wait before answering it (seconds, 0 for none).
    """
    window = settings.SENDMSG_AUTH_LOCKOUT_SECONDS
    counted = []
    for key in subject.keys("fail"):
        failures = int(cache.get(key, 0)) + 1
        cache.set(key, failures, window)
        counted.append(failures)
    failures = max(counted)
    log.warning(
        "AUTH failed user=%r peer=%s failures=%d/%d",
        subject.username[:64],
        subject.address,
        failures,
        settings.SENDMSG_AUTH_LOCKOUT_AFTER,
    )
    if failures >= settings.SENDMSG_AUTH_LOCKOUT_AFTER:
        until = time.time() + window
        for key, count in zip(subject.keys("lock"), counted, strict=True):
            if count >= settings.SENDMSG_AUTH_LOCKOUT_AFTER:
                cache.set(key, until, window)
        log.warning(
            "AUTH lockout started user=%r peer=%s for %d s after %d failures",
            subject.username[:64],
            subject.address,
            window,
            failures,
        )
    return delay_after(failures)


def delay_after(failures: int) -> float:
    """The wait before answering the ``failures``-th failure in a row."""
    beyond = failures - settings.SENDMSG_AUTH_SLOWDOWN_AFTER
    if beyond < 0:
        return 0.0
    return min(settings.SENDMSG_AUTH_DELAY_SECONDS * 2**beyond, MAX_DELAY_SECONDS)


def record_success(subject: Subject) -> None:
    """A correct login: forget the failures counted against its username."""
    cache.delete(subject.keys("fail")[1])


def forget(subject: Subject) -> None:
    """Clear every count and lockout of ``subject`` (an operator unlocking a client)."""
    cache.delete_many(subject.keys("fail") + subject.keys("lock"))
