"""The dashboard in a real Chromium against a live server (tests/browser.py)."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from domains.models import Domain, DomainStatus
from tests.conftest import publish_domain

PASSWORD = "browser-test-pw-1"

# No skip when Chromium is missing: `make test` installs it, and a skipped browser test
# would hide that the dashboard went untested.
pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("allow_orm_beside_playwright"),
]


def test_add_domain_copy_a_record_and_check_without_reload(owner, dns_server, chromium_page):
    page = chromium_page
    user = owner[1]
    user.set_password(PASSWORD)
    user.save()

    page.goto("/login/")
    page.get_by_label("Email or username").fill(user.username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Acme")

    page.get_by_role("navigation", name="Main").get_by_role("link", name="Domains").click()
    page.get_by_label("Domain name").fill("browser-ui.test")
    page.get_by_role("button", name="Add domain").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("browser-ui.test")
    expect(page.get_by_role("status").filter(has_text="browser-ui.test added")).to_be_visible()

    domain = Domain.objects.get(name="browser-ui.test", tenant=owner[0])
    key = domain.active_dkim_key()
    dkim_row = page.locator(f'tr[data-host="{key.record_name}"]')
    expect(dkim_row).to_contain_text("TXT")
    expect(dkim_row).to_contain_text(key.record_value)
    return_path = page.locator('tr[data-host="rp.browser-ui.test"]')
    expect(return_path).to_contain_text("CNAME")
    expect(return_path).to_contain_text("rp.sendmsg.test")

    dkim_row.get_by_role("button", name=f"Copy value for {key.record_name}").click()
    expect(dkim_row.locator(".copied").last).to_have_text("Copied")
    assert page.evaluate("navigator.clipboard.readText()") == key.record_value

    # Markers that survive only if the page is not reloaded; the observer sees the busy state.
    page.evaluate(
        """() => {
          window.sameDocument = "yes";
          window.busySeen = false;
          new MutationObserver(() => {
            if (document.querySelector('[aria-busy="true"]')) window.busySeen = true;
          }).observe(document.body, {subtree: true, attributes: true,
                                     attributeFilter: ["aria-busy"]});
        }"""
    )
    expect(page.locator("#domain-status")).to_have_attribute("data-status", "pending")
    expect(page.locator("#domain-status")).to_contain_text("Pending")

    publish_domain(dns_server, "browser-ui.test")
    page.get_by_role("button", name="Check now").click()
    expect(page.locator("#domain-status")).to_have_attribute("data-status", "verified")
    expect(page.locator("#domain-status")).to_contain_text("Verified")
    expect(page.locator("#check-progress")).to_contain_text("Status: Verified")
    expect(page.locator('tr[data-check="dkim"]')).to_contain_text("OK")
    expect(page.get_by_role("button", name="Check now")).to_be_enabled()
    assert page.evaluate("window.sameDocument") == "yes"
    assert page.evaluate("window.busySeen") is True
    assert page.url.endswith(f"/domains/{domain.pk}/")

    domain.refresh_from_db()
    assert domain.status == DomainStatus.VERIFIED
    assert domain.checks.count() == 1
