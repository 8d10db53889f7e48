"""DMARC for a sending domain (RFC 7489): one valid policy record, how strong it is, and
whether the mail we send for the tenant aligns with it.

Our DKIM signature carries ``d=<domain>`` and our envelope sender is on ``rp.<domain>``:
under relaxed alignment both align with the From domain; strict SPF alignment (``aspf=s``)
rules the return path out, which is fine as long as DKIM still aligns.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field

import dns.resolver
from publicsuffixlist import PublicSuffixList

from domains.checks import dnsutil
from domains.checks.results import CheckResult, error, ok, unknown, warning

NAME = "dmarc"
POLICIES = ("none", "quarantine", "reject")
RECORD_POINTS = 10.0  # a valid record, whatever its policy
# What each policy adds on top (of 15): "none" only reports, "reject" protects fully.
POLICY_POINTS = {"none": 0.0, "quarantine": 9.0, "reject": 15.0}
# RFC 7489 §6.6.4: mail left out by pct gets the next weaker policy.
_WEAKER = {"reject": "quarantine", "quarantine": "none", "none": "none"}
_KNOWN_TAGS = frozenset(
    # RFC 7489 §6.3; np from RFC 9091; psd and t from RFC 9989 (DMARCbis).
    {"v", "p", "sp", "np", "pct", "adkim", "aspf", "rua", "ruf", "fo", "rf", "ri", "psd", "t"}
)
_ENUMS = {
    "p": POLICIES,
    "sp": POLICIES,
    "np": POLICIES,
    "adkim": ("r", "s"),
    "aspf": ("r", "s"),
    "psd": ("y", "n", "u"),
    "t": ("y", "n"),
}
_FO_OPTIONS = frozenset({"0", "1", "d", "s"})
_VERSION = re.compile(r"v\s*=\s*DMARC1\s*(?:;|$)")  # RFC 7489 §6.4: case-sensitive DMARC1
_VERSION_ERROR = 'The record must start with "v=DMARC1", and only once.'
_TAG_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
_MAILTO = re.compile(
    r"mailto:([^@\s!,;]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9-]+)+)"
    r"(?:!\d+[kmgt]?)?",
    re.IGNORECASE,
)
_URI_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:\S+")


@functools.cache
def _public_suffixes() -> PublicSuffixList:
    # The list bundled with the package: never fetched at run time.
    return PublicSuffixList()


def organizational_domain(name: str) -> str:
    """RFC 7489 §3.2: the public suffix plus one label (the name itself when it is a suffix)."""
    name = _normalize(name)
    return _public_suffixes().privatesuffix(name) or name


@dataclass(frozen=True)
class DmarcRecord:
    """A parsed DMARC record: its tags (names lower case) and what is wrong with it."""

    tags: dict[str, str]
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def valid(self) -> bool:
        return not self.errors

    @property
    def policy(self) -> str:
        return self.tags.get("p", "none")

    @property
    def subdomain_policy(self) -> str:
        return self.tags.get("sp", self.policy)

    @property
    def pct(self) -> int:
        value = self.tags.get("pct", "100")
        return int(value) if value.isdigit() and int(value) <= 100 else 100

    @property
    def adkim(self) -> str:
        return self.tags.get("adkim", "r")

    @property
    def aspf(self) -> str:
        return self.tags.get("aspf", "r")


def is_dmarc_record(text: str) -> bool:
    """RFC 7489 §6.6.3: records not starting with ``v=DMARC1`` are discarded."""
    return _VERSION.match(text) is not None


def parse_dmarc(record: str) -> DmarcRecord:
    """Parse and validate a DMARC record (pure; no DNS).

    Errors are what a tenant must fix for receivers to apply the record as meant (RFC 7489
    §6.3/§6.4 syntax, a required and known ``p``); warnings are harmless but probably not
    what was meant (unknown tags, report URIs receivers need not support).
    """
    tags: dict[str, str] = {}
    errors: list[str] = []
    warnings: list[str] = []
    parts = [part.strip() for part in record.split(";")]
    for index, part in enumerate(parts):
        if not part:
            continue  # "v=DMARC1; p=none;" ends with an empty part, which is fine
        name, sep, value = part.partition("=")
        name, value = name.strip(), value.strip()
        if not sep or not _TAG_NAME.fullmatch(name):
            errors.append(f'"{part}" is not a tag=value pair: fix or remove it.')
            continue
        key = name.lower()
        if key in tags:
            errors.append(f"The tag {key} appears twice: keep one.")
            continue
        if key == "v" and (index > 0 or value != "DMARC1"):
            errors.append(_VERSION_ERROR)
            continue
        # Tag values are case-insensitive literals (RFC 7489 §6.4 ABNF), except the URIs.
        tags[key] = value if key in ("v", "rua", "ruf") else value.lower()
    if "v" not in tags and _VERSION_ERROR not in errors:
        errors.append(_VERSION_ERROR)
    if "p" not in tags:
        # RFC 7489 §6.3: p is required in a policy record (§6.6.3 then ignores it).
        errors.append("The record has no p tag: add p=none (or p=quarantine, p=reject).")
    for key, value in tags.items():
        if key not in _KNOWN_TAGS:
            warnings.append(
                f"The tag {key}= is not a DMARC tag and receivers ignore it: check its "
                "spelling or remove it."
            )
        elif key in _ENUMS and value not in _ENUMS[key]:
            *first, last = (f"{key}={v}" for v in _ENUMS[key])
            errors.append(f"{key}={value} is not valid: use {', '.join(first)} or {last}.")
        elif key == "pct" and not (value.isdigit() and int(value) <= 100):
            errors.append(
                f"pct={value} is not valid: pct is the percentage (a whole number from 0 to "
                "100) of failing mail the policy applies to; use pct=100 or remove the tag."
            )
        elif key in ("rua", "ruf"):
            _check_uris(key, value, errors, warnings)
        elif key == "fo" and not set(value.split(":")) <= _FO_OPTIONS:
            errors.append(f"fo={value} is not valid: use 0, 1, d or s, separated by colons.")
        elif key == "rf" and value != "afrf":
            errors.append(f"rf={value} is not valid: the only report format is rf=afrf.")
        elif key == "ri" and not value.isdigit():
            errors.append(f"ri={value} is not valid: give seconds, e.g. ri=86400.")
    return DmarcRecord(tags=tags, errors=errors, warnings=warnings)


def _check_uris(key: str, value: str, errors: list[str], warnings: list[str]) -> None:
    # RFC 7489 §6.2/§6.4: a comma-separated list of URIs; mailto is the one receivers
    # must support (§6.3 rua), others are ignored by most.
    for uri in (u.strip() for u in value.split(",")):
        if _MAILTO.fullmatch(uri):
            continue
        if _URI_SCHEME.fullmatch(uri) and not uri.lower().startswith("mailto:"):
            warnings.append(
                f"{key}={uri}: receivers only have to support mailto: addresses, so most "
                f"send no reports there; use {key}=mailto:address@your-domain."
            )
            continue
        errors.append(
            f"{key}={uri or '(empty)'} is not a valid report address: write "
            f"{key}=mailto:dmarc-reports@your-domain."
        )


def _normalize(name: str) -> str:
    return name.strip().rstrip(".").lower()


def _aligned(identifier: str, from_domain: str, mode: str) -> bool:
    # RFC 7489 §3.1.1/§3.1.2: strict means the same name, relaxed the same org domain.
    if mode == "s":
        return _normalize(identifier) == from_domain
    return organizational_domain(identifier) == organizational_domain(from_domain)


def _strength(policy: str, pct: int) -> float:
    # RFC 7489 §6.6.4: the pct share gets the policy, the rest the next weaker one.
    share = pct / 100
    return share * POLICY_POINTS[policy] + (1 - share) * POLICY_POINTS[_WEAKER[policy]]


def check_dmarc(
    *,
    domain: str,
    resolver: dns.resolver.Resolver,
    dkim_domain: str,
    return_path_host: str,
) -> CheckResult:
    """Check the DMARC record that applies to mail From ``domain``.

    Looks at ``_dmarc.<domain>``, else at the organizational domain's record (RFC 7489
    §6.6.3), whose ``sp`` (or ``p``) then applies. Points: 10 for a valid record plus up
    to 15 for its policy (none 0, quarantine 9, reject 15; pct blends in the weaker
    policy). Errors: no record, several, an invalid one, or mail we send (DKIM ``d=`` =
    ``dkim_domain``, envelope on ``return_path_host``) aligning through neither DKIM nor
    SPF. A DNS failure gives UNKNOWN.
    """
    domain = _normalize(domain)
    org = organizational_domain(domain)
    try:
        location, found = domain, _records(resolver, domain)
        if not found and org != domain:
            location, found = org, _records(resolver, org)
    except dnsutil.DnsFailure as exc:
        return unknown(NAME, f"Could not read the DMARC record of {domain}: {exc}. Try again.")
    host = f"_dmarc.{location}"
    if not found:
        searched = f"_dmarc.{domain}" + (f" or _dmarc.{org}" if org != domain else "")
        return error(
            NAME,
            f"No DMARC record at {searched}. Receivers such as Gmail and Yahoo require one "
            f"from bulk senders: publish a TXT record at _dmarc.{domain}: "
            f'"v=DMARC1; p=none; rua=mailto:dmarc-reports@{domain}" to start collecting '
            "reports.",
            location=None,
            org_domain=org,
        )
    if len(found) > 1:
        return error(
            NAME,
            f"{host} has {len(found)} DMARC records, so receivers apply none of them (RFC 7489 "
            f"§6.6.3): keep exactly one TXT record starting v=DMARC1 at {host}.",
            location=location,
            records=found,
            org_domain=org,
        )
    parsed = parse_dmarc(found[0])
    details: dict = {
        "record": found[0],
        "location": location,
        "inherited": location != domain,
        "org_domain": org,
        "tags": parsed.tags,
    }
    if not parsed.valid:
        return error(
            NAME,
            f"The DMARC record at {host} is invalid: {' '.join(parsed.errors)}",
            errors=parsed.errors,
            **details,
        )
    return _verdict(domain, host, parsed, dkim_domain, return_path_host, details)


def _records(resolver: dns.resolver.Resolver, name: str) -> list[str]:
    return [t for t in dnsutil.txt(resolver, f"_dmarc.{name}") if is_dmarc_record(t)]


def _verdict(
    domain: str,
    host: str,
    parsed: DmarcRecord,
    dkim_domain: str,
    return_path_host: str,
    details: dict,
) -> CheckResult:
    inherited = details["inherited"]
    # §6.3: a record found at the organizational domain applies to subdomains through sp.
    policy = parsed.subdomain_policy if inherited else parsed.policy
    policy_tag = "sp" if inherited and "sp" in parsed.tags else "p"
    pct = parsed.pct
    dkim_ok = _aligned(dkim_domain, domain, parsed.adkim)
    spf_ok = _aligned(return_path_host, domain, parsed.aspf)
    details.update(
        policy=policy,
        pct=pct,
        alignment={
            "dkim": {"domain": _normalize(dkim_domain), "mode": parsed.adkim, "aligned": dkim_ok},
            "spf": {
                "domain": _normalize(return_path_host),
                "mode": parsed.aspf,
                "aligned": spf_ok,
            },
        },
    )
    where = f"in the TXT record at {host}"
    if not dkim_ok and not spf_ok:
        if _aligned(dkim_domain, domain, "r") or _aligned(return_path_host, domain, "r"):
            fix = (
                f"Change adkim=s to adkim=r and aspf=s to aspf=r (or remove them) {where}; "
                "relaxed alignment accepts our signature and return path."
            )
        else:
            fix = (
                f"Our DKIM key and return path must be on {domain}: publish the DKIM and "
                "return-path records we list for this domain."
            )
        return error(
            NAME,
            f"Mail we send as {domain} fails DMARC: neither our DKIM signature "
            f"(d={dkim_domain}, adkim={parsed.adkim}) nor our return path ({return_path_host}, "
            f"aspf={parsed.aspf}) aligns with {domain}. {fix}",
            **details,
        )
    warnings: list[str] = list(parsed.warnings)
    notes: list[str] = []
    source = f"{host} (inherited from the organizational domain)" if inherited else host
    summary = f"The DMARC record at {source} is valid with {policy_tag}={policy}"
    summary += f" on {pct}% of failing mail." if pct < 100 else "."
    if not spf_ok:
        warnings.append(
            f"aspf={parsed.aspf} asks for strict SPF alignment, and our return path "
            f"{return_path_host} is not {domain} itself, so SPF does not align for mail we "
            f"send; it still passes DMARC through our DKIM signature (d={dkim_domain}). For "
            f"both to align, change aspf=s to aspf=r (or remove it) {where}."
        )
    if not dkim_ok:
        warnings.append(
            f"adkim={parsed.adkim} asks for strict DKIM alignment, and our signature's "
            f"d={dkim_domain} is not {domain}, so mail we send passes DMARC only through SPF, "
            f"which forwarding breaks: change adkim=s to adkim=r (or remove it) {where}."
        )
    if policy == "none":
        warnings.append(
            f"{policy_tag}=none is monitoring only: receivers deliver mail that fails DMARC "
            "as usual and just send reports. Once the reports show only your own mail "
            f"failing, change it to {policy_tag}=quarantine, then {policy_tag}=reject, {where}."
        )
    elif pct < 100:
        weaker = _WEAKER[policy]
        warnings.append(
            f"pct={pct}: receivers apply {policy_tag}={policy} to only {pct}% of failing mail "
            f"and treat the rest as {weaker}. Raise it to pct=100 (or remove pct) {where}."
        )
    elif policy == "quarantine":
        notes.append(
            "Failing mail goes to spam; once the reports show only your own mail failing, "
            f"consider {policy_tag}=reject."
        )
    if "rua" not in parsed.tags:
        notes.append(f"Add rua=mailto:dmarc-reports@{domain} {where} to receive aggregate reports.")
    points = RECORD_POINTS + round(_strength(policy, pct), 1)
    if warnings:
        return warning(NAME, " ".join([summary, *warnings, *notes]), points=points, **details)
    return ok(NAME, " ".join([summary, *notes]), points=points, **details)
