"""A graceful stop for the delivery workers (django-q2's qcluster).

On SIGTERM django-q2's cluster stops fetching tasks and lets its worker processes run
every task they have already fetched before they exit. A delivery task may hold many
messages, and each message an SMTP transaction per destination: run to the end, a stop
could outlast any grace period and be cut by SIGKILL, leaving leases that only expire
later. So the cluster (sendmsg/management/commands/qcluster.py) first tells its worker
processes with SIGUSR1; a worker told so finishes the message in hand, gives the leases
of the task's other messages back at once and hands them to the broker for another
worker (delivery/relay.py, delivery/tasks.py). Tasks fetched but not started are handed
back whole, unclaimed.

SIGUSR1 is ignored in the cluster's other processes (sentinel, pusher, monitor): the
cluster ignores it before it forks them, and only worker processes, at spawn, listen.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from pathlib import Path

log = logging.getLogger(__name__)

STOP_SIGNAL = signal.SIGUSR1

_stopping = threading.Event()


def stopping() -> bool:
    """True in a worker process once its cluster has been asked to stop."""
    return _stopping.is_set()


def listen(**kwargs) -> None:
    """django-q2's post_spawn receiver: runs in each new worker process."""
    signal.signal(STOP_SIGNAL, _stop)


def _stop(signum, frame) -> None:
    _stopping.set()


def ignore_in_children() -> None:
    """In the cluster's main process, before it forks: its children inherit the ignore."""
    signal.signal(STOP_SIGNAL, signal.SIG_IGN)


def tell_workers() -> int:
    """Send STOP_SIGNAL to every process below this one; returns how many were told."""
    told = 0
    for pid in descendants(os.getpid()):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, STOP_SIGNAL)
            told += 1
    log.info("stopping: %d processes of the cluster told to start no new delivery", told)
    return told


def descendants(root: int) -> list[int]:
    """The ids of ``root``'s children, their children, and so on (from /proc)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:  # gone meanwhile
            continue
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses.
        fields = text[text.rindex(")") + 2 :].split()
        children.setdefault(int(fields[1]), []).append(int(text.split(" ", 1)[0]))
    found, todo = [], list(children.get(root, []))
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found
