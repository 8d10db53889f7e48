"""People and teams: sign-up, invitations, roles and removal.

The dashboard's views (domains/account_views.py, domains/team_views.py) only turn forms
into calls of these functions and their errors into pages. Every change leaves an audit
row (domains/audit.py) in the same transaction. Role rules: a person hands out at most
their own role, only owners make, change or remove owners (Capability.MANAGE_OWNERS), and
a tenant always keeps at least one owner.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from types import SimpleNamespace
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import PermissionDenied
from django.core.mail import EmailMessage
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.http import HttpRequest
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone

from delivery.keyed_hash import keyed_hash, new_secret
from domains import audit
from domains.models import Invitation, Membership, Role, Tenant
from domains.roles import RANK, Capability, at_most, can
from domains.tenancy import TenancyError, create_tenant

INVITATION_PURPOSE = "invitation"


class AccountError(ValueError):
    """A refused account or team change; the message is for the person who asked."""


class InvitationNotFound(AccountError):
    """No invitation has this token (never issued, or forged): a 404."""


class InvitationGone(AccountError):
    """The invitation was used, revoked or has expired: a 410."""


# -- helpers ----------------------------------------------------------------------------------


def normalize_email(email: str) -> str:
    return email.strip().lower()


def account_for(email: str) -> AbstractBaseUser | None:
    """The account that signs in as ``email`` (its username or its email address)."""
    email = normalize_email(email)
    return (
        get_user_model()
        .objects.filter(Q(username__iexact=email) | Q(email__iexact=email))
        .order_by("pk")
        .first()
    )


def _acting_as(request: HttpRequest | None, user: Any) -> Any:
    """``request`` as the audit log should see it when ``user`` acts before being logged
    in (their own sign-up, joining through an invitation)."""
    if request is None:
        return SimpleNamespace(user=user, META={}, path="")
    return SimpleNamespace(user=user, META=request.META, path=request.path)


def grantable_roles(actor_role: str | None) -> list[str]:
    """The roles ``actor_role`` may hand out (invite with, or change a member to)."""
    if not can(actor_role, Capability.MANAGE_TEAM):
        return []
    return [
        role
        for role in RANK
        if at_most(role, actor_role)
        and (role != Role.OWNER or can(actor_role, Capability.MANAGE_OWNERS))
    ]


def _check_may_grant(actor_role: str | None, role: str) -> None:
    if not can(actor_role, Capability.MANAGE_TEAM):
        raise PermissionDenied("Your role in this tenant does not allow managing the team.")
    if role not in Role.values:
        raise AccountError(f"{role!r} is not a role.")
    if role == Role.OWNER and not can(actor_role, Capability.MANAGE_OWNERS):
        raise AccountError("Only owners can make someone an owner.")
    if not at_most(role, actor_role):
        raise AccountError(f"You can hand out at most your own role ({actor_role}).")


# -- sign-up --------------------------------------------------------------------------------


@dataclass(frozen=True)
class SignedUp:
    user: AbstractBaseUser
    tenant: Tenant


def sign_up(
    *, request: HttpRequest | None, email: str, password: str, tenant_name: str
) -> SignedUp:
    """Create an account for ``email`` and a tenant it owns; nothing is stored on error."""
    email = normalize_email(email)
    if account_for(email) is not None:
        raise AccountError("An account with this email address exists already: log in.")
    if tenant_name.strip().lower() == settings.SENDMSG_PLATFORM_TENANT.lower():
        raise AccountError(f"The name {tenant_name.strip()!r} is reserved; choose another.")
    try:
        with transaction.atomic():
            user = get_user_model().objects.create_user(
                username=email, email=email, password=password
            )
            new = create_tenant(name=tenant_name, owner_email=email)
            audit.record(
                _acting_as(request, user),
                tenant=new.tenant,
                action="account.signed_up",
                target=email,
            )
    except TenancyError as exc:
        raise AccountError(str(exc)) from None
    except IntegrityError:  # the same email or name signed up a moment ago
        raise AccountError("An account or tenant with these details exists already.") from None
    return SignedUp(user=user, tenant=new.tenant)


# -- invitations ----------------------------------------------------------------------------


def invitation_url(token: str) -> str:
    return settings.SENDMSG_PUBLIC_URL.rstrip("/") + reverse("account:invitation", args=[token])


def invite(
    *, request: HttpRequest, tenant: Tenant, actor_role: str | None, email: str, role: str
) -> Invitation:
    """Invite ``email`` to ``tenant`` with ``role`` and send them the link, through the
    platform's own mail (sendmsg/platform_mail.py).

    A pending invitation to the same address is replaced (its link stops working). The
    mail is queued in the same transaction: if the platform cannot take it, no invitation
    is stored (its link would exist nowhere). Queuing touches only the database; the
    relay runs after the commit.
    """
    from sendmsg.platform_mail import PlatformMailError

    _check_may_grant(actor_role, role)
    email = normalize_email(email)
    existing = account_for(email)
    if existing is not None and Membership.objects.filter(tenant=tenant, user=existing).exists():
        raise AccountError(f"{email} is a member of {tenant.name} already.")
    token = new_secret()
    now = timezone.now()
    try:
        with transaction.atomic():
            replaced = 0
            for old in tenant.invitations.pending().filter(email__iexact=email):
                old.revoke()
                replaced += 1
            invitation = Invitation.objects.create(
                tenant=tenant,
                email=email,
                role=role,
                token_hash=keyed_hash(token, purpose=INVITATION_PURPOSE),
                invited_by=request.user if request.user.is_authenticated else None,
                created_at=now,
                expires_at=now + timedelta(days=settings.SENDMSG_INVITATION_DAYS),
            )
            audit.record(
                request,
                tenant=tenant,
                action="member.invited",
                target=email,
                role=role,
                replaced=replaced,
            )
            _send_invitation(request=request, invitation=invitation, token=token)
    except PlatformMailError as exc:
        raise AccountError(
            "The invitation email could not be sent, so no invitation was made. "
            f"Ask the platform's operator to fix its mail: {exc}"
        ) from None
    return invitation


def _send_invitation(*, request: HttpRequest, invitation: Invitation, token: str) -> None:
    inviter = request.user.get_username() if request.user.is_authenticated else "sendmsg"
    context = {
        "invitation": invitation,
        "inviter": inviter,
        "url": invitation_url(token),
        "role": invitation.get_role_display(),
    }
    subject = f"{inviter} invites you to {invitation.tenant.name} on sendmsg"
    body = render_to_string("dashboard/invitation_email.txt", context)
    EmailMessage(subject=subject, body=body, to=[invitation.email]).send()


def find_invitation(token: str) -> Invitation:
    """The invitation whose link carries ``token`` if it can still be accepted; else
    InvitationNotFound (no such token) or InvitationGone (used, revoked, expired)."""
    invitation = (
        Invitation.objects.select_related("tenant")
        .filter(token_hash=keyed_hash(token, purpose=INVITATION_PURPOSE))
        .first()
    )
    if invitation is None:
        raise InvitationNotFound("This invitation link is not valid.")
    if invitation.accepted_at is not None:
        raise InvitationGone("This invitation has been used already.")
    if invitation.revoked_at is not None:
        raise InvitationGone("This invitation was withdrawn.")
    if invitation.expired:
        raise InvitationGone(
            "This invitation has expired. Ask whoever invited you to send a new one."
        )
    return invitation


def accept_invitation(
    *, request: HttpRequest | None, invitation: Invitation, user: AbstractBaseUser
) -> Membership:
    """``user`` (whose email the invitation is for) joins its tenant with its role."""
    if normalize_email(getattr(user, "email", "") or user.get_username()) != invitation.email:
        raise AccountError(
            f"This invitation is for {invitation.email}; you are signed in as "
            f"{user.get_username()}. Log out and open the link again."
        )
    now = timezone.now()
    with transaction.atomic():
        # One conditional UPDATE claims the invitation: two clicks cannot both join.
        claimed = (
            Invitation.objects.pending()
            .filter(pk=invitation.pk)
            .update(accepted_at=now, accepted_by=user)
        )
        if not claimed:
            raise InvitationGone("This invitation has been used, withdrawn or has expired.")
        membership, created = Membership.objects.get_or_create(
            tenant=invitation.tenant, user=user, defaults={"role": invitation.role}
        )
        if created:
            audit.record(
                _acting_as(request, user),
                tenant=invitation.tenant,
                action="member.joined",
                target=user.get_username(),
                role=invitation.role,
                invitation=invitation.pk,
            )
    return membership


def join_with_new_account(
    *, request: HttpRequest | None, invitation: Invitation, password: str
) -> AbstractBaseUser:
    """Create the invited person's account (their email, this password) and join."""
    if account_for(invitation.email) is not None:
        raise AccountError(
            f"An account for {invitation.email} exists already: log in, then open the link again."
        )
    try:
        with transaction.atomic():
            user = get_user_model().objects.create_user(
                username=invitation.email, email=invitation.email, password=password
            )
            accept_invitation(request=request, invitation=invitation, user=user)
    except IntegrityError:
        raise AccountError(f"An account for {invitation.email} exists already: log in.") from None
    return user


