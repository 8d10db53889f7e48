"""An operator suspends a tenant in the admin; the tenant sees it and its sends are refused.

Two browser profiles at once (the operator's and the tenant owner's), a real Chromium
against the live server (tests/browser.py); the refused send is a real HTTP request.
"""

from __future__ import annotations

import json

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone
from playwright.sync_api import expect

from delivery.credentials import create_api_key
from domains.models import AuditEntry, Domain, DomainStatus, Tenant
from domains.tenancy import add_domain
from tests.browser import log_in, new_page, screenshot

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("allow_orm_beside_playwright"),
]
OWNER_PASSWORD = "owner-browser-pw-1"
OPERATOR_PASSWORD = "operator-browser-pw-1"
REASON = "Complaint rate over 0.5% on the spring campaign"


def send_through_api(page, key: str):
    """POST /api/v1/send/ from the tenant's browser profile (a real HTTP request)."""
    return page.request.post(
        "/api/v1/send/",
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
        data=json.dumps(
            {"from": "news@acme.test", "to": ["reader@queue.example"], "subject": "Hi", "text": "x"}
        ),
    )


def test_operator_suspends_a_tenant_who_then_sees_why_and_cannot_send(owner, chromium, live_server):
    tenant, owner_user = owner
    owner_user.set_password(OWNER_PASSWORD)
    owner_user.save()
    domain = add_domain(tenant=tenant, name="acme.test")
    Domain.objects.filter(pk=domain.pk).update(
        status=DomainStatus.VERIFIED, verified_at=timezone.now() - timezone.timedelta(days=30)
    )
    _, key = create_api_key(tenant=tenant, name="app")
    get_user_model().objects.create_superuser("ops", "ops@sendmsg.test", OPERATOR_PASSWORD)

    tenant_context, tenant_page = new_page(chromium, live_server)
    operator_context, admin = new_page(chromium, live_server)
    try:
        log_in(tenant_page, owner_user.username, OWNER_PASSWORD)
        expect(tenant_page.get_by_role("heading", level=1)).to_have_text("Acme")
        expect(tenant_page.locator("#suspension")).to_have_count(0)
        assert send_through_api(tenant_page, key).status == 201

        admin.goto("/admin/login/")
        admin.get_by_label("Username").fill("ops")
        admin.get_by_label("Password").fill(OPERATOR_PASSWORD)
        admin.get_by_role("button", name="Log in").click()
        admin.goto("/admin/domains/tenant/")
        admin.get_by_role("row", name="Acme").get_by_role("checkbox").check()
        admin.locator("select[name=action]").select_option("suspend")
        admin.get_by_role("button", name="Go").click()
        expect(admin.get_by_role("heading", name="Suspend tenants")).to_be_visible()
        admin.get_by_label("Reason").fill(REASON)
        admin.get_by_role("button", name="Suspend tenants").click()
        expect(admin.locator(".messagelist")).to_contain_text("1 tenant(s) suspended: Acme")

        tenant_page.reload()
        banner = tenant_page.locator("#suspension")
        expect(banner).to_contain_text("Suspended")
        expect(banner).to_contain_text(REASON)
        screenshot(tenant_page, "suspended-tenant")
        refused = send_through_api(tenant_page, key)
        assert refused.status == 403
        assert refused.json()["error"]["code"] == "account_suspended"
    finally:
        operator_context.close()
        tenant_context.close()

    tenant = Tenant.objects.get(pk=tenant.pk)
    assert tenant.suspended and tenant.suspended_reason == REASON
    entry = AuditEntry.objects.get(tenant=tenant, action="tenant.suspended")
    assert entry.actor_label == "operator ops" and entry.detail == {"reason": REASON}
