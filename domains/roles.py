"""Who may do what in a tenant: each role grants a set of capabilities.

One table, read by the dashboard (buttons shown, POSTs refused with 403), by the API
(keys carry a role) and by the tests. A person's role is their Membership's; an API key's
is the role it was created with, never more than its creator's.
"""

from __future__ import annotations

from enum import StrEnum

from domains.models import Role


class Capability(StrEnum):
    VIEW = "view"  # every page and GET endpoint of the tenant
    SEND = "send"  # send mail through the API
    MANAGE_CREDENTIALS = "manage_credentials"  # SMTP logins and API keys
    MANAGE_WEBHOOKS = "manage_webhooks"
    MANAGE_SUPPRESSIONS = "manage_suppressions"
    MANAGE_DOMAINS = "manage_domains"  # add, check, disable, delete, rotate keys
    MANAGE_TEAM = "manage_team"  # invite, change roles, remove members
    MANAGE_SETTINGS = "manage_settings"  # tenant settings
    VIEW_AUDIT = "view_audit"  # the audit log
    MANAGE_OWNERS = "manage_owners"  # make or remove owners


_DEVELOPER = {
    Capability.VIEW,
    Capability.SEND,
    Capability.MANAGE_CREDENTIALS,
    Capability.MANAGE_WEBHOOKS,
    Capability.MANAGE_SUPPRESSIONS,
}
_ADMIN = _DEVELOPER | {
    Capability.MANAGE_DOMAINS,
    Capability.MANAGE_TEAM,
    Capability.MANAGE_SETTINGS,
    Capability.VIEW_AUDIT,
}
GRANTS: dict[str, frozenset[Capability]] = {
    Role.VIEWER: frozenset({Capability.VIEW}),
    Role.DEVELOPER: frozenset(_DEVELOPER),
    Role.ADMIN: frozenset(_ADMIN),
    Role.OWNER: frozenset(Capability),
}
# Roles from least to most: a person grants (to a key or an invitee) at most their own.
RANK = [Role.VIEWER, Role.DEVELOPER, Role.ADMIN, Role.OWNER]


def can(role: str | None, capability: Capability) -> bool:
    """Whether ``role`` (None: no membership) grants ``capability``."""
    return role is not None and capability in GRANTS.get(role, frozenset())


def at_most(role: str, limit: str) -> bool:
    """Whether ``role`` is no more than ``limit`` (what a person may hand out)."""
    return RANK.index(Role(role)) <= RANK.index(Role(limit))


class Permissions:
    """A role's capabilities as attributes, for templates: ``{% if can.manage_domains %}``."""

    def __init__(self, role: str | None) -> None:
        self.role = role
        for capability in Capability:
            setattr(self, capability.value, can(role, capability))