def revoke_invitation(
    *, request: HttpRequest, invitation: Invitation, actor_role: str | None
) -> None:
    """Withdraw a pending invitation: its link stops working."""
    if not can(actor_role, Capability.MANAGE_TEAM):
        raise PermissionDenied("Your role in this tenant does not allow managing the team.")
    if invitation.role == Role.OWNER and not can(actor_role, Capability.MANAGE_OWNERS):
        raise AccountError("Only owners can withdraw an invitation to become an owner.")
    with transaction.atomic():
        withdrawn = (
            Invitation.objects.pending().filter(pk=invitation.pk).update(revoked_at=timezone.now())
        )
        if not withdrawn:
            raise AccountError("This invitation is no longer pending.")
        audit.record(
            request,
            tenant=invitation.tenant_id,
            action="invitation.revoked",
            target=invitation.email,
            role=invitation.role,
        )


# -- members ------------------------------------------------------------------------------


def _locked_member(membership: Membership) -> tuple[Membership, int]:
    """``membership`` re-read under lock with its tenant's owners, and how many owners
    there are (inside a transaction: two owners demoting each other at once cannot leave
    none; SQLite's IMMEDIATE transactions serialize writers anyway)."""
    owners = list(
        Membership.objects.select_for_update()
        .filter(tenant_id=membership.tenant_id, role=Role.OWNER)
        .values_list("pk", flat=True)
    )
    current = (
        Membership.objects.select_for_update().select_related("user").filter(pk=membership.pk)
    ).first()
    if current is None:
        raise AccountError("This person is no longer a member.")
    return current, len(owners)


