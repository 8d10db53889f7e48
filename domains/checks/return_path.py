"""Return path: does rp.<domain> lead to the platform, so bounces come back and SPF aligns?"""

from __future__ import annotations

import dns.name
import dns.resolver

from domains.checks import dnsutil
from domains.checks.results import CheckResult, error, ok, unknown


def check_return_path(*, host: str, target: str, resolver: dns.resolver.Resolver) -> CheckResult:
    """OK when ``host`` is a CNAME to ``target``, or carries the same MX as ``target``."""
    wanted = dns.name.from_text(target)
    try:
        cnames = dnsutil.resolve(resolver, host, "CNAME")
        if any(rr.target == wanted for rr in cnames):
            return ok("return_path", f"{host} points at {target}.")
        if cnames:
            return error(
                "return_path",
                f"{host} points at {cnames[0].target}, not {target}: change the CNAME's target.",
            )
        # No CNAME: an MX (and SPF) copied from the platform's host also works.
        ours = {rr.exchange for rr in dnsutil.resolve(resolver, target, "MX")}
        theirs = {rr.exchange for rr in dnsutil.resolve(resolver, host, "MX")}
    except dnsutil.DnsFailure as exc:
        return unknown("return_path", str(exc))
    if ours and theirs and theirs <= ours:
        return ok("return_path", f"{host} has the platform's MX, so bounces reach us.")
    return error("return_path", f"No CNAME at {host}: point it at {target}.")
