"""Group commit: one database thread that stores the messages of many sessions with one
commit (one fsync) whenever several arrive together.

SQLite takes one writer at a time and makes each commit durable with an fsync, so a
listener that commits every message on its own spends most of its time waiting on the
disk. This thread takes its calls from a queue. Calls submitted with ``submit`` run as
they come, outside any transaction (reads, AUTH); calls submitted with
``submit_grouped`` are gathered: all of them that are waiting run in one transaction,
then one commit makes them all durable. Each such call undoes its own writes when it
raises (they are one ``atomic`` block) and gets its exception; the others are unaffected.
Calls submitted with ``submit_batched`` go further: the items waiting for the same batch
function are handed to it in one call (the messages' rows in one INSERT per table).
If the commit fails, every call of the group gets the exception and none is stored.
Each call's result is released only after the commit: a ``250`` still means stored.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Executor, Future
from dataclasses import dataclass, field
from typing import Any

from django.db import DatabaseError, DataError, IntegrityError, transaction

from sendmsg import thread_connections
from sendmsg.write_turn import write_turn

log = logging.getLogger(__name__)

MAX_GROUP = 64  # calls per commit, so one commit never holds the write lock for long


@dataclass
class _Call:
    future: Future
    fn: Callable[..., Any]
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)
    grouped: bool = False
    batch: bool = False


class GroupCommitExecutor(Executor):
    """Each group waits for its turn to write (sendmsg/write_turn.py), so a listener
    waiting to write wakes as soon as another writer has committed."""

    def __init__(self) -> None:
        self._calls: queue.SimpleQueue[_Call] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future:
        return self._put(_Call(Future(), fn, args, kwargs))

    def submit_grouped(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future:
        """Run ``fn`` in a transaction shared with the other grouped calls waiting now;
        ``fn`` undoes its own writes when it raises (its writes are one ``atomic`` block)."""
        return self._put(_Call(Future(), fn, args, kwargs, grouped=True))

    def submit_batched(self, fn: Callable[[list], list], item: Any) -> Future:
        """Have ``fn([item, ...])`` run once for every item submitted to ``fn`` that waits
        now, in the shared transaction; its future gets ``item``'s outcome.

        ``fn`` returns one outcome per item, in order: a value, or an exception instance
        for that item alone. It undoes its own writes when it raises (its writes are one
        ``atomic`` block); then each of its items is tried alone, so one whose data the
        database refuses fails only itself (unless the database itself failed)."""
        return self._put(_Call(Future(), fn, (item,), grouped=True, batch=True))

    def _put(self, call: _Call) -> Future:
        self._calls.put(call)
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="db", daemon=True)
                self._thread.start()
        return call.future

    def _run(self) -> None:
        while True:
            waiting = [self._calls.get()]
            while len(waiting) < MAX_GROUP:
                try:
                    waiting.append(self._calls.get_nowait())
                except queue.Empty:
                    break
            try:
                self._serve(waiting)
            except Exception as exc:  # e.g. the lock file: these calls fail, the thread goes on
                log.exception("database thread: %d calls failed", len(waiting))
                for call in waiting:
                    if not call.future.done():
                        call.future.set_exception(exc)

    def _serve(self, waiting: list[_Call]) -> None:
        thread_connections.refresh()
        group = []
        for call in waiting:
            if call.grouped:
                group.append(call)
            elif call.future.set_running_or_notify_cancel():
                _settle(call.future, call.fn, call.args, call.kwargs)
        if group:
            with write_turn():
                _commit_group(group)


def _settle(future: Future, fn: Callable[..., Any], args: tuple, kwargs: dict) -> None:
    try:
        result = fn(*args, **kwargs)
    except BaseException as exc:
        future.set_exception(exc)
    else:
        future.set_result(result)


def _commit_group(group: list[_Call]) -> None:
    outcomes: list[tuple[_Call, bool, Any]] = []
    try:
        with transaction.atomic():
            batches: dict[Callable[..., Any], list[_Call]] = {}
            for call in group:
                if not call.future.set_running_or_notify_cancel():
                    continue
                if call.batch:
                    batches.setdefault(call.fn, []).append(call)
                    continue
                try:
                    outcomes.append((call, True, call.fn(*call.args, **call.kwargs)))
                except Exception as exc:
                    outcomes.append((call, False, exc))
            for fn, calls in batches.items():
                outcomes.extend(_run_batch(fn, calls))
    except Exception as exc:  # BEGIN or COMMIT failed: nothing of the group is stored
        log.warning("group commit of %d calls failed: %s", len(group), exc)
        for call in group:
            if not call.future.done():
                call.future.set_exception(exc)
        return
    for call, ok, value in outcomes:
        if ok:
            call.future.set_result(value)
        else:
            call.future.set_exception(value)


def _run_batch(fn: Callable[[list], list], calls: list[_Call]) -> list[tuple[_Call, bool, Any]]:
    """Each call's outcome from one call of ``fn`` with all their items; if that raises,
    from a call of ``fn`` for each item alone."""
    try:
        results = fn([call.args[0] for call in calls])
    except Exception as exc:
        if len(calls) == 1 or _of_the_database(exc):
            return [(call, False, exc) for call in calls]
        log.warning("a batch of %d failed (%s); each is tried alone", len(calls), exc)
        return [outcome for call in calls for outcome in _run_batch(fn, [call])]
    return [
        (call, not isinstance(result, Exception), result)
        for call, result in zip(calls, results, strict=True)
    ]


def _of_the_database(exc: Exception) -> bool:
    """Whether ``exc`` is a failure of the database itself (a lock timeout, a lost
    connection), not of one item's data: one at a time, each item would wait for it
    again."""
    return isinstance(exc, DatabaseError) and not isinstance(exc, (DataError, IntegrityError))
