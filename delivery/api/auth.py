"""API key authentication (``Authorization: Bearer sm_<prefix>_<secret>``) and what a
key may do: its role (domains/roles.py) must grant the capability the request needs,
else 403 ``role_forbidden``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.core.exceptions import ImproperlyConfigured
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, exceptions, permissions

from delivery.credentials import check_api_key
from delivery.models import ApiKey
from domains.models import Role
from domains.roles import RANK, Capability, can

if TYPE_CHECKING:
    from delivery.api.errors import ApiError


class ApiKeyAuthentication(authentication.BaseAuthentication):
    keyword = "Bearer"

    def authenticate(self, request):
        header = authentication.get_authorization_header(request).decode("latin-1")
        if not header:
            return None
        scheme, _, key = header.partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise exceptions.AuthenticationFailed("Send the key as `Authorization: Bearer <key>`.")
        api_key = check_api_key(key.strip())
        if api_key is None:
            raise exceptions.AuthenticationFailed("Invalid or revoked API key.")
        return (None, api_key)

    def authenticate_header(self, request) -> str:
        # Makes DRF answer 401 (with WWW-Authenticate), not 403, when the key is missing.
        return 'Bearer realm="api"'


# What each capability lets a key do, as the refusal names it.
DOING = {
    Capability.VIEW: "read this tenant's data",
    Capability.SEND: "send mail",
    Capability.MANAGE_CREDENTIALS: "manage SMTP logins and API keys",
    Capability.MANAGE_WEBHOOKS: "manage webhooks",
    Capability.MANAGE_SUPPRESSIONS: "change the suppression list",
    Capability.MANAGE_DOMAINS: "manage domains",
}


def least_role(capability: Capability) -> str:
    """The least role that grants ``capability`` (every role above it does too)."""
    return next(role for role in RANK if can(role, capability))


def role_forbidden(role: str, capability: Capability) -> ApiError:
    """403 ``role_forbidden``: what the key's role lacks, and the least role that has it."""
    # Imported here: errors imports rest_framework.views, which imports this module (the
    # authentication setting) while loading.
    from delivery.api.errors import ApiError

    needed = Role(least_role(capability)).label.lower()
    doing = DOING.get(capability, capability.value.replace("_", " "))
    return ApiError(
        "role_forbidden",
        f"This API key's role ({Role(role).label.lower()}) may not {doing}: that needs a "
        f"key of role {needed} or above.",
    )


def required_capability(request, view) -> Capability:
    """What the request does: reading (GET, HEAD, OPTIONS) is VIEW; anything else is the
    view's ``capability``, which every API view with a changing method declares (a test
    walks the URLs to make sure)."""
    if request.method in permissions.SAFE_METHODS:
        return Capability.VIEW
    capability = getattr(view, "capability", None)
    if capability is None:
        raise ImproperlyConfigured(f"{type(view).__name__} declares no capability.")
    return capability


class HasApiKey(permissions.BasePermission):
    """A live API key whose role grants what the request does (the API's default).

    No query: the role is a column of the key row that authentication already read (and
    keeps cached, delivery/credentials.py), so the send path pays a set lookup.
    """

    message = "An API key is required: `Authorization: Bearer <key>`."

    def has_permission(self, request, view) -> bool:
        api_key = request.auth
        if not isinstance(api_key, ApiKey):
            return False  # 401 with WWW-Authenticate (ApiKeyAuthentication)
        capability = required_capability(request, view)
        if not can(api_key.role, capability):
            raise role_forbidden(api_key.role, capability)
        return True


def key_role(request) -> str:
    """The role of the key making ``request``: what it may hand out to a new key."""
    return request.auth.role


class ApiKeyScheme(OpenApiAuthenticationExtension):
    """Describes the key in the OpenAPI schema as an HTTP bearer scheme."""

    target_class = ApiKeyAuthentication
    name = "ApiKey"

    def get_security_definition(self, auto_schema):
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "An API key: sm_<prefix>_<secret>",
        }
