"""SMTP credentials and API keys: creation (secret shown once) and checking."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import timedelta
from functools import cache, partial

from django.db import transaction
from django.db.models.signals import post_delete, post_save
from django.utils import timezone

from delivery.keyed_hash import keyed_hash, matches, new_secret
from delivery.models import ApiKey, SmtpCredential
from domains.models import Domain, Role, Tenant
from domains.roles import RANK, at_most
from sendmsg import read_cache, sql

SMTP_PURPOSE = "smtp password"
LAST_USED_RESOLUTION = timedelta(minutes=1)
API_PURPOSE = "api key"


class CredentialError(ValueError):
    pass


class GrantError(CredentialError):
    """A key of more than its creator's role was asked for (see ``check_grant``)."""


@dataclass(frozen=True)
class SmtpIdentity:
    """Who an SMTP session authenticated as; kept on the session after AUTH."""

    credential_id: int
    tenant_id: int
    username: str
    domain_ids: frozenset[int]  # empty: every domain of the tenant


def create_smtp_credential(
    *, tenant: Tenant, domains: list[Domain] | None = None, description: str = ""
) -> tuple[SmtpCredential, str]:
    """A new login; returns it with its password, which is not stored and never shown again."""
    for domain in domains or []:
        if domain.tenant_id != tenant.pk:
            raise CredentialError(f"{domain.name} is not a domain of {tenant.name}.")
    password = new_secret(24)
    credential = SmtpCredential.objects.create(
        tenant=tenant,
        username=f"smtp-{secrets.token_hex(6)}",
        password_hash=keyed_hash(password, purpose=SMTP_PURPOSE),
        description=description,
    )
    if domains:
        credential.domains.set(domains)
    return credential, password


def check_smtp_login(username: str, password: str) -> SmtpIdentity | None:
    """The identity for a correct login, else None. Fast: one keyed hash, one query."""
    credential = (
        SmtpCredential.objects.filter(username=username, revoked=False)
        .prefetch_related("domains")
        .first()
    )
    if credential is None:
        # Hash anyway so a wrong username costs the same time as a wrong password.
        keyed_hash(password, purpose=SMTP_PURPOSE)
        return None
    if not matches(password, credential.password_hash, purpose=SMTP_PURPOSE):
        return None
    _touch(credential)
    return SmtpIdentity(
        credential_id=credential.pk,
        tenant_id=credential.tenant_id,
        username=credential.username,
        domain_ids=frozenset(d.pk for d in credential.domains.all()),
    )


def check_grant(*, role: str, granted_by: str | None) -> None:
    """Refuse a key of ``role`` to a creator whose own role is ``granted_by`` (a person's
    membership role, or the creating key's) when it is more than theirs: nobody hands out
    more than they have. None: an operator (manage.py), who is not limited."""
    if role not in Role.values:
        raise GrantError(f"Unknown role {role!r}: choose one of {', '.join(Role.values)}.")
    if granted_by is not None and not at_most(role, granted_by):
        allowed = [r.label.lower() for r in RANK if at_most(r, granted_by)]
        creator = Role(granted_by).label.lower()
        article = "An" if creator[0] in "aeiou" else "A"
        raise GrantError(
            f"{article} {creator} may create keys of role {' or '.join(allowed)}, "
            f"not {Role(role).label.lower()}."
        )


def create_api_key(
    *, tenant: Tenant, name: str = "", role: str = Role.ADMIN, granted_by: str | None = None
) -> tuple[ApiKey, str]:
    """A new API key of ``role``; returns it with the full key, which is not stored and
    never shown again. ``granted_by`` is the creator's role (see ``check_grant``); the
    dashboard and the API always pass it, and choose developer unless told otherwise."""
    check_grant(role=role, granted_by=granted_by)
    prefix = secrets.token_hex(4)
    key = f"sm_{prefix}_{new_secret(24)}"
    api_key = ApiKey.objects.create(
        tenant=tenant,
        name=name,
        prefix=prefix,
        key_hash=keyed_hash(key, purpose=API_PURPOSE),
        role=role,
    )
    return api_key, key


