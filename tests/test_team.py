"""The team page: members, roles, removal, invitations by email, and who may do what.

Role rules (domains/accounts.py): a person hands out at most their own role, only owners
make or change owners, a tenant always keeps an owner; viewers and developers get 403 on
every team change, and another tenant's member or invitation is a 404.
"""

from __future__ import annotations

import re
from datetime import timedelta
from email import message_from_bytes, policy

import pytest
from django.contrib.auth import get_user_model
from django.core import mail
from django.test import Client
from django.utils import timezone

from delivery.keyed_hash import keyed_hash
from domains import accounts
from domains.models import AuditEntry, Invitation, Membership, Role
from domains.tenancy import create_tenant
from sendmsg.platform_mail import ensure_platform
from tests.conftest import publish_domain

PLATFORM_BACKEND = "sendmsg.platform_mail.EmailBackend"
GOOD_PASSWORD = "mauve-otter-galaxy-42"
User = get_user_model()


def logged_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def add_member(tenant, email: str, role: str):
    user = User.objects.create_user(email, email=email, password=GOOD_PASSWORD)
    membership = Membership.objects.create(tenant=tenant, user=user, role=role)
    return user, membership


def invitation_link(body: str) -> str:
    match = re.search(r"https?://[^/\s]+(/account/invitation/[^/\s]+/)", body)
    assert match, body
    return match.group(1)


def invite(client: Client, email: str, role: str):
    return client.post("/team/invite/", {"email": email, "role": role})


@pytest.fixture
def team(owner):
    """Acme with an owner, an admin, a developer and a viewer."""
    tenant, owner_user = owner
    admin, admin_m = add_member(tenant, "admin@acme.test", Role.ADMIN)
    dev, dev_m = add_member(tenant, "dev@acme.test", Role.DEVELOPER)
    viewer, viewer_m = add_member(tenant, "viewer@acme.test", Role.VIEWER)
    owner_m = Membership.objects.get(tenant=tenant, user=owner_user)
    return {
        "tenant": tenant,
        "owner": (owner_user, owner_m),
        "admin": (admin, admin_m),
        "developer": (dev, dev_m),
        "viewer": (viewer, viewer_m),
    }


# -- the page -------------------------------------------------------------------------------


@pytest.mark.django_db
def test_team_page_lists_members_and_shows_actions_only_to_managers(team):
    page = logged_in(team["owner"][0]).get("/team/")
    assert page.status_code == 200
    body = page.content.decode()
    for email, role in [
        ("owner@acme.test", "Owner"),
        ("admin@acme.test", "Admin"),
        ("dev@acme.test", "Developer"),
        ("viewer@acme.test", "Viewer"),
    ]:
        assert re.search(rf'data-member="{re.escape(email)}">.*?<td>{role}</td>', body, re.S)
    assert "Send invitation" in body and "Change role" in body and "Remove…" in body
    assert 'name="csrfmiddlewaretoken"' in body
    assert '<label for="id_email">' in body

    # An admin may hand out at most admin; an owner may make owners.
    admin_page = logged_in(team["admin"][0]).get("/team/").content.decode()
    invite_select = admin_page.split('name="role" id="id_role"', 1)[1].split("</select>", 1)[0]
    assert 'value="admin"' in invite_select and 'value="owner"' not in invite_select
    assert "Only owners change owners" in admin_page
    owner_select = body.split('name="role" id="id_role"', 1)[1].split("</select>", 1)[0]
    assert 'value="owner"' in owner_select

    for persona in ("developer", "viewer"):
        page = logged_in(team[persona][0]).get("/team/")
        assert page.status_code == 200
        text = page.content.decode()
        assert "owner@acme.test" in text
        assert "Send invitation" not in text and "Change role" not in text
        assert "Remove…" not in text and "/team/invite/" not in text


