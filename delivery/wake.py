"""Delivery wake-ups, gathered: one django-q2 task for the messages of a short window.

A wake-up is a hint (DESIGN: the rows are the truth, the sweeper delivers whatever a
lost wake-up left behind), but enqueueing one costs a pickled, signed task row and a
commit of its own: as much as storing the message. So accepted messages are gathered
for ``SENDMSG_WAKE_WINDOW`` seconds and woken in tasks of up to ``SENDMSG_WAKE_CHUNK``
messages each, from a thread of this process, off the accept path.
"""

from __future__ import annotations

import atexit
import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future

from django.conf import settings
from django.db import connection, transaction

from sendmsg.log_context import log_context

log = logging.getLogger(__name__)


class Waker:
    """Gathers message ids and enqueues them from its own thread, a window at a time."""

    def __init__(self, *, window: float, chunk: int) -> None:
        self.window = window
        self.chunk = chunk
        self.submit: Callable[..., object] | None = None
        self._pending: list[int] = []
        self._in_hand = 0  # windows taken by the thread and not yet handed over
        self._ready = threading.Condition()
        self._thread: threading.Thread | None = None
        atexit.register(self.flush)  # a process that exits hands its window over

    def wake(self, message_id: int) -> None:
        with self._ready:
            self._pending.append(message_id)
            if self._thread is None or not self._thread.is_alive():
                # Started here, not at import: a forked process (gunicorn) gets its own.
                self._thread = threading.Thread(target=self._run, name="waker", daemon=True)
                self._thread.start()
            self._ready.notify()

    def flush(self, timeout: float = 5.0) -> None:
        """Hand over what is gathered now, from the caller's thread, and wait (at most
        ``timeout`` s) for a window the thread has in hand: called as a process stops."""
        with self._ready:
            pending, self._pending = self._pending, []
        if pending:
            self._hand_over(pending)
        with self._ready:
            self._ready.wait_for(lambda: not self._in_hand, timeout)

    def _run(self) -> None:
        while True:
            with self._ready:
                while not self._pending:
                    self._ready.wait()
            threading.Event().wait(self.window)  # let the window's messages gather
            with self._ready:
                pending, self._pending = self._pending, []
                self._in_hand += 1
            try:
                if pending:
                    self._hand_over(pending)
            finally:
                with self._ready:
                    self._in_hand -= 1
                    self._ready.notify_all()

    def _hand_over(self, message_ids: list[int]) -> None:
        if self.submit is None:
            # A connection of its own for each window (at most a few a second), not
            # one held open for the process's life.
            try:
                self._enqueue(message_ids)
            finally:
                connection.close()
        else:
            result = self.submit(self._enqueue, message_ids)
            if isinstance(result, Future):
                result.result()  # enqueued once the group has committed

    def _enqueue(self, message_ids: list[int]) -> None:
        from delivery.tasks import enqueue_delivery

        for start in range(0, len(message_ids), self.chunk):
            chunk = message_ids[start : start + self.chunk]
            with log_context(message_ids=chunk):
                try:
                    with transaction.atomic():  # inside a group commit: rolled back alone
                        enqueue_delivery(chunk)
                except Exception:
                    log.exception("could not wake %d messages; the sweeper will", len(chunk))


_waker: Waker | None = None
_lock = threading.Lock()


def waker() -> Waker:
    global _waker
    if _waker is None:
        with _lock:
            if _waker is None:
                _waker = Waker(
                    window=settings.SENDMSG_WAKE_WINDOW, chunk=settings.SENDMSG_WAKE_CHUNK
                )
    return _waker


def wake_delivery(message_id: int) -> None:
    """Ask a worker to deliver soon (within the window). Only a hint: see the module doc."""
    waker().wake(message_id)


def enqueue_through(submit: Callable[..., object]) -> None:
    """Have this process's wake-ups enqueued by ``submit(fn, message_ids)`` instead of the
    waker's own connection: an SMTP listener hands them to its group commit, so they ride
    along with the messages' commit instead of taking SQLite's write lock once more."""
    waker().submit = submit
