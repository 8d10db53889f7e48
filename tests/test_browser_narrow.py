"""The dashboard on a phone-sized screen: every page fits its width (no sideways
scrolling of the page itself; wide tables scroll inside their own box), and the keyboard
reaches the content first."""

from __future__ import annotations

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from delivery.credentials import create_api_key
from domains.models import Domain, DomainStatus
from domains.tenancy import add_domain
from tests.browser import log_in, new_page

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("allow_orm_beside_playwright"),
]
PASSWORD = "narrow-screen-pw-1"
PAGES = [
    "/",
    "/domains/",
    "/messages/",
    "/credentials/",
    "/webhooks/",
    "/reputation/",
    "/suppressions/",
    "/team/",
    "/audit/",
    "/settings/",
]


def test_every_page_fits_a_narrow_screen(owner, chromium, live_server):
    tenant, user = owner
    user.set_password(PASSWORD)
    user.save()
    domain = add_domain(tenant=tenant, name="acme.test")
    Domain.objects.filter(pk=domain.pk).update(
        status=DomainStatus.VERIFIED, verified_at=timezone.now()
    )
    create_api_key(tenant=tenant, name="app")
    context, page = new_page(chromium, live_server, viewport={"width": 375, "height": 740})
    try:
        log_in(page, user.username, PASSWORD)
        expect(page.get_by_role("heading", level=1)).to_have_text("Acme")
        page.keyboard.press("Tab")  # the first stop is the skip link, then the content
        expect(page.get_by_role("link", name="Skip to content")).to_be_focused()
        page.keyboard.press("Enter")
        expect(page.locator("main#main")).to_be_focused()
        for path in [*PAGES, f"/domains/{domain.pk}/"]:
            page.goto(path)
            expect(page.locator("main")).to_be_visible()
            overflow = page.evaluate(
                "document.documentElement.scrollWidth - document.documentElement.clientWidth"
            )
            assert overflow <= 0, f"{path} is {overflow}px wider than a 375px screen"
    finally:
        context.close()