_api_keys: read_cache.ReadCache[str, ApiKey] = read_cache.ReadCache("api keys")


def check_api_key(key: str) -> ApiKey | None:
    """The live key matching ``key`` (looked up by its keyed hash), else None.

    One statement written once (sendmsg/sql.py: every API call asks this), and its answer
    kept for a moment (sendmsg/read_cache.py): a key revoked by another process stops
    working within ``SENDMSG_STATE_CACHE_SECONDS``; one revoked here (``revoke``), at once.
    The key's ``tenant`` is loaded when first used.
    """
    digest = keyed_hash(key, purpose=API_PURPOSE)
    api_key = _api_keys.get(digest, partial(_load_api_key, digest))
    if api_key is not None:
        _touch(api_key)
    return api_key


def _forget_api_key(sender, instance: ApiKey, **kwargs) -> None:
    _api_keys.forget(instance.key_hash)


post_save.connect(_forget_api_key, sender=ApiKey, dispatch_uid="credentials-forget-key")
post_delete.connect(_forget_api_key, sender=ApiKey, dispatch_uid="credentials-forget-key")


def _load_api_key(digest: str) -> ApiKey | None:
    fields, query = _api_key_sql()
    row = sql.fetch_one(query, [digest, False])
    return None if row is None else sql.load(ApiKey, fields, row)


@cache
def _api_key_sql() -> tuple[list[str], str]:
    fields, columns = sql.selected(ApiKey)
    return fields, (
        f"SELECT {columns} FROM {sql.table(ApiKey)} "
        f"WHERE {sql.column(ApiKey, 'key_hash')} = %s AND {sql.column(ApiKey, 'revoked')} = %s"
    )


def _touch(row: SmtpCredential | ApiKey) -> None:
    """Record a use, at most once a minute: no write per message on the hot path."""
    now = timezone.now()
    if row.last_used_at is None or now - row.last_used_at > LAST_USED_RESOLUTION:
        type(row).objects.filter(pk=row.pk).update(last_used_at=now)
        row.last_used_at = now


def revoke(row: SmtpCredential | ApiKey) -> bool:
    """Revoke ``row``; False when it was revoked already (by someone else, maybe)."""
    claimed = type(row).objects.filter(pk=row.pk, revoked=False).update(revoked=True)
    row.revoked = True
    if isinstance(row, ApiKey):
        _api_keys.forget(row.key_hash)
    return bool(claimed)


def rotate_smtp_credential(credential: SmtpCredential) -> tuple[SmtpCredential, str]:
    """A new login with the same tenant, description and domain limits; the old one is
    revoked. Returns the new login and its password (shown once).

    The old row is claimed first with one conditional update, so a double-click or a
    second caller gets CredentialError instead of leaving an extra working login.
    """
    with transaction.atomic():
        if not revoke(credential):
            raise CredentialError("This login is revoked; create a new one instead.")
        return create_smtp_credential(
            tenant=credential.tenant,
            domains=list(credential.domains.all()),
            description=credential.description,
        )


def rotate_api_key(api_key: ApiKey, *, granted_by: str | None = None) -> tuple[ApiKey, str]:
    """A new key with the same name and role; the old one is revoked (claimed first, as
    above). Rotating hands out a new secret of the key's role, so it is refused, like a
    creation, to a creator whose role ``granted_by`` is less than the key's."""
    check_grant(role=api_key.role, granted_by=granted_by)
    with transaction.atomic():
        if not revoke(api_key):
            raise CredentialError("This key is revoked; create a new one instead.")
        return create_api_key(
            tenant=api_key.tenant, name=api_key.name, role=api_key.role, granted_by=granted_by
        )
