"""A fixed-window rate limit per client address, kept in Django's cache.

The count lives in the ``default`` cache so every web process on a host (file cache) or on
every host (Redis) shares it. Fixed windows let a client make up to twice the limit across
a window boundary, and a non-atomic cache (the file cache's ``incr`` reads, then writes)
may let a few extra through under races: both are fine for keeping a free public check
from being used as a DNS cannon, which is all this is for.
"""

from __future__ import annotations

import ipaddress
import math
import time
from dataclasses import dataclass

from django.conf import settings
from django.core.cache import cache
from django.http import HttpRequest

PUBLIC_CHECK = "public-check"
DEFAULT_PUBLIC_CHECK_PER_MINUTE = 10


@dataclass(frozen=True)
class Allowance:
    allowed: bool
    count: int  # requests in this window, this one included
    limit: int
    retry_after: int  # seconds until the window ends (for Retry-After)


def client_address(request: HttpRequest) -> str:
    """The address a limit applies to: REMOTE_ADDR, an IPv6 client's whole /64.

    Behind a reverse proxy REMOTE_ADDR is the proxy's address unless the proxy (or the
    WSGI server it talks to) sets it to the client's; X-Forwarded-For is never trusted
    here, since any client can send it. An IPv6 /64 is one subscriber's network, whose
    addresses cost nothing to change.
    """
    raw = request.META.get("REMOTE_ADDR") or "unknown"
    try:
        address = ipaddress.ip_address(raw)
    except ValueError:
        return raw
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:  # ::ffff:192.0.2.1 from a dual-stack socket
            return str(address.ipv4_mapped)
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)


def hit(*, scope: str, client: str, limit: int, window: int = 60) -> Allowance:
    """Count one request of ``client`` in ``scope``; allowed while within ``limit``."""
    now = time.time()
    start = int(now // window) * window
    key = f"sendmsg:ratelimit:{scope}:{client}:{start}"
    # Keep the entry a little past its window so a slow request still finds it.
    cache.add(key, 0, timeout=window + 5)
    try:
        count = cache.incr(key)
    except ValueError:  # expired (or evicted) between add and incr
        cache.set(key, 1, timeout=window + 5)
        count = 1
    retry_after = max(1, math.ceil(start + window - now))
    return Allowance(allowed=count <= limit, count=count, limit=limit, retry_after=retry_after)


def public_check_allowance(request: HttpRequest) -> Allowance:
    """Count one public deliverability check for the request's client address."""
    limit = getattr(settings, "SENDMSG_PUBLIC_CHECK_PER_MINUTE", DEFAULT_PUBLIC_CHECK_PER_MINUTE)
    return hit(scope=PUBLIC_CHECK, client=client_address(request), limit=limit)
