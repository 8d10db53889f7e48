"""Template context: the current tenant and the user's tenants (for the switcher)."""

from domains import current
from domains.roles import Permissions
from domains.tenancy import tenants_of


def current_tenant(request) -> dict:
    if not hasattr(request, "user"):
        return {}
    return {
        "tenant": current.current_tenant(request),
        "my_tenants": tenants_of(request.user),
        "can": Permissions(current.current_role(request)),
    }
