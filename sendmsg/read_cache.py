"""Rows every message reads, kept in the process for a moment instead of read each time.

The accept path asks, per message: which API key is this, is the tenant suspended, what
is its plan rate, is this sending domain verified. Those rows change a few times a year
and are read hundreds of times a second, each read a statement of its own. A ReadCache
keeps what it read for ``SENDMSG_STATE_CACHE_SECONDS`` (1 s by default; 0 reads every
time), so a change made elsewhere (another process, a bulk UPDATE) takes effect within
that time everywhere. A change made through this process's own code paths (revoking a
key, saving a tenant or a domain) forgets the entry at once (see ``forget``).

Values are shared between threads: treat them as read-only.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

from django.conf import settings

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

MAX_ENTRIES = 10_000  # a process serving more keys than this re-reads instead of growing

_all: list[ReadCache] = []
_all_lock = threading.Lock()


def ttl() -> float:
    return settings.SENDMSG_STATE_CACHE_SECONDS


class ReadCache(Generic[K, V]):
    def __init__(self, name: str) -> None:
        self.name = name
        self._entries: dict[K, tuple[float, V]] = {}
        with _all_lock:
            _all.append(self)

    def get(self, key: K, load: Callable[[], V]) -> V:
        """The value kept for ``key`` if still fresh, else ``load()`` (kept if it is not
        None: a miss is asked again next time, so a new row shows at once)."""
        seconds = ttl()
        if seconds <= 0:
            return load()
        now = time.monotonic()
        entry = self._entries.get(key)
        if entry is not None and entry[0] > now:
            return entry[1]
        value = load()
        if value is not None:
            if len(self._entries) >= MAX_ENTRIES:
                self._entries.clear()
            self._entries[key] = (now + seconds, value)
        return value

    def forget(self, key: K) -> None:
        self._entries.pop(key, None)

    def clear(self) -> None:
        self._entries.clear()


def clear_all() -> None:
    """Forget everything every cache of this process holds (tests start from nothing)."""
    with _all_lock:
        caches = list(_all)
    for cache in caches:
        cache.clear()