@pytest.mark.django_db
def test_viewer_and_developer_get_403_on_every_team_change(team):
    owner_m = team["owner"][1]
    pending = accounts.Invitation.objects.create(
        tenant=team["tenant"],
        email="x@acme.test",
        role=Role.VIEWER,
        token_hash="0" * 64,
        expires_at=timezone.now() + timedelta(days=1),
    )
    for persona in ("developer", "viewer"):
        client = logged_in(team[persona][0])
        assert invite(client, "new@acme.test", Role.VIEWER).status_code == 403
        assert (
            client.post(f"/team/members/{owner_m.pk}/role/", {"role": "viewer"}).status_code == 403
        )
        assert client.get(f"/team/members/{owner_m.pk}/remove/").status_code == 403
        assert client.post(f"/team/members/{owner_m.pk}/remove/").status_code == 403
        assert client.post(f"/team/invitations/{pending.pk}/revoke/").status_code == 403
    assert Membership.objects.filter(tenant=team["tenant"]).count() == 4
    owner_m.refresh_from_db()
    assert owner_m.role == Role.OWNER
    assert Invitation.objects.pending().count() == 1
    assert not AuditEntry.objects.exists()


@pytest.mark.django_db
def test_outsider_gets_404_for_another_tenants_members_and_invitations(team, outsider):
    pending = Invitation.objects.create(
        tenant=team["tenant"],
        email="x@acme.test",
        role=Role.VIEWER,
        token_hash="1" * 64,
        expires_at=timezone.now() + timedelta(days=1),
    )
    member = team["developer"][1]
    client = logged_in(outsider[1])  # owner of Globex: may manage its own team
    assert client.post(f"/team/members/{member.pk}/role/", {"role": "viewer"}).status_code == 404
    assert client.get(f"/team/members/{member.pk}/remove/").status_code == 404
    assert client.post(f"/team/members/{member.pk}/remove/").status_code == 404
    assert client.post(f"/team/invitations/{pending.pk}/revoke/").status_code == 404
    page = client.get("/team/").content.decode()
    assert "dev@acme.test" not in page and "x@acme.test" not in page
    member.refresh_from_db()
    assert member.role == Role.DEVELOPER and Invitation.objects.pending().count() == 1


# -- roles ----------------------------------------------------------------------------------


@pytest.mark.django_db
def test_admin_cannot_make_or_touch_owners_but_may_hand_out_admin(team):
    client = logged_in(team["admin"][0])
    dev_m, owner_m = team["developer"][1], team["owner"][1]
    response = client.post(f"/team/members/{dev_m.pk}/role/", {"role": "owner"}, follow=True)
    assert b"Only owners can make someone an owner" in response.content
    dev_m.refresh_from_db()
    assert dev_m.role == Role.DEVELOPER
    response = client.post(f"/team/members/{owner_m.pk}/role/", {"role": "viewer"}, follow=True)
    assert b"Only owners can change an owner" in response.content
    owner_m.refresh_from_db()
    assert owner_m.role == Role.OWNER
    response = client.post(f"/team/members/{owner_m.pk}/remove/", follow=True)
    assert b"Only owners can remove an owner" in response.content
    assert Membership.objects.filter(pk=owner_m.pk).exists()
    assert invite(client, "boss@acme.test", Role.OWNER).status_code == 400
    assert not Invitation.objects.exists()
    # The use case refuses too, whatever a form offers.
    with pytest.raises(accounts.AccountError, match="Only owners"):
        accounts.change_role(request=None, membership=dev_m, actor_role=Role.ADMIN, role=Role.OWNER)

    response = client.post(f"/team/members/{dev_m.pk}/role/", {"role": "admin"}, follow=True)
    assert b"is now Admin" in response.content
    dev_m.refresh_from_db()
    assert dev_m.role == Role.ADMIN
    entry = AuditEntry.objects.get(action="member.role_changed")
    assert entry.actor == team["admin"][0] and entry.target == "dev@acme.test"
    assert entry.detail == {"before": "developer", "after": "admin"}