def change_role(
    *, request: HttpRequest, membership: Membership, actor_role: str | None, role: str
) -> Membership:
    """Give a member another role; the last owner keeps theirs."""
    _check_may_grant(actor_role, role)
    with transaction.atomic():
        member, owners = _locked_member(membership)
        if member.role == Role.OWNER and not can(actor_role, Capability.MANAGE_OWNERS):
            raise AccountError("Only owners can change an owner's role.")
        if member.role == role:
            return member
        if member.role == Role.OWNER and owners <= 1:
            raise AccountError(
                f"{member.user.get_username()} is the last owner of this tenant: make "
                "someone else an owner first."
            )
        before = member.role
        member.role = role
        member.save(update_fields=["role"])
        audit.record(
            request,
            tenant=member.tenant_id,
            action="member.role_changed",
            target=member.user.get_username(),
            before=before,
            after=role,
        )
    return member


def remove_member(*, request: HttpRequest, membership: Membership, actor_role: str | None) -> None:
    """Take a member out of the tenant (their account stays); never the last owner."""
    if not can(actor_role, Capability.MANAGE_TEAM):
        raise PermissionDenied("Your role in this tenant does not allow managing the team.")
    with transaction.atomic():
        member, owners = _locked_member(membership)
        if member.role == Role.OWNER and not can(actor_role, Capability.MANAGE_OWNERS):
            raise AccountError("Only owners can remove an owner.")
        if member.role == Role.OWNER and owners <= 1:
            raise AccountError(
                f"{member.user.get_username()} is the last owner of this tenant and cannot "
                "be removed: make someone else an owner first."
            )
        username = member.user.get_username()
        role = member.role
        member.delete()
        audit.record(
            request,
            tenant=membership.tenant_id,
            action="member.removed",
            target=username,
            role=role,
        )
