"""MTA-STS and TLS-RPT (receiving-side TLS policy and reports), and BIMI (logos)."""

from __future__ import annotations

import dns.resolver

from domains.checks import dnsutil
from domains.checks.results import CheckResult, error, ok, unknown, warning


def _single(resolver: dns.resolver.Resolver, name: str, version: str) -> list[str]:
    return [v for v in dnsutil.txt(resolver, name) if v.replace(" ", "").startswith(version)]


def check_mta_sts(*, domain: str, resolver: dns.resolver.Resolver) -> CheckResult:
    name = f"_mta-sts.{domain}"
    try:
        records = _single(resolver, name, "v=STSv1")
    except dnsutil.DnsFailure as exc:
        return unknown("mta_sts", str(exc))
    if not records:
        return warning(
            "mta_sts",
            f"No MTA-STS record at {name} (optional): with it and a policy file at "
            f"https://mta-sts.{domain}/.well-known/mta-sts.txt, senders to you must use TLS.",
        )
    if len(records) > 1:
        return error("mta_sts", f"{name} has {len(records)} MTA-STS records; keep exactly one.")
    record_id = dnsutil.tags(records[0]).get("id", "")
    if not record_id or not record_id.isalnum() or len(record_id) > 32:
        return error(
            "mta_sts",
            f"The MTA-STS record at {name} needs an id= of 1-32 letters "
            "and digits (change it whenever the policy changes).",
        )
    return ok(
        "mta_sts",
        f"MTA-STS is announced at {name} (id {record_id}); the policy file "
        "itself is not fetched by this check.",
        id=record_id,
    )


def check_tls_rpt(*, domain: str, resolver: dns.resolver.Resolver) -> CheckResult:
    name = f"_smtp._tls.{domain}"
    try:
        records = _single(resolver, name, "v=TLSRPTv1")
    except dnsutil.DnsFailure as exc:
        return unknown("tls_rpt", str(exc))
    if not records:
        return warning(
            "tls_rpt",
            f"No TLS-RPT record at {name} (optional): add "
            f'"v=TLSRPTv1; rua=mailto:tls-reports@{domain}" to get reports of TLS failures.',
        )
    if len(records) > 1:
        return error("tls_rpt", f"{name} has {len(records)} TLS-RPT records; keep exactly one.")
    rua = dnsutil.tags(records[0]).get("rua", "")
    uris = [u for u in rua.split(",") if u]
    if not uris or not all(u.startswith(("mailto:", "https:")) for u in uris):
        return error(
            "tls_rpt", f"The TLS-RPT record at {name} needs rua= with mailto: or https: addresses."
        )
    return ok("tls_rpt", f"TLS reports go to {', '.join(uris)}.", rua=uris)


def check_bimi(*, domain: str, resolver: dns.resolver.Resolver) -> CheckResult:
    name = f"default._bimi.{domain}"
    try:
        records = _single(resolver, name, "v=BIMI1")
    except dnsutil.DnsFailure as exc:
        return unknown("bimi", str(exc))
    if not records:
        return ok(
            "bimi",
            "No BIMI record (optional: shows your logo at some mailbox "
            "providers once DMARC enforces p=quarantine or p=reject).",
            present=False,
        )
    logo = dnsutil.tags(records[0]).get("l", "")
    return ok(
        "bimi", f"BIMI record found; logo at {logo or '(none given)'}.", present=True, logo=logo
    )