@pytest.mark.django_db
def test_the_last_owner_cannot_be_demoted_or_removed(team):
    owner_user, owner_m = team["owner"]
    client = logged_in(owner_user)
    response = client.post(f"/team/members/{owner_m.pk}/role/", {"role": "admin"}, follow=True)
    assert b"last owner" in response.content and b'role="alert"' in response.content
    response = client.post(f"/team/members/{owner_m.pk}/remove/", follow=True)
    assert b"last owner" in response.content
    owner_m.refresh_from_db()
    assert owner_m.role == Role.OWNER
    assert not AuditEntry.objects.exists()

    # With a second owner, the first may step down.
    admin_m = team["admin"][1]
    client.post(f"/team/members/{admin_m.pk}/role/", {"role": "owner"})
    admin_m.refresh_from_db()
    assert admin_m.role == Role.OWNER
    client.post(f"/team/members/{owner_m.pk}/role/", {"role": "developer"})
    owner_m.refresh_from_db()
    assert owner_m.role == Role.DEVELOPER
    # ...and the new sole owner is protected in turn.
    with pytest.raises(accounts.AccountError, match="last owner"):
        accounts.remove_member(request=None, membership=admin_m, actor_role=Role.OWNER)


@pytest.mark.django_db
def test_remove_asks_first_then_removes_and_audits(team):
    client = logged_in(team["owner"][0])
    dev_user, dev_m = team["developer"]
    confirm = client.get(f"/team/members/{dev_m.pk}/remove/")
    assert confirm.status_code == 200
    assert b"Remove dev@acme.test from Acme?" in confirm.content
    assert b'name="csrfmiddlewaretoken"' in confirm.content
    assert Membership.objects.filter(pk=dev_m.pk).exists()  # a GET changes nothing
    response = client.post(f"/team/members/{dev_m.pk}/remove/", follow=True)
    assert b"dev@acme.test was removed" in response.content
    assert not Membership.objects.filter(pk=dev_m.pk).exists()
    assert User.objects.filter(pk=dev_user.pk).exists()  # the account stays
    entry = AuditEntry.objects.get(action="member.removed")
    assert entry.target == "dev@acme.test" and entry.detail == {"role": "developer"}
    # The removed member no longer sees Acme.
    assert b"No tenant yet" in logged_in(dev_user).get("/team/").content


# -- invitations ----------------------------------------------------------------------------


@pytest.mark.django_db
def test_invite_stores_a_hash_mails_the_link_and_audits(team, settings):
    settings.SENDMSG_PUBLIC_URL = "https://mail.example.test"
    response = invite(logged_in(team["admin"][0]), "New@Example.test", Role.DEVELOPER)
    assert response.status_code == 302 and response.url == "/team/"
    invitation = Invitation.objects.get()
    assert invitation.email == "new@example.test" and invitation.role == Role.DEVELOPER
    assert invitation.invited_by == team["admin"][0]
    assert invitation.expires_at - invitation.created_at == timedelta(days=7)
    assert len(mail.outbox) == 1
    sent = mail.outbox[0]
    assert sent.to == ["new@example.test"] and "Acme" in sent.subject
    assert "https://mail.example.test/account/invitation/" in sent.body
    token = invitation_link(sent.body).rstrip("/").rsplit("/", 1)[1]
    assert invitation.token_hash == keyed_hash(token, purpose="invitation")
    assert token not in invitation.token_hash
    entry = AuditEntry.objects.get(action="member.invited")
    assert entry.target == "new@example.test" and entry.detail["role"] == "developer"
    page = logged_in(team["owner"][0]).get("/team/").content.decode()
    assert 'data-invitation="new@example.test"' in page

    # Inviting again replaces the pending invitation: the first link stops working.
    invite(logged_in(team["owner"][0]), "new@example.test", Role.VIEWER)
    assert Invitation.objects.pending().get().role == Role.VIEWER
    assert Client().get(invitation_link(sent.body)).status_code == 410

    # A member cannot be invited again.
    response = invite(logged_in(team["owner"][0]), "dev@acme.test", Role.ADMIN)
    assert response.status_code == 400 and b"is a member of Acme already" in response.content


