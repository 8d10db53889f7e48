"""`domain check` against a real DNS server: each result says what to change."""

from __future__ import annotations

import pytest

from domains.models import Domain
from domains.tenancy import add_domain
from tests.conftest import run_command

pytestmark = pytest.mark.django_db


@pytest.fixture
def pending(owner) -> Domain:
    return add_domain(tenant=owner[0], name="check.test")


def check_lines(name: str) -> list[str]:
    return run_command("domain", "check", name).splitlines()


def test_nothing_published(pending, dns_server):
    dns_server.set_zone("check.test", ["check.test. IN A 127.0.0.1"])
    lines = check_lines("check.test")
    assert lines[0].startswith("dkim: error - No TXT record at sm")
    assert lines[1].startswith("return_path: error - No CNAME at rp.check.test")
    assert lines[-2:] == ["score: 0", "pending"]


def test_wrong_key_and_wrong_target(pending, dns_server):
    key = pending.active_dkim_key()
    other = add_domain(tenant=pending.tenant, name="other.test").active_dkim_key()
    dns_server.set_zone(
        "check.test",
        [
            f'{key.selector}._domainkey.check.test. IN TXT "{other.record_value}"',
            "rp.check.test. IN CNAME rp.elsewhere.test.",
        ],
    )
    lines = check_lines("check.test")
    assert "is not ours" in lines[0]
    assert "points at rp.elsewhere.test., not rp.sendmsg.test." in lines[1]
    assert lines[-1] == "pending"


def test_dns_failure_is_unknown_not_an_error(pending, dns_server):
    dns_server.set_zone("check.test", ["check.test. IN A 127.0.0.1"])
    dns_server.servfail("check.test")
    lines = check_lines("check.test")
    assert lines[0].startswith("dkim: unknown")
    assert lines[1].startswith("return_path: unknown")
    assert lines[-1] == "pending"


def test_verified_then_pending_again_when_a_record_disappears(pending, dns_server):
    from tests.conftest import publish_domain

    publish_domain(dns_server, "check.test")
    assert check_lines("check.test")[-2:] == ["score: 100", "verified"]
    dns_server.set_zone("check.test", ["check.test. IN A 127.0.0.1"])
    assert check_lines("check.test")[-1] == "pending"
    pending.refresh_from_db()
    assert pending.verified_at is not None and pending.health_score == 0
