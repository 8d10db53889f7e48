"""A graceful stop for the SMTP listeners.

On SIGTERM a listener process stops accepting connections (delivery/management/commands/
smtpd.py) and then drains this process's open sessions: a session waiting for its next
command is told ``421`` and closed at once; a session inside a mail transaction (after
MAIL, or receiving or storing DATA) runs to that transaction's reply, so a message being
sent is either stored and answered ``250`` or refused as it would be anyway, and is then
told ``421``. Sessions still open after the grace period are cut: nothing of theirs was
answered ``250``, so the client keeps the message and tries again (RFC 5321 §4.5.4.1).
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol

SHUTTING_DOWN = "421 4.3.2 {host} Service shutting down; please try again later"


class Session(Protocol):
    def end_if_idle(self) -> None: ...


_open: set[Session] = set()
_draining = False


def opened(session: Session) -> None:
    _open.add(session)


def closed(session: Session) -> None:
    _open.discard(session)


def draining() -> bool:
    return _draining


def drain() -> None:
    """Ask every open session of this process to end at its first idle moment."""
    global _draining
    _draining = True
    for session in list(_open):
        session.end_if_idle()


async def drained(timeout: float) -> int:
    """Wait until every session has ended, at most ``timeout`` seconds; returns how many
    are still open."""
    deadline = time.monotonic() + timeout
    while _open and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    return len(_open)
