"""Running all checks of a domain at once, scoring them, and recording what changed."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from domains.checks.dkim import check_dkim
from domains.checks.dmarc import check_dmarc
from domains.checks.mx import check_mx
from domains.checks.results import CheckResult, CheckStatus, is_partial, score_of
from domains.checks.return_path import check_return_path
from domains.checks.spf import check_spf
from domains.checks.transport import check_bimi, check_mta_sts, check_tls_rpt
from domains.dkim_keys import activate_seen_keys
from domains.models import Domain, DomainCheck, DomainEvent, DomainEventType
from sendmsg.resolver import make_resolver

ORDER = ("dkim", "return_path", "spf", "dmarc", "mx", "mta_sts", "tls_rpt", "bimi")


@dataclass(frozen=True)
class DomainReport:
    results: list[CheckResult]
    verified: bool | None  # None: a resolver failure left it undetermined
    events: list[DomainEvent] = field(default_factory=list)

    @property
    def partial(self) -> bool:
        return is_partial(self.results)

    @property
    def score(self) -> int:
        return score_of(self.results) or 0

    def result(self, name: str) -> CheckResult:
        return next(r for r in self.results if r.name == name)


def run_checks(domain: Domain, *, timeout: float | None = None) -> tuple[list[CheckResult], set]:
    """Every check, concurrently; each DNS query is bounded by the resolver's lifetime."""
    resolver = make_resolver(timeout=timeout)
    # Rows are read here, not in the threads: the checks themselves touch only DNS.
    keys = list(domain.dkim_keys.all())
    name, rp_host = domain.name, domain.return_path_host
    with ThreadPoolExecutor(max_workers=len(ORDER)) as pool:
        dkim = pool.submit(check_dkim, keys, resolver)
        return_path = pool.submit(
            check_return_path,
            host=rp_host,
            target=settings.SENDMSG_RETURN_PATH_DOMAIN,
            resolver=resolver,
        )
        others = {
            "dmarc": pool.submit(
                check_dmarc,
                domain=name,
                resolver=resolver,
                dkim_domain=name,
                return_path_host=rp_host,
            ),
            "mx": pool.submit(check_mx, domain=name, resolver=resolver),
            "mta_sts": pool.submit(check_mta_sts, domain=name, resolver=resolver),
            "tls_rpt": pool.submit(check_tls_rpt, domain=name, resolver=resolver),
            "bimi": pool.submit(check_bimi, domain=name, resolver=resolver),
        }
        # SPF's verdict depends on whether the return path aligns; its own queries start
        # as soon as that answer is in, while the other checks keep running.
        spf = pool.submit(
            lambda: check_spf(
                domain=name,
                resolver=resolver,
                platform_include=settings.SENDMSG_SPF_INCLUDE,
                return_path_ok=_ok(return_path.result()),
            )
        )
        dkim_result, seen = dkim.result()
        by_name = {"dkim": dkim_result, "return_path": return_path.result(), "spf": spf.result()}
        by_name.update({k: f.result() for k, f in others.items()})
    return [by_name[n] for n in ORDER], seen


def _ok(result: CheckResult) -> bool | None:
    if result.status == CheckStatus.UNKNOWN:
        return None
    return result.status == CheckStatus.OK


def is_verified(results: dict[str, CheckResult]) -> bool | None:
    """DKIM published, plus an aligned return path (or the platform in the root's SPF).

    None when a resolver failure leaves it open: the domain then keeps its state.
    """
    dkim = results["dkim"].status
    dkim_ok = None if dkim == CheckStatus.UNKNOWN else dkim in (CheckStatus.OK, CheckStatus.WARNING)
    rp = _ok(results["return_path"])
    spf = results["spf"]
    spf_ok = (
        None if spf.status == CheckStatus.UNKNOWN else bool(spf.details.get("includes_platform"))
    )
    aligned = True if (rp or spf_ok) else (None if None in (rp, spf_ok) else False)
    if dkim_ok is False or aligned is False:
        return False
    if dkim_ok is None or aligned is None:
        return None
    return True


def check_domain(domain: Domain, *, timeout: float | None = None) -> DomainReport:
    """Check, score and record; key switches and state changes become DomainEvents."""
    results, seen = run_checks(domain, timeout=timeout)
    by_name = {r.name: r for r in results}
    verified = is_verified(by_name)
    report = DomainReport(results, verified)
    previous = domain.checks.first()
    events = report.events
    with transaction.atomic():
        if by_name["dkim"].status != CheckStatus.UNKNOWN:
            events += activate_seen_keys(domain=domain, seen_selectors=seen)
        DomainCheck.objects.create(
            domain=domain,
            score=report.score,
            partial=report.partial,
            verified=bool(verified if verified is not None else domain.dns_verified),
            results=[r.as_dict() for r in results],
        )
        domain.checked_at = timezone.now()
        domain.health_score = report.score
        domain.score_partial = report.partial
        domain.save(update_fields=["checked_at", "health_score", "score_partial"])
        if verified is not None and verified != domain.dns_verified:
            domain.set_verified(verified)
            kind = DomainEventType.VERIFIED if verified else DomainEventType.UNVERIFIED
            events.append(_event(domain, kind, kind.label))
        if previous is not None and previous.score != report.score:
            events.append(
                _event(
                    domain,
                    DomainEventType.SCORE_CHANGED,
                    f"Health score {previous.score} → {report.score}.",
                )
            )
        for result in results:
            before = previous.status_of(result.name) if previous else None
            if before is not None and before != result.status:
                events.append(
                    _event(
                        domain,
                        DomainEventType.CHECK_CHANGED,
                        f"{result.name}: {before} → {result.status}. {result.message}",
                    )
                )
    return report


def _event(domain: Domain, kind: DomainEventType, message: str) -> DomainEvent:
    return DomainEvent.objects.create(
        domain=domain, tenant_id=domain.tenant_id, type=kind, message=message
    )
