"""The public deliverability check: any domain's email DNS records, scored, for anyone.

It reuses the tenant checks of ``domains.checks`` but reads nothing from and writes nothing
to the database: the domain need not be a tenant's, and no row records that it was checked.
The tenant checks speak of "our" DKIM key and return path; for a domain that may have
nothing to do with this platform those parts are left out (return path) or re-worded here.
"""

from __future__ import annotations

import re
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from typing import Any

import dns.resolver
from django.conf import settings

from domains.checks import dnsutil
from domains.checks.dkim import GOOD_RSA_BITS, MIN_RSA_BITS, describe_published
from domains.checks.dmarc import check_dmarc
from domains.checks.mx import check_mx
from domains.checks.results import (
    WEIGHTS,
    CheckResult,
    CheckStatus,
    error,
    is_partial,
    ok,
    score_of,
    unknown,
    warning,
)
from domains.checks.spf import check_spf
from domains.checks.transport import check_bimi, check_mta_sts, check_tls_rpt
from domains.names import InvalidDomain, display_domain, normalize_domain
from sendmsg.resolver import make_resolver

# Selectors that large providers and common MTAs use by default: Microsoft 365
# (selector1/2), Google Workspace (google), Mailchimp (k1), cPanel/OpenDKIM (default, mail,
# dkim), Amazon SES-style and others (s1/s2).
COMMON_SELECTORS = (
    "default",
    "google",
    "selector1",
    "selector2",
    "k1",
    "s1",
    "s2",
    "dkim",
    "mail",
)
MAX_SELECTORS = 5
ORDER = ("dkim", "spf", "dmarc", "mx", "mta_sts", "tls_rpt", "bimi")
# The return path is this platform's own setup for its tenants: not part of a public check.
PUBLIC_WEIGHTS = {name: WEIGHTS[name] for name in ORDER}
LABELS = {
    "dkim": "DKIM",
    "spf": "SPF",
    "dmarc": "DMARC",
    "mx": "MX (mail to the domain)",
    "mta_sts": "MTA-STS",
    "tls_rpt": "TLS-RPT",
    "bimi": "BIMI",
}
# Top-level names that never exist in the public DNS (RFC 6761, 6762, 7686, 8375 and
# ICANN's .internal). Asking our resolver about them could only reveal the operator's own
# private network to an anonymous visitor.
_PRIVATE_SUFFIXES = ("localhost", "local", "internal", "invalid", "onion", "home.arpa")
# One selector: DNS labels of letters, digits and hyphens (RFC 6376 §3.1 sub-domain).
_SELECTOR = re.compile(
    r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*"
)
_SELECTOR_SEPARATORS = re.compile(r"[\s,]+")
# A hostile SPF include tree can cost dozens of sequential lookups, each bounded by the
# resolver's lifetime; a public, anonymous request must not hold a worker that long.
_DEADLINE_LIFETIMES = 3


SELECTOR_STATES = {
    "ok": "Key found",
    "weak": "Weak key",
    "too_weak": "Key too short",
    "revoked": "Revoked (empty p=)",
    "invalid": "Unreadable record",
    "missing": "Not found",
    "unknown": "No DNS answer",
}


class InvalidCheckRequest(ValueError):
    """The domain or a selector cannot be checked; the message says why, for the visitor."""


@dataclass(frozen=True)
class SelectorLookup:
    """What DNS serves at one DKIM selector."""

    selector: str
    record_name: str
    state: str  # ok, weak, too_weak, revoked, invalid, missing, unknown
    message: str
    key_type: str | None = None
    bits: int | None = None

    @property
    def found(self) -> bool:
        return self.state not in ("missing", "unknown")

    def as_dict(self) -> dict[str, Any]:
        return {
            "selector": self.selector,
            "record_name": self.record_name,
            "state": self.state,
            "state_label": SELECTOR_STATES[self.state],
            "found": self.found,
            "key_type": self.key_type,
            "bits": self.bits,
            "message": self.message,
        }


