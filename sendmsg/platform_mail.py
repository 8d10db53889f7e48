"""The platform's own mail (password resets, invitations), sent like any tenant's.

Django's outgoing mail (``django.core.mail``) is handed to ``EmailBackend`` below
(``EMAIL_BACKEND``), which queues each message through ``delivery.accept.accept_message``
from ``SENDMSG_PLATFORM_FROM``: it is DKIM-signed with the platform domain's key, relayed
to the recipients' MX hosts by the workers, retried, and listed in the admin like any
other message. The domain of that address belongs to the platform's own tenant
(``SENDMSG_PLATFORM_TENANT``), which ``manage.py bootstrap`` creates with ``ensure_platform``
and marks verified on the operator's word: its DNS records (``manage.py domain records
<domain>``) still have to be published for outside receivers to trust the mail.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from email.utils import parseaddr

from django.conf import settings
from django.core.mail import EmailMessage
from django.core.mail.backends.base import BaseEmailBackend
from django.db import transaction

from delivery.accept import AcceptError, Sender, accept_message
from delivery.models import Source
from domains.models import Domain, DomainStatus, Tenant
from domains.names import InvalidDomain, domain_of
from domains.tenancy import TenancyError, add_domain

log = logging.getLogger(__name__)

TAG = "platform"  # every message the platform sends itself carries this tag


class PlatformMailError(RuntimeError):
    """The platform cannot send its own mail; the message says what the operator should do."""


def platform_domain_name() -> str:
    """The (ASCII) domain of ``SENDMSG_PLATFORM_FROM``."""
    try:
        return domain_of(settings.SENDMSG_PLATFORM_FROM)
    except InvalidDomain as exc:
        raise PlatformMailError(f"SENDMSG_PLATFORM_FROM is not a usable address: {exc}") from None


def platform_domain() -> Domain:
    """The platform's verified sending domain, or PlatformMailError saying what is missing."""
    name = platform_domain_name()
    domain = Domain.objects.filter(name=name).first()
    if domain is None:
        raise PlatformMailError(
            f"The platform's sending domain {name} does not exist: run `manage.py bootstrap`."
        )
    if domain.status != DomainStatus.VERIFIED:
        raise PlatformMailError(
            f"The platform's sending domain {name} is {domain.status}, not verified: publish "
            f"its records (`manage.py domain records {name}`) and run `manage.py bootstrap`."
        )
    return domain


@dataclass(frozen=True)
class PlatformSetup:
    tenant: Tenant
    domain: Domain
    created: bool  # the domain was created now
    verified_now: bool  # it was marked verified now


def ensure_platform() -> PlatformSetup:
    """Create the platform's tenant and sending domain (with its DKIM key) if missing, and
    mark the domain verified on the operator's word. Safe to repeat."""
    name = platform_domain_name()
    with transaction.atomic():
        domain = Domain.objects.select_related("tenant").filter(name=name).first()
        created = domain is None
        if domain is None:
            tenant, _ = Tenant.objects.get_or_create(name=settings.SENDMSG_PLATFORM_TENANT)
            if tenant.memberships.exists():
                raise PlatformMailError(
                    f"A tenant named {tenant.name!r} with members exists already; set "
                    "SENDMSG_PLATFORM_TENANT to another name for the platform's own tenant."
                )
            try:
                domain = add_domain(tenant=tenant, name=name)
            except TenancyError as exc:
                raise PlatformMailError(str(exc)) from None
        verified_now = domain.status == DomainStatus.PENDING
        if verified_now:
            # The operator vouches for it; its published records are still what outside
            # receivers check (DKIM, SPF through the return path).
            domain.set_verified(True)
    return PlatformSetup(
        tenant=domain.tenant, domain=domain, created=created, verified_now=verified_now
    )


def _address(value: str) -> str:
    return parseaddr(value)[1]


def send_platform_message(message: EmailMessage) -> str:
    """Queue one Django message from the platform; returns its queue id. Raises
    PlatformMailError when the platform cannot send it (set-up missing, refused)."""
    domain = platform_domain()
    recipients = [a for a in (_address(r) for r in message.recipients()) if a]
    if not recipients:
        raise PlatformMailError("A platform message needs a recipient.")
    raw = message.message().as_bytes(linesep="\r\n")
    try:
        accepted = accept_message(
            sender=Sender(tenant_id=domain.tenant_id),
            mail_from=settings.SENDMSG_PLATFORM_FROM,
            recipients=recipients,
            raw=raw,
            source=Source.API,
            tags=[TAG],
        )
    except AcceptError as exc:
        raise PlatformMailError(f"The platform's own mail was refused: {exc}") from None
    return accepted.queue_id


class EmailBackend(BaseEmailBackend):
    """Django's mail, queued through the platform's own accept path (see the module)."""

    def send_messages(self, email_messages: Sequence[EmailMessage]) -> int:
        sent = 0
        for message in email_messages:
            try:
                queue_id = send_platform_message(message)
            except PlatformMailError as exc:
                log.error("platform mail not sent (subject %r): %s", message.subject, exc)
                if not self.fail_silently:
                    raise
            else:
                log.info("platform mail queued queue_id=%s", queue_id)
                sent += 1
        return sent
