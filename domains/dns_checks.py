"""DNS checks of a sending domain: does the world see the records we asked for?"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import dns.exception
import dns.name
import dns.resolver
from django.conf import settings
from django.db import models

from domains.models import DkimKey, Domain
from sendmsg.resolver import make_resolver


class CheckStatus(models.TextChoices):
    OK = "ok", "OK"
    WARNING = "warning", "Warning"
    ERROR = "error", "Error"
    UNKNOWN = "unknown", "Unknown (DNS did not answer; try again)"


@dataclass(frozen=True)
class CheckResult:
    name: str
    status: CheckStatus
    message: str
    required: bool = True


@dataclass(frozen=True)
class DomainReport:
    results: list[CheckResult]

    @property
    def verified(self) -> bool:
        return all(r.status == CheckStatus.OK for r in self.results if r.required)

    @property
    def score(self) -> int:
        """0–100: each check counts fully when ok, half when a warning."""
        weights = {CheckStatus.OK: 1.0, CheckStatus.WARNING: 0.5}
        total = sum(weights.get(r.status, 0.0) for r in self.results)
        return round(100 * total / len(self.results)) if self.results else 0


def _txt_values(resolver: dns.resolver.Resolver, name: str) -> list[str]:
    answer = resolver.resolve(name, "TXT")
    return [b"".join(rr.strings).decode("ascii", "replace") for rr in answer]


def _tags(record: str) -> dict[str, str]:
    tags = {}
    for part in record.split(";"):
        key, sep, value = part.partition("=")
        if sep:
            tags[key.strip()] = "".join(value.split())
    return tags


def check_dkim(key: DkimKey | None, resolver: dns.resolver.Resolver) -> CheckResult:
    if key is None:
        return CheckResult("dkim", CheckStatus.ERROR, "No DKIM key: generate one for this domain.")
    name = key.record_name
    try:
        values = _txt_values(resolver, name)
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        return CheckResult(
            "dkim", CheckStatus.ERROR, f"No TXT record at {name}: publish the DKIM record."
        )
    except dns.exception.DNSException as exc:
        return CheckResult("dkim", CheckStatus.UNKNOWN, f"DNS lookup of {name} failed: {exc}")
    published = [_tags(v).get("p") for v in values if "p=" in v]
    if key.public_key in published:
        return CheckResult("dkim", CheckStatus.OK, f"{name} publishes our {key.bits}-bit key.")
    if not published:
        return CheckResult("dkim", CheckStatus.ERROR, f"The TXT record at {name} has no p= key.")
    return CheckResult(
        "dkim",
        CheckStatus.ERROR,
        f"The key at {name} is not ours: copy the record's value again, whole.",
    )


def check_return_path(host: str, resolver: dns.resolver.Resolver) -> CheckResult:
    target = dns.name.from_text(settings.SENDMSG_RETURN_PATH_DOMAIN)
    try:
        answer = resolver.resolve(host, "CNAME")
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        return CheckResult(
            "return_path",
            CheckStatus.ERROR,
            f"No CNAME at {host}: point it at {settings.SENDMSG_RETURN_PATH_DOMAIN}.",
        )
    except dns.exception.DNSException as exc:
        return CheckResult(
            "return_path", CheckStatus.UNKNOWN, f"DNS lookup of {host} failed: {exc}"
        )
    found = [rr.target for rr in answer]
    if target in found:
        return CheckResult("return_path", CheckStatus.OK, f"{host} points at {target}.")
    return CheckResult(
        "return_path",
        CheckStatus.ERROR,
        f"{host} points at {found[0]}, not {target}: change the CNAME's target.",
    )


def check_domain(domain: Domain) -> DomainReport:
    """Run the checks concurrently (each bounded by the resolver's lifetime); store the outcome."""
    resolver = make_resolver()
    # Rows are read here, not in the threads: the checks themselves touch only DNS.
    key = domain.active_dkim_key()
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = [
            pool.submit(check_dkim, key, resolver),
            pool.submit(check_return_path, domain.return_path_host, resolver),
        ]
        results = [future.result() for future in futures]
    report = DomainReport(results)
    domain.record_check(passed=report.verified, score=report.score)
    return report
