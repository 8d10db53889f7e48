"""Open SMTP sessions, counted in each SMTP process and shared through small status files.

Each SMTP process (there are several after a fork, each with its own event loop) counts
its open sessions per listener and rewrites ``<data dir>/status/smtp-<pid>.json`` every
``INTERVAL`` seconds; the web process's metrics sum the files written recently. A file
older than ``STALE_AFTER`` belongs to a process that stopped without removing it.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections import Counter
from pathlib import Path

from django.conf import settings

INTERVAL = 5.0
STALE_AFTER = 3 * INTERVAL

_open: Counter[str] = Counter()


def opened(listener: str) -> None:
    _open[listener] += 1


def closed(listener: str) -> None:
    _open[listener] = max(0, _open[listener] - 1)


def status_dir() -> Path:
    return Path(settings.DATA_DIR) / "status"


def _own_file() -> Path:
    return status_dir() / f"smtp-{os.getpid()}.json"


def write(listeners: list[str]) -> None:
    """This process's counts, written whole (a reader never sees half a file)."""
    path = _own_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".tmp")
    partial.write_text(json.dumps({name: _open[name] for name in listeners}))
    partial.replace(path)


def remove() -> None:
    _own_file().unlink(missing_ok=True)


async def publish(listeners: list[str], stop: asyncio.Event) -> None:
    """Write this process's counts every INTERVAL until ``stop``, then remove the file."""
    try:
        while not stop.is_set():
            write(listeners)
            try:
                await asyncio.wait_for(stop.wait(), INTERVAL)
            except TimeoutError:
                pass
    finally:
        remove()


def open_sessions() -> dict[str, int]:
    """Open sessions per listener, summed over the SMTP processes alive now."""
    totals: Counter[str] = Counter()
    now = time.time()
    for path in status_dir().glob("smtp-*.json"):
        try:
            if now - path.stat().st_mtime > STALE_AFTER:
                continue
            counts = json.loads(path.read_text())
        except (OSError, ValueError):
            continue  # removed or being replaced just now
        for name, count in counts.items():
            totals[name] += int(count)
    return dict(totals)
