"""Small DNS helpers shared by the checks: an absent record is an answer, a failure is not."""

from __future__ import annotations

import dns.exception
import dns.resolver


class DnsFailure(Exception):
    """SERVFAIL, timeout, REFUSED: we do not know what the record says."""


def resolve(resolver: dns.resolver.Resolver, name: str, rdtype: str) -> list:
    """The answer's records; [] when the name or the type does not exist (NXDOMAIN, NODATA).

    Raises DnsFailure when the resolver could not get an answer.
    """
    try:
        return list(resolver.resolve(name, rdtype))
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        return []
    except dns.exception.DNSException as exc:
        raise DnsFailure(f"DNS lookup of {name} ({rdtype}) failed: {_reason(exc)}") from None


def exists(resolver: dns.resolver.Resolver, name: str) -> bool:
    """Whether ``name`` exists at all (NXDOMAIN is False; NODATA is True)."""
    try:
        resolver.resolve(name, "A")
        return True
    except dns.resolver.NoAnswer:
        return True
    except dns.resolver.NXDOMAIN:
        return False
    except dns.exception.DNSException as exc:
        raise DnsFailure(f"DNS lookup of {name} failed: {_reason(exc)}") from None


def txt(resolver: dns.resolver.Resolver, name: str) -> list[str]:
    """TXT values at ``name``, each with its character-strings joined (RFC 7208 §3.3)."""
    return [
        b"".join(rr.strings).decode("utf-8", "replace") for rr in resolve(resolver, name, "TXT")
    ]


def tags(record: str) -> dict[str, str]:
    """``k=v; k2=v2`` tag lists (DKIM, DMARC, MTA-STS, TLS-RPT); whitespace in values dropped."""
    parsed: dict[str, str] = {}
    for part in record.split(";"):
        key, sep, value = part.partition("=")
        if sep and key.strip():
            parsed.setdefault(key.strip(), "".join(value.split()))
    return parsed


def _reason(exc: dns.exception.DNSException) -> str:
    if isinstance(exc, dns.resolver.LifetimeTimeout):
        return "no answer in time"
    if isinstance(exc, dns.resolver.NoNameservers):
        return "the DNS servers answered SERVFAIL or refused"
    return exc.__class__.__name__