@dataclass(frozen=True)
class PublicReport:
    """The verdicts on one domain, in display order, and the score over them."""

    domain: str
    results: list[CheckResult]
    selectors: list[str]
    common_selectors: bool  # no selector was given: the common ones were tried
    selectors_tried: list[str] = field(default_factory=list)

    @property
    def display_name(self) -> str:
        return display_domain(self.domain)

    @property
    def partial(self) -> bool:
        return is_partial(self.results)

    @property
    def score(self) -> int | None:
        """0–100 over the checks that answered; None when none did."""
        return score_of(self.results, PUBLIC_WEIGHTS)

    def result(self, name: str) -> CheckResult:
        return next(r for r in self.results if r.name == name)

    @property
    def dkim_selectors(self) -> list[dict[str, Any]]:
        """What each selector tried serves (see SelectorLookup.as_dict)."""
        return self.result("dkim").details["selectors"]

    def rows(self) -> list[dict[str, Any]]:
        """Each result with its points and weight scaled so the weights add up to 100."""
        scale = 100 / sum(PUBLIC_WEIGHTS.values())
        return [
            {
                "name": r.name,
                "label": LABELS[r.name],
                "status": str(r.status),
                "status_label": CheckStatus(r.status).label.split(" (", 1)[0],
                "message": r.message,
                "points": round(r.points * scale, 1),
                "weight": round(PUBLIC_WEIGHTS[r.name] * scale, 1),
                "details": r.details,
            }
            for r in self.results
        ]

    def as_dict(self) -> dict[str, Any]:
        return {
            "domain": self.domain,
            "display_name": self.display_name,
            "score": self.score,
            "partial": self.partial,
            "selectors": self.selectors,
            "common_selectors": self.common_selectors,
            "selectors_tried": self.selectors_tried,
            "results": [
                {k: v for k, v in row.items() if k not in ("label", "status_label")}
                for row in self.rows()
            ],
        }


def clean_domain(name: str) -> str:
    """The A-label form of a domain a visitor typed; raises InvalidCheckRequest."""
    if not (name or "").strip():
        raise InvalidCheckRequest("Enter the domain to check, e.g. example.com.")
    try:
        domain = normalize_domain(name)
    except InvalidDomain as exc:
        raise InvalidCheckRequest(f"{exc}.") from None
    labels = domain.split(".")
    if labels[-1].isdigit():
        raise InvalidCheckRequest(f"{name!r} is an IP address, not a domain name.")
    if any(domain == s or domain.endswith(f".{s}") for s in _PRIVATE_SUFFIXES):
        raise InvalidCheckRequest(
            f"{name!r} is a private name that the public DNS never answers for: enter a "
            "domain that sends mail on the internet."
        )
    return domain


def clean_selectors(values: list[str] | None, *, domain: str | None = None) -> list[str]:
    """Selectors from form or query values; each value may hold several, split by commas or
    spaces. Duplicates dropped, order kept; raises InvalidCheckRequest. With ``domain``
    (cleaned), also that each record name fits in DNS."""
    selectors: list[str] = []
    for value in values or []:
        for raw in _SELECTOR_SEPARATORS.split(value.strip()):
            selector = raw.strip().rstrip(".").lower()
            # "s1._domainkey.example.com" pasted whole: keep the selector part.
            selector = selector.split("._domainkey.", 1)[0]
            if not selector:
                continue
            if not _SELECTOR.fullmatch(selector) or len(selector) > 200:
                raise InvalidCheckRequest(
                    f"{raw!r} is not a DKIM selector: use the s= value of a message's "
                    "DKIM-Signature header (letters, digits, hyphens and dots)."
                )
            if selector not in selectors:
                selectors.append(selector)
    if len(selectors) > MAX_SELECTORS:
        raise InvalidCheckRequest(
            f"Give at most {MAX_SELECTORS} DKIM selectors at once (got {len(selectors)})."
        )
    for selector in selectors:
        if domain is not None and len(_record_name(selector, domain)) > 253:
            raise InvalidCheckRequest(
                f"The selector {selector!r} makes the DKIM record name longer than DNS allows."
            )
    return selectors


