"""The client's address behind a reverse proxy.

Behind a proxy, ``REMOTE_ADDR`` is the proxy's address, and every per-address limit (the
public check, sign-ups, password resets) would count all visitors as one. Proxies append
the address they received a request from to ``X-Forwarded-For``; anybody can put
anything to the left of that. So the header is believed only when the peer itself is one
of ``SENDMSG_TRUSTED_PROXIES``, and then read from the right: the first hop that is not a
trusted proxy is the client. With no trusted proxies (the default) nothing changes.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.http import HttpRequest, HttpResponse

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def trusted_networks(entries: Iterable[str]) -> list[Network]:
    """Parse ``SENDMSG_TRUSTED_PROXIES`` entries (addresses or CIDR networks)."""
    networks = []
    for entry in entries:
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            raise ImproperlyConfigured(
                f"SENDMSG_TRUSTED_PROXIES: {entry!r} is not an IP address or network"
            ) from None
    return networks


def parse_address(value: str) -> Address | None:
    try:
        address = ipaddress.ip_address(value.strip())
    except ValueError:
        return None
    # A server bound to [::] reports IPv4 peers as ::ffff:a.b.c.d.
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return address.ipv4_mapped
    return address


def client_address(peer: str, forwarded_for: str, trusted: list[Network]) -> str | None:
    """The client's address, or None to keep ``peer``.

    ``forwarded_for`` is the X-Forwarded-For value (several headers arrive joined by
    commas). The walk goes right to left over hops added by trusted proxies and stops at
    the first untrusted one. A malformed hop ends the walk at the last good one: what lies
    left of it was never vouched for.
    """
    peer_address = parse_address(peer)
    if peer_address is None or not _is_trusted(peer_address, trusted):
        return None
    found: Address | None = None
    for hop in reversed(forwarded_for.split(",")):
        address = parse_address(hop)
        if address is None:
            break
        found = address
        if not _is_trusted(address, trusted):
            break
    return str(found) if found is not None else None


def _is_trusted(address: Address, trusted: list[Network]) -> bool:
    return any(address in network for network in trusted)


class TrustedProxyMiddleware:
    """Sets ``REMOTE_ADDR`` from X-Forwarded-For for requests from a trusted proxy."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response
        self.trusted = trusted_networks(settings.SENDMSG_TRUSTED_PROXIES)

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if self.trusted:
            client = client_address(
                request.META.get("REMOTE_ADDR", ""),
                request.META.get("HTTP_X_FORWARDED_FOR", ""),
                self.trusted,
            )
            if client is not None:
                request.META["REMOTE_ADDR"] = client
        return self.get_response(request)
