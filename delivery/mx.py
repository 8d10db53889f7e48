"""Finding where to deliver a domain's mail (RFC 5321 §5.1).

Answers are cached per process for their TTL (``relay_resolver``): a worker delivering
many messages to one domain asks DNS once per TTL, not once per message.
"""

from __future__ import annotations

import ipaddress
import random

import dns.exception
import dns.resolver
from django.conf import settings

from delivery.replies import SmtpReply
from sendmsg.resolver import make_resolver

# dnspython's LRU cache keeps each answer (and each NXDOMAIN) until its TTL runs out;
# failures (SERVFAIL, timeouts) are never cached. It is thread-safe.
_CACHE = dns.resolver.LRUCache(max_size=10_000)


def relay_resolver() -> dns.resolver.Resolver:
    """The platform's resolver (sendmsg.resolver) with this process's answer cache."""
    resolver = make_resolver()
    resolver.cache = _CACHE
    return resolver


def flush_cache() -> None:
    """Forget every cached answer (tests that change DNS zones between deliveries)."""
    _CACHE.flush()


class MxError(Exception):
    """No usable host: ``reply.is_permanent`` says whether to bounce or retry later."""

    def __init__(self, reply: SmtpReply) -> None:
        super().__init__(str(reply))
        self.reply = reply


def mx_hosts(domain: str, resolver: dns.resolver.Resolver) -> list[str]:
    """Hosts to try, best first: MX by preference (ties shuffled), else the domain itself."""
    try:
        answer = resolver.resolve(domain, "MX")
    except dns.resolver.NXDOMAIN:
        raise MxError(SmtpReply(550, "5.1.2", f"Domain {domain} does not exist")) from None
    except dns.resolver.NoAnswer:
        return [domain]  # implicit MX: the domain's own A/AAAA
    except dns.exception.DNSException as exc:
        raise MxError(
            SmtpReply(451, "4.4.3", f"DNS lookup of MX for {domain} failed: {exc}")
        ) from None
    records = [(rr.preference, str(rr.exchange).rstrip(".")) for rr in answer]
    if len(records) == 1 and records[0][1] == "":
        raise MxError(SmtpReply(556, "5.1.10", f"Domain {domain} accepts no mail (null MX)"))
    random.shuffle(records)
    records.sort(key=lambda r: r[0])  # stable sort keeps equal preferences shuffled
    return [host for _, host in records if host]


def host_addresses(host: str, resolver: dns.resolver.Resolver) -> list[str]:
    """IPv4 then IPv6 addresses of ``host``, without private ones unless allowed."""
    addresses: list[str] = []
    for rdtype in ("A", "AAAA"):
        try:
            addresses += [rr.address for rr in resolver.resolve(host, rdtype)]
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            continue
        except dns.exception.DNSException:
            continue
    if settings.SENDMSG_RELAY_ALLOW_PRIVATE:
        return addresses
    return [a for a in addresses if ipaddress.ip_address(a).is_global]
