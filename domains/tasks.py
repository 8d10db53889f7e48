"""Periodic domain re-checks (a django-q2 schedule runs recheck_due every few minutes)."""

from __future__ import annotations

import logging
from datetime import timedelta

from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from domains.checks.run import check_domain
from domains.models import Domain, DomainStatus

log = logging.getLogger(__name__)
BATCH = 50


def due_domains(now=None):
    """Verified domains not checked for an hour, pending ones for a few minutes."""
    now = now or timezone.now()
    verified_before = now - timedelta(minutes=settings.SENDMSG_DOMAIN_RECHECK_MINUTES)
    pending_before = now - timedelta(minutes=settings.SENDMSG_PENDING_RECHECK_MINUTES)
    return (
        Domain.objects.exclude(status=DomainStatus.DISABLED)
        .filter(
            Q(checked_at__isnull=True)
            | Q(status=DomainStatus.VERIFIED, checked_at__lt=verified_before)
            | Q(status=DomainStatus.PENDING, checked_at__lt=pending_before)
        )
        .order_by("checked_at")
    )


def recheck_due() -> int:
    """Check up to BATCH due domains, the longest unchecked first."""
    domains = list(due_domains()[:BATCH])
    for domain in domains:
        report = check_domain(domain)
        log.info("domain=%s score=%s verified=%s", domain.name, report.score, report.verified)
    return len(domains)