@pytest.mark.django_db
def test_invite_when_the_platform_cannot_send_stores_nothing(team, settings):
    settings.EMAIL_BACKEND = PLATFORM_BACKEND  # and no platform tenant: not bootstrapped
    response = invite(logged_in(team["owner"][0]), "new@example.test", Role.VIEWER)
    assert response.status_code == 400
    assert b"could not be sent" in response.content and b"manage.py bootstrap" in response.content
    assert not Invitation.objects.exists() and not AuditEntry.objects.exists()


@pytest.mark.django_db
def test_new_person_accepts_and_becomes_a_member(team):
    invite(logged_in(team["owner"][0]), "newbie@example.test", Role.DEVELOPER)
    path = invitation_link(mail.outbox[0].body)
    client = Client()
    page = client.get(path)
    assert page.status_code == 200
    assert b"Create account and join" in page.content and b"newbie@example.test" in page.content
    weak = client.post(path, {"password": "123"})
    assert weak.status_code == 400 and not User.objects.filter(email="newbie@example.test")
    response = client.post(path, {"password": GOOD_PASSWORD})
    assert response.status_code == 302 and response.url == "/"
    user = User.objects.get(username="newbie@example.test")
    assert user.check_password(GOOD_PASSWORD)
    membership = Membership.objects.get(user=user)
    assert membership.tenant == team["tenant"] and membership.role == Role.DEVELOPER
    assert b"Acme" in client.get("/").content  # logged in, in Acme
    invitation = Invitation.objects.get()
    assert invitation.accepted_at and invitation.accepted_by == user
    entry = AuditEntry.objects.get(action="member.joined")
    assert entry.actor == user and entry.detail["role"] == "developer"
    # Used: the link now says so, and changes nothing.
    again = Client().get(path)
    assert again.status_code == 410 and b"used already" in again.content


@pytest.mark.django_db
def test_existing_user_logs_in_and_joins(team, outsider):
    globex_owner = outsider[1]  # owner@globex.test, an account already
    invite(logged_in(team["owner"][0]), "owner@globex.test", Role.VIEWER)
    path = invitation_link(mail.outbox[0].body)
    anonymous = Client().get(path)
    assert anonymous.status_code == 200 and b"Log in to accept" in anonymous.content
    assert f"/login/?next={path}".encode() in anonymous.content
    assert Client().post(path, {"password": GOOD_PASSWORD}).status_code == 200  # no account made
    assert User.objects.filter(email="owner@globex.test").count() == 1

    # Someone else, logged in, cannot take it.
    stranger = logged_in(team["viewer"][0])
    assert stranger.get(path).status_code == 403
    assert stranger.post(path).status_code == 403
    assert not Membership.objects.filter(tenant=team["tenant"], user=globex_owner).exists()

    client = logged_in(globex_owner)
    page = client.get(path)
    assert page.status_code == 200 and b"Join Acme" in page.content
    assert not Membership.objects.filter(tenant=team["tenant"], user=globex_owner).exists()
    response = client.post(path)
    assert response.status_code == 302
    membership = Membership.objects.get(tenant=team["tenant"], user=globex_owner)
    assert membership.role == Role.VIEWER
    assert Membership.objects.get(tenant=outsider[0], user=globex_owner).role == Role.OWNER


