"""Creating tenants and their sending domains (used by commands, dashboard and API)."""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractUser
from django.db import transaction

from domains.dkim_keys import generate_dkim_key
from domains.models import Domain, KeyState, Membership, Role, Tenant
from domains.names import InvalidDomain, normalize_domain


class TenancyError(ValueError):
    """Bad input for a tenancy action; the message is for the person who gave it."""


@dataclass(frozen=True)
class NewTenant:
    tenant: Tenant
    owner: AbstractUser
    password: str | None  # set when the owner's account was created here; shown once


def create_tenant(*, name: str, owner_email: str) -> NewTenant:
    name = name.strip()
    if not name:
        raise TenancyError("A tenant needs a name.")
    if "@" not in owner_email:
        raise TenancyError(f"{owner_email!r} is not an email address.")
    if Tenant.objects.filter(name__iexact=name).exists():
        raise TenancyError(f"A tenant named {name!r} exists already.")
    User = get_user_model()
    password = None
    with transaction.atomic():
        user = User.objects.filter(username__iexact=owner_email).first()
        if user is None:
            password = secrets.token_urlsafe(12)
            user = User.objects.create_user(
                username=owner_email.lower(), email=owner_email.lower(), password=password
            )
        tenant = Tenant.objects.create(name=name)
        Membership.objects.create(tenant=tenant, user=user, role=Role.OWNER)
    return NewTenant(tenant=tenant, owner=user, password=password)


def add_domain(*, tenant: Tenant, name: str) -> Domain:
    """Add a sending domain (pending until its records check out) with a new DKIM key."""
    try:
        ascii_name = normalize_domain(name)
    except InvalidDomain as exc:
        raise TenancyError(str(exc)) from None
    if Domain.objects.filter(name=ascii_name).exists():
        raise TenancyError(f"{ascii_name} is already registered.")
    with transaction.atomic():
        domain = Domain.objects.create(tenant=tenant, name=ascii_name)
        # The first key signs from the start: nothing is sent before the domain is
        # verified, and verification needs this key's record.
        generate_dkim_key(domain=domain, state=KeyState.ACTIVE)
    return domain


def delete_domain(*, domain: Domain) -> None:
    """Delete a domain and its keys; refused while messages refer to it (disable it)."""
    if domain.messages.exists():
        raise TenancyError(
            f"{domain.name} has sent mail, whose history refers to it: disable it instead."
        )
    domain.delete()


def tenants_of(user) -> list[Tenant]:
    if not user.is_authenticated:
        return []
    return list(Tenant.objects.filter(memberships__user=user).order_by("name"))
