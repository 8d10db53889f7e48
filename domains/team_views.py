"""The team page: members and their roles, invitations (domains/accounts.py decides).

Everyone in the tenant sees the page; the forms are shown, and their POSTs allowed, only
with Capability.MANAGE_TEAM (403 otherwise). A member or invitation of another tenant is
a 404 before any role is looked at. Every action is a POST form that works without
JavaScript (post, redirect, get); removing someone asks first on a page of its own.
"""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from domains import accounts
from domains.current import current_role, current_tenant, require
from domains.forms import InviteForm, RoleForm
from domains.models import Invitation, Membership, Role
from domains.roles import Capability

# -- tenant-scoped getters -----------------------------------------------------------------


def get_member_for(request: HttpRequest, pk: int) -> Membership:
    """A membership of the current tenant; any other tenant's is a 404, never a 403."""
    tenant = current_tenant(request)
    row = (
        Membership.objects.select_related("user").filter(pk=pk, tenant=tenant).first()
        if tenant
        else None
    )
    if row is None:
        raise Http404("No such member")
    return row


def get_invitation_for(request: HttpRequest, pk: int) -> Invitation:
    """An invitation of the current tenant; any other tenant's is a 404, never a 403."""
    tenant = current_tenant(request)
    row = Invitation.objects.filter(pk=pk, tenant=tenant).first() if tenant else None
    if row is None:
        raise Http404("No such invitation")
    return row


# -- pages ----------------------------------------------------------------------------------


def _team_page(request: HttpRequest, *, invite_form: InviteForm | None = None, status=200):
    tenant = current_tenant(request)
    context: dict = {"members": [], "invitations": []}
    if tenant is not None:
        role = current_role(request)
        roles = accounts.grantable_roles(role)
        members = list(
            Membership.objects.filter(tenant=tenant)
            .select_related("user")
            .order_by("user__username")
        )
        for member in members:
            member.is_me = member.user_id == request.user.pk
            member.role_form = RoleForm(
                initial={"role": member.role}, roles=roles, auto_id=f"id_m{member.pk}_%s"
            )
        context.update(
            members=members,
            invitations=tenant.invitations.pending().select_related("invited_by"),
            invite_form=invite_form or InviteForm(roles=roles),
            grantable=roles,
        )
    return render(request, "dashboard/team.html", context, status=status)


@login_required
@require_GET
def team_list(request: HttpRequest) -> HttpResponse:
    return _team_page(request)


@login_required
@require_POST
def invite(request: HttpRequest) -> HttpResponse:
    tenant = require(request, Capability.MANAGE_TEAM)
    role = current_role(request)
    form = InviteForm(request.POST, roles=accounts.grantable_roles(role))
    if not form.is_valid():
        return _team_page(request, invite_form=form, status=400)
    try:
        invitation = accounts.invite(
            request=request,
            tenant=tenant,
            actor_role=role,
            email=form.cleaned_data["email"],
            role=form.cleaned_data["role"],
        )
    except accounts.AccountError as exc:
        form.add_error("email", str(exc))
        return _team_page(request, invite_form=form, status=400)
    messages.success(
        request,
        f"Invitation sent to {invitation.email} as {invitation.get_role_display()}.",
    )
    return redirect("team:list")


@login_required
@require_POST
def member_role(request: HttpRequest, pk: int) -> HttpResponse:
    member = get_member_for(request, pk)
    require(request, Capability.MANAGE_TEAM)
    role = current_role(request)
    # Any role is taken here: the use case says why one may not be handed out.
    form = RoleForm(request.POST, roles=list(Role.values))
    if not form.is_valid():
        messages.error(request, "Choose a role.")
        return redirect("team:list")
    try:
        changed = accounts.change_role(
            request=request, membership=member, actor_role=role, role=form.cleaned_data["role"]
        )
    except accounts.AccountError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(
            request, f"{changed.user.get_username()} is now {changed.get_role_display()}."
        )
    return redirect("team:list")


@login_required
@require_http_methods(["GET", "POST"])
def member_remove(request: HttpRequest, pk: int) -> HttpResponse:
    member = get_member_for(request, pk)
    require(request, Capability.MANAGE_TEAM)
    if request.method == "GET":
        return render(
            request,
            "dashboard/team_remove.html",
            {"member": member, "is_me": member.user_id == request.user.pk},
        )
    name = member.user.get_username()
    try:
        accounts.remove_member(request=request, membership=member, actor_role=current_role(request))
    except accounts.AccountError as exc:
        messages.error(request, str(exc))
        return redirect("team:list")
    if member.user_id == request.user.pk:
        messages.success(request, f"You left {member.tenant.name}.")
        return redirect("dashboard:overview")
    messages.success(request, f"{name} was removed from the team.")
    return redirect("team:list")


@login_required
@require_POST
def invitation_revoke(request: HttpRequest, pk: int) -> HttpResponse:
    invitation = get_invitation_for(request, pk)
    require(request, Capability.MANAGE_TEAM)
    try:
        accounts.revoke_invitation(
            request=request, invitation=invitation, actor_role=current_role(request)
        )
    except accounts.AccountError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"The invitation to {invitation.email} was withdrawn.")
    return redirect("team:list")