def audit_domain(
    *, name: str, selectors: list[str] | None = None, timeout: float | None = None
) -> PublicReport:
    """Check ``name``'s SPF, DKIM, DMARC, MX, MTA-STS, TLS-RPT and BIMI records, concurrently.

    DKIM is looked up at the given selectors, or without any at COMMON_SELECTORS. Each DNS
    query is bounded by ``timeout`` (the resolver's lifetime), the whole check by a few of
    them; a check without an answer by then is UNKNOWN. Reads DNS only, never the database.
    Raises InvalidCheckRequest for a name or selector that cannot be checked.
    """
    domain = clean_domain(name)
    given = clean_selectors(selectors, domain=domain)
    # The common selectors are short; on a name too long for them there is nothing to find.
    tried = given or [s for s in COMMON_SELECTORS if len(_record_name(s, domain)) <= 253]
    resolver = make_resolver(timeout=timeout)
    pool = ThreadPoolExecutor(max_workers=len(ORDER) - 1 + len(tried))
    try:
        lookups = [pool.submit(_lookup_selector, domain, s, resolver) for s in tried]
        checks: dict[str, Future[CheckResult]] = {
            "spf": pool.submit(
                check_spf,
                domain=domain,
                resolver=resolver,
                platform_include=settings.SENDMSG_SPF_INCLUDE,
                # Not our tenant: never ask it to include our servers.
                return_path_ok=True,
            ),
            # Whoever sends for the domain signs and bounces as the domain itself: ask only
            # whether the record is there, valid and enforcing.
            "dmarc": pool.submit(
                check_dmarc,
                domain=domain,
                resolver=resolver,
                dkim_domain=domain,
                return_path_host=domain,
            ),
            "mx": pool.submit(check_mx, domain=domain, resolver=resolver),
            "mta_sts": pool.submit(check_mta_sts, domain=domain, resolver=resolver),
            "tls_rpt": pool.submit(check_tls_rpt, domain=domain, resolver=resolver),
            "bimi": pool.submit(check_bimi, domain=domain, resolver=resolver),
        }
        deadline = _DEADLINE_LIFETIMES * resolver.lifetime
        wait([*lookups, *checks.values()], timeout=deadline)
        late = f"no answer within {deadline:g} seconds; try again."
        outcomes = [
            f.result() if f.done() else _late_lookup(domain, s, late)
            for s, f in zip(tried, lookups, strict=True)
        ]
        by_name = {
            n: f.result() if f.done() else unknown(n, f"{LABELS[n]}: {late}")
            for n, f in checks.items()
        }
    finally:
        # Checks still running finish on their own (every query they make is bounded by
        # the resolver's lifetime); only this request stops waiting for them.
        pool.shutdown(wait=False, cancel_futures=True)
    by_name["dkim"] = _dkim_verdict(domain, outcomes, common=not given)
    by_name["spf"] = _public_spf(by_name["spf"], domain)
    by_name["dmarc"] = _public_dmarc(by_name["dmarc"])
    return PublicReport(
        domain=domain,
        results=[by_name[n] for n in ORDER],
        selectors=given,
        common_selectors=not given,
        selectors_tried=tried,
    )


# -- DKIM at selectors we do not own --------------------------------------------------------


def _record_name(selector: str, domain: str) -> str:
    return f"{selector}._domainkey.{domain}"


def _late_lookup(domain: str, selector: str, late: str) -> SelectorLookup:
    name = _record_name(selector, domain)
    return SelectorLookup(selector, name, "unknown", f"{name}: {late}")


def _lookup_selector(domain: str, selector: str, resolver: dns.resolver.Resolver) -> SelectorLookup:
    name = _record_name(selector, domain)
    try:
        values = dnsutil.txt(resolver, name)
    except dnsutil.DnsFailure as exc:
        return SelectorLookup(selector, name, "unknown", str(exc))
    # RFC 6376 §3.6.1: v= is optional but, when present, first and DKIM1; p= is required.
    records = [
        v for v in values if "p" in (tags := dnsutil.tags(v)) and tags.get("v", "DKIM1") == "DKIM1"
    ]
    if not records:
        return SelectorLookup(selector, name, "missing", f"No DKIM record at {name}.")
    if len(records) > 1:
        return SelectorLookup(
            selector,
            name,
            "invalid",
            f"{name} has {len(records)} DKIM records, so verifiers may pick either: keep "
            "exactly one.",
        )
    kind, bits = describe_published(records[0])
    found = {"key_type": kind, "bits": bits}
    if not dnsutil.tags(records[0]).get("p"):
        return SelectorLookup(
            selector,
            name,
            "revoked",
            f"{name} has an empty p=: that key is revoked, and mail signed with it fails DKIM.",
            **found,
        )
    if bits is None or kind not in ("rsa", "ed25519"):
        return SelectorLookup(
            selector,
            name,
            "invalid",
            f"The key at {name} cannot be read: publish the record's value again, whole (a "
            "key cut at 255 characters is the usual cause).",
            **found,
        )
    described = f"{name} publishes an {kind.upper()} {bits}-bit key"
    if kind == "rsa" and bits < MIN_RSA_BITS:
        return SelectorLookup(
            selector,
            name,
            "too_weak",
            f"{described}, which verifiers must refuse (RFC 8301 asks for at least "
            f"{MIN_RSA_BITS} bits, better {GOOD_RSA_BITS}): publish a {GOOD_RSA_BITS}-bit key "
            "under a new selector and sign with it.",
            **found,
        )
    if kind == "rsa" and bits < GOOD_RSA_BITS:
        return SelectorLookup(
            selector,
            name,
            "weak",
            f"{described}; keys under {GOOD_RSA_BITS} bits are weak: publish a "
            f"{GOOD_RSA_BITS}-bit key under a new selector, sign with it, then remove this one.",
            **found,
        )
    return SelectorLookup(selector, name, "ok", f"{described}.", **found)


