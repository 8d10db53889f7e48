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
from domains.models import Domain, Tenant
from sendmsg import read_cache, sql

SMTP_PURPOSE = "smtp password"
LAST_USED_RESOLUTION = timedelta(minutes=1)
API_PURPOSE = "api key"


class CredentialError(ValueError):
    pass


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


def create_api_key(*, tenant: Tenant, name: str = "") -> tuple[ApiKey, str]:
    """A new API key; returns it with the full key, which is not stored and never shown again."""
    prefix = secrets.token_hex(4)
    key = f"sm_{prefix}_{new_secret(24)}"
    api_key = ApiKey.objects.create(
        tenant=tenant, name=name, prefix=prefix, key_hash=keyed_hash(key, purpose=API_PURPOSE)
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


def rotate_api_key(api_key: ApiKey) -> tuple[ApiKey, str]:
    """A new key with the same name; the old one is revoked (claimed first, as above)."""
    with transaction.atomic():
        if not revoke(api_key):
            raise CredentialError("This key is revoked; create a new one instead.")
        return create_api_key(tenant=api_key.tenant, name=api_key.name)
