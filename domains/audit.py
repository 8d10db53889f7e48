"""The audit log: every change a person or an API key makes in a tenant leaves one row.

Call ``record`` in the same transaction as the change where there is one, so a change
and its row are stored together or not at all.
"""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest

from domains.models import AuditEntry, Tenant


def actor_of(request: HttpRequest | None) -> tuple[Any, str]:
    """The user (or None) and the label the log shows for whoever made ``request``."""
    if request is None:
        return None, "system"
    auth = getattr(request, "auth", None)
    prefix = getattr(auth, "prefix", None)
    if prefix is not None:  # a DRF request authenticated by an API key
        return None, f"API key sm_{prefix}"
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return None, "anonymous"
    path = getattr(request, "path", "")
    if user.is_staff and path.startswith("/admin/"):
        return user, f"operator {user.get_username()}"
    return user, user.get_username()


def client_ip(request: HttpRequest | None) -> str | None:
    """The peer address as the WSGI server saw it (a proxy's own address behind one)."""
    if request is None:
        return None
    return request.META.get("REMOTE_ADDR") or None


def record(
    request: HttpRequest | None,
    *,
    tenant: Tenant | int,
    action: str,
    target: str = "",
    **detail: Any,
) -> AuditEntry:
    """Store that whoever made ``request`` did ``action`` to ``target`` in ``tenant``."""
    actor, label = actor_of(request)
    tenant_id = tenant if isinstance(tenant, int) else tenant.pk
    return AuditEntry.objects.create(
        tenant_id=tenant_id,
        actor=actor,
        actor_label=label[:200],
        action=action,
        target=str(target)[:300],
        detail=detail,
        ip=client_ip(request),
    )