def _dkim_verdict(domain: str, outcomes: list[SelectorLookup], *, common: bool) -> CheckResult:
    """Full points for a usable 2048-bit (or Ed25519) key, half for a weak one.

    With given selectors every one is expected to work; with the common ones a missing
    record only means the domain uses another selector.
    """
    details = {
        "selectors": [o.as_dict() for o in outcomes],
        "searched": "common" if common else "given",
        "found": [o.selector for o in outcomes if o.found],
    }
    usable = [o for o in outcomes if o.state in ("ok", "weak")]
    failed = [o for o in outcomes if o.state == "unknown"]
    expected_bad = ("invalid", "too_weak") if common else ("invalid", "too_weak", "missing")
    broken = [o for o in outcomes if o.state in expected_bad]
    revoked = [o for o in outcomes if o.state == "revoked"]
    if not common:
        broken += revoked
    hint = (
        f"The selector is the s= tag of the DKIM-Signature header in a message sent from {domain}."
    )
    if usable:
        strong = any(o.state == "ok" for o in usable)
        messages = [o.message for o in usable + broken]
        if failed:
            messages.append(_no_answer(failed))
        points = WEIGHTS["dkim"] if strong else WEIGHTS["dkim"] / 2
        if not broken and all(o.state == "ok" for o in usable):
            return ok("dkim", " ".join(messages), points=points, **details)
        return warning("dkim", " ".join(messages), points=points, **details)
    if failed:
        # The key may well be at a selector DNS did not answer for.
        messages = [o.message for o in broken]
        return unknown("dkim", " ".join([*messages, _no_answer(failed), "Try again."]), **details)
    if broken:
        messages = [o.message for o in broken]
        if any(o.state == "missing" for o in broken):
            messages.append(f"Check the selector, or publish its key. {hint}")
        return error("dkim", " ".join(messages), **details)
    tried = ", ".join(o.selector for o in outcomes)
    messages = [o.message for o in revoked]
    messages.append(
        f"No DKIM key found at the common selectors ({tried}). That does not mean mail from "
        f"{domain} is unsigned: enter the selector to check it. {hint}"
    )
    return warning("dkim", " ".join(messages), **details)


def _no_answer(failed: list[SelectorLookup]) -> str:
    selectors = ", ".join(o.selector for o in failed)
    return f"No DNS answer for the DKIM selector(s) {selectors} ({failed[0].message})."


# -- re-wording the tenant checks ---------------------------------------------------------


def _public_spf(result: CheckResult, domain: str) -> CheckResult:
    """SPF as any receiver sees it: nothing about this platform's include or return path."""
    details = {
        k: v for k, v in result.details.items() if k not in ("includes_platform", "platform_path")
    }
    if result.status in (CheckStatus.UNKNOWN, CheckStatus.ERROR):
        return replace(result, details=details)
    if result.details.get("record") is None:
        return warning(
            "spf",
            f"{domain} has no SPF record, so receivers cannot tell which servers may send as "
            f"it. Publish one TXT record at {domain} listing them, e.g. "
            '"v=spf1 include:<your mail provider\'s SPF host> ~all" (or "v=spf1 -all" if '
            "the domain sends no mail).",
            **details,
        )
    if result.status == CheckStatus.OK:
        # The tenant wording adds a sentence about our include; keep only the verdict.
        message = (
            f"The SPF record at {domain} is valid ({details['lookups']} of "
            f"{details['lookup_limit']} DNS lookups)."
        )
        return replace(result, message=message, details=details)
    return replace(result, details=details)


def _public_dmarc(result: CheckResult) -> CheckResult:
    # The alignment details describe the assumed signer (the domain itself), not facts.
    details = {k: v for k, v in result.details.items() if k != "alignment"}
    return replace(result, details=details)