@pytest.mark.django_db
def test_forged_expired_and_revoked_links_change_nothing(team):
    assert Client().get("/account/invitation/not-a-real-token/").status_code == 404
    owner_client = logged_in(team["owner"][0])
    invite(owner_client, "late@example.test", Role.VIEWER)
    invite(owner_client, "gone@example.test", Role.VIEWER)
    late_path = invitation_link(mail.outbox[0].body)
    gone_path = invitation_link(mail.outbox[1].body)

    Invitation.objects.filter(email="late@example.test").update(
        expires_at=timezone.now() - timedelta(seconds=1)
    )
    expired = Client().post(late_path, {"password": GOOD_PASSWORD})
    assert expired.status_code == 410 and b"expired" in expired.content

    gone = Invitation.objects.get(email="gone@example.test")
    response = owner_client.post(f"/team/invitations/{gone.pk}/revoke/", follow=True)
    assert b"withdrawn" in response.content
    assert b'data-invitation="gone@example.test"' not in response.content
    revoked = Client().post(gone_path, {"password": GOOD_PASSWORD})
    assert revoked.status_code == 410 and b"withdrawn" in revoked.content
    assert not User.objects.filter(email__in=["late@example.test", "gone@example.test"])
    assert Membership.objects.filter(tenant=team["tenant"]).count() == 4
    entry = AuditEntry.objects.get(action="invitation.revoked")
    assert entry.target == "gone@example.test" and entry.actor == team["owner"][0]


@pytest.mark.django_db
def test_admin_cannot_revoke_an_owner_invitation(team):
    invite(logged_in(team["owner"][0]), "co-owner@example.test", Role.OWNER)
    pending = Invitation.objects.get()
    response = logged_in(team["admin"][0]).post(
        f"/team/invitations/{pending.pk}/revoke/", follow=True
    )
    assert b"Only owners" in response.content
    assert Invitation.objects.pending().count() == 1


# -- end to end -----------------------------------------------------------------------------


@pytest.mark.peers
@pytest.mark.django_db(transaction=True)
def test_invitations_end_to_end_through_the_platform(platform, dns_server, mx, settings):
    settings.EMAIL_BACKEND = PLATFORM_BACKEND
    setup = ensure_platform()
    publish_domain(dns_server, setup.domain.name)
    acme = create_tenant(name="Acme", owner_email="owner@acme.test")
    tenant, owner_user = acme.tenant, acme.owner
    bob = User.objects.create_user("bob@dest.test", email="bob@dest.test", password="x")
    owner_client = logged_in(owner_user)
    assert invite(owner_client, "newbie@dest.test", Role.DEVELOPER).status_code == 302
    assert invite(owner_client, "bob@dest.test", Role.VIEWER).status_code == 302

    received = {m.rcpt_tos[0]: m for m in mx.wait_for(2, timeout=30)}
    assert set(received) == {"newbie@dest.test", "bob@dest.test"}
    links = {}
    for address, message in received.items():
        assert message.mail_from.endswith("@rp.mta.sendmsg.test")
        assert message.data.startswith(b"DKIM-Signature:")  # verified at teardown (conftest)
        parsed = message_from_bytes(message.data, policy=policy.default)
        assert parsed["From"].addresses[0].addr_spec == "sendmsg@mta.sendmsg.test"
        links[address] = invitation_link(parsed.get_body(("plain",)).get_content())

    newbie = Client()
    assert newbie.post(links["newbie@dest.test"], {"password": GOOD_PASSWORD}).status_code == 302
    user = User.objects.get(username="newbie@dest.test")
    assert Membership.objects.get(tenant=tenant, user=user).role == Role.DEVELOPER
    login = Client().post("/login/", {"username": "newbie@dest.test", "password": GOOD_PASSWORD})
    assert login.status_code == 302

    bob_client = logged_in(bob)
    assert bob_client.post(links["bob@dest.test"]).status_code == 302
    assert Membership.objects.get(tenant=tenant, user=bob).role == Role.VIEWER
    assert sorted(AuditEntry.objects.filter(tenant=tenant).values_list("action", flat=True)) == [
        "member.invited",
        "member.invited",
        "member.joined",
        "member.joined",
    ]
