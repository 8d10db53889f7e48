"""The one place DNS resolvers are configured (settings.SENDMSG_DNS_SERVERS)."""

from __future__ import annotations

import dns.resolver
from django.conf import settings


def make_resolver(*, timeout: float | None = None) -> dns.resolver.Resolver:
    """A resolver on the configured servers (``host`` or ``host:port``), else the system's.

    Every query through it is bounded by ``timeout`` seconds in all (DESIGN invariant 6).
    """
    servers = settings.SENDMSG_DNS_SERVERS
    resolver = dns.resolver.Resolver(configure=not servers)
    if servers:
        hosts, ports = [], set()
        for entry in servers:
            host, _, port = entry.rpartition(":") if entry.count(":") == 1 else (entry, "", "")
            hosts.append(host or entry)
            ports.add(int(port) if port else 53)
        if len(ports) > 1:
            raise ValueError("SENDMSG_DNS_SERVERS must all use the same port")
        resolver.nameservers = hosts
        resolver.port = ports.pop()
    resolver.lifetime = timeout if timeout is not None else settings.SENDMSG_DNS_TIMEOUT
    resolver.timeout = resolver.lifetime
    return resolver
