"""MX of the sending domain itself: can it receive replies (and bounces of other mail)?"""

from __future__ import annotations

import dns.resolver

from domains.checks import dnsutil
from domains.checks.results import CheckResult, error, ok, unknown, warning


def check_mx(*, domain: str, resolver: dns.resolver.Resolver) -> CheckResult:
    try:
        records = dnsutil.resolve(resolver, domain, "MX")
        if not records:
            has_address = bool(dnsutil.resolve(resolver, domain, "A")) or bool(
                dnsutil.resolve(resolver, domain, "AAAA")
            )
    except dnsutil.DnsFailure as exc:
        return unknown("mx", str(exc))
    hosts = sorted((rr.preference, str(rr.exchange)) for rr in records)
    if len(hosts) == 1 and hosts[0][1] == ".":
        return warning(
            "mx",
            f"{domain} publishes a null MX (RFC 7505): it receives no mail, so replies to "
            "your messages bounce. Fine for a no-reply domain; some receivers distrust "
            "senders that cannot receive.",
            points=5,
            null_mx=True,
        )
    if hosts:
        names = [h.rstrip(".") for _, h in hosts]
        return ok("mx", f"{domain} receives mail at {', '.join(names)}.", hosts=names)
    if has_address:
        return warning(
            "mx",
            f"{domain} has no MX record, so mail for it goes to its A/AAAA address: add an "
            "MX for the host that should receive replies.",
            points=5,
        )
    return error(
        "mx",
        f"{domain} cannot receive mail (no MX, no address): add an MX record "
        "so replies and bounces of your own mail arrive.",
    )
