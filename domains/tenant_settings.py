"""A tenant's own settings: its name and its one-click unsubscribe default.

One use case, ``change_settings``, behind the dashboard's Settings page (an API or a
command would call it the same way). The operator-only facts (suspension, plan rate) are
not changed here: they are the admin's.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.http import HttpRequest

from domains import audit
from domains.models import Tenant

ACTION = "tenant.settings_changed"


class SettingsError(ValueError):
    """A change the tenant may not make; the message says why, for the person."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


def name_problem(name: str, *, tenant: Tenant) -> str | None:
    """Why ``tenant`` may not be called ``name``, or None if it may."""
    if not name:
        return "Enter a name."
    platform = settings.SENDMSG_PLATFORM_TENANT
    if name.lower() == platform.lower() and tenant.name != platform:
        return f"The name {name!r} is reserved for the platform; choose another."
    if Tenant.objects.filter(name__iexact=name).exclude(pk=tenant.pk).exists():
        return f"An organization named {name!r} exists already; choose another."
    return None


def change_settings(
    *, tenant: Tenant, name: str, list_unsubscribe: bool, request: HttpRequest | None
) -> list[str]:
    """Set ``tenant``'s name and unsubscribe default; the names of the fields that changed
    (none: nothing is stored and no audit row written).

    The change and its audit row (old and new value of each changed field) are stored
    together. ``tenant`` is updated in place. Raises SettingsError (field "name") when the
    name is taken, case-insensitively, or reserved for the platform.
    """
    name = name.strip()
    try:
        with transaction.atomic():
            # Locked and read again: the audit row's "old" is what was stored, not what
            # this request read a moment ago, and two changes at once apply in turn.
            row = Tenant.objects.select_for_update().get(pk=tenant.pk)
            if row.name == settings.SENDMSG_PLATFORM_TENANT and name != row.name:
                raise SettingsError(
                    "The platform's own tenant keeps its name (SENDMSG_PLATFORM_TENANT).",
                    field="name",
                )
            if name != row.name:
                problem = name_problem(name, tenant=row)
                if problem:
                    raise SettingsError(problem, field="name")
            wanted = {"name": name, "list_unsubscribe": bool(list_unsubscribe)}
            changes: dict[str, dict[str, Any]] = {
                field: {"old": getattr(row, field), "new": value}
                for field, value in wanted.items()
                if getattr(row, field) != value
            }
            if not changes:
                return []
            for field, change in changes.items():
                setattr(row, field, change["new"])
            # save(), not a bulk update: its post_save makes this process's read caches
            # (reputation/gate.py, delivery/unsubscribe.py) forget the tenant, so the very
            # next message sees the new default.
            row.save(update_fields=list(changes))
            audit.record(request, tenant=row, action=ACTION, target=row.name, **changes)
    except IntegrityError:  # the same name (same case) stored a moment ago
        raise SettingsError(
            f"An organization named {name!r} exists already; choose another.", field="name"
        ) from None
    for field, change in changes.items():
        setattr(tenant, field, change["new"])
    return list(changes)
