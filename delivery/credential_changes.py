"""Credential changes made by a person (dashboard) or an API key (API): each use case of
delivery/credentials.py with its audit row, in one transaction. Both doors call these,
so a change and its row are stored together or not at all, and are named alike.

The log names an SMTP login by its username and an API key by its public prefix; it
never holds a password, a key or a hash.
"""

from __future__ import annotations

from django.db import transaction
from django.http import HttpRequest

from delivery.credentials import (
    create_api_key,
    create_smtp_credential,
    revoke,
    rotate_api_key,
    rotate_smtp_credential,
)
from delivery.models import ApiKey, SmtpCredential
from domains import audit
from domains.models import Domain, Tenant


def key_label(row: ApiKey) -> str:
    """How the audit log names a key: its public prefix, never the key."""
    return f"sm_{row.prefix}"


def label(row: SmtpCredential | ApiKey) -> str:
    return row.username if isinstance(row, SmtpCredential) else key_label(row)


def kind(row: SmtpCredential | ApiKey) -> str:
    return "smtp_credential" if isinstance(row, SmtpCredential) else "api_key"


def create_login(
    request: HttpRequest, *, tenant: Tenant, domains: list[Domain], description: str
) -> tuple[SmtpCredential, str]:
    with transaction.atomic():
        row, password = create_smtp_credential(
            tenant=tenant, domains=domains, description=description
        )
        audit.record(
            request,
            tenant=tenant,
            action="smtp_credential.created",
            target=row.username,
            description=row.description,
            domains=sorted(d.name for d in domains),
        )
    return row, password


def create_key(
    request: HttpRequest, *, tenant: Tenant, name: str, role: str, granted_by: str | None
) -> tuple[ApiKey, str]:
    with transaction.atomic():
        row, key = create_api_key(tenant=tenant, name=name, role=role, granted_by=granted_by)
        audit.record(
            request,
            tenant=tenant,
            action="api_key.created",
            target=key_label(row),
            name=row.name,
            role=row.role,
        )
    return row, key


def rotate(
    request: HttpRequest, row: SmtpCredential | ApiKey, *, granted_by: str | None = None
) -> tuple[SmtpCredential | ApiKey, str]:
    """A new login or key in place of ``row`` (revoked now), with the new secret."""
    with transaction.atomic():
        if isinstance(row, SmtpCredential):
            new, secret = rotate_smtp_credential(row)
            detail = {}
        else:
            new, secret = rotate_api_key(row, granted_by=granted_by)
            detail = {"name": new.name, "role": new.role}
        audit.record(
            request,
            tenant=row.tenant_id,
            action=f"{kind(row)}.rotated",
            target=label(row),
            replaced_by=label(new),
            **detail,
        )
    return new, secret


def revoke_recorded(request: HttpRequest, row: SmtpCredential | ApiKey) -> bool:
    """Revoke ``row``; False (and no audit row) when it was revoked already."""
    with transaction.atomic():
        revoked_now = revoke(row)
        if revoked_now:
            audit.record(
                request, tenant=row.tenant_id, action=f"{kind(row)}.revoked", target=label(row)
            )
    return revoked_now
