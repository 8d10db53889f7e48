"""Domain checks against the real DNS server: each zone's verdicts, score and state."""

from __future__ import annotations

import time

import pytest

from domains.checks.results import WEIGHTS
from domains.checks.run import check_domain
from domains.models import DomainEvent, DomainStatus
from domains.records import records_for
from domains.tenancy import add_domain

pytestmark = pytest.mark.django_db


def zone_lines(domain, *extra: str, skip: tuple[str, ...] = ()) -> list[str]:
    """The records we ask for (required and suggested), as the tenant would publish them."""
    lines = [r.zone_line() for r in records_for(domain) if r.type not in skip]
    return [*lines, *extra]


GOOD_EXTRA = (
    "{d}. IN MX 10 mx.{d}.",
    "mx.{d}. IN A 127.0.0.1",
)


def good_zone(domain, *extra: str, skip: tuple[str, ...] = ()) -> list[str]:
    lines = [
        line
        for line in zone_lines(domain, *(e.format(d=domain.name) for e in GOOD_EXTRA), skip=skip)
        if not line.startswith(f"_dmarc.{domain.name}")
    ]
    lines.append(f'_dmarc.{domain.name}. IN TXT "v=DMARC1; p=reject; rua=mailto:d@{domain.name}"')
    return lines + list(extra)


@pytest.fixture
def domain(owner, dns_server):
    return add_domain(tenant=owner[0], name="good.test")


def statuses(report) -> dict[str, str]:
    return {r.name: str(r.status) for r in report.results}


def test_all_good(domain, dns_server):
    dns_server.set_zone("good.test", good_zone(domain))
    report = check_domain(domain)
    assert statuses(report) == {name: "ok" for name in WEIGHTS}, [
        (r.name, r.message) for r in report.results
    ]
    assert report.score == 100 and not report.partial and report.verified
    domain.refresh_from_db()
    assert (domain.status, domain.health_score) == (DomainStatus.VERIFIED, 100)
    assert list(domain.events.values_list("type", flat=True)) == ["domain.verified"]


def test_dkim_missing(domain, dns_server):
    key = domain.active_dkim_key()
    dns_server.set_zone("good.test", good_zone(domain, skip=("TXT",)))
    report = check_domain(domain)
    dkim = report.result("dkim")
    assert str(dkim.status) == "error"
    assert f"No DKIM record at {key.record_name}" in dkim.message
    assert report.verified is False and report.score <= 70


def test_dkim_with_a_different_key(domain, dns_server, owner):
    key = domain.active_dkim_key()
    other = add_domain(tenant=owner[0], name="other.test").active_dkim_key()
    lines = [line for line in good_zone(domain) if not line.startswith(key.record_name)]
    lines.append(f'{key.record_name}. IN TXT "{other.record_value}"')
    dns_server.set_zone("good.test", lines)
    dkim = check_domain(domain).result("dkim")
    assert str(dkim.status) == "error" and "not the one we sign with" in dkim.message


def test_dkim_split_over_several_strings_is_read_whole(domain, dns_server):
    key = domain.active_dkim_key()
    [dkim_line] = [line for line in good_zone(domain) if line.startswith(key.record_name)]
    assert dkim_line.count('" "') >= 1  # published as several character-strings
    dns_server.set_zone("good.test", good_zone(domain))
    dkim = check_domain(domain).result("dkim")
    assert str(dkim.status) == "ok" and "RSA 2048-bit key" in dkim.message


def test_dkim_revoked(domain, dns_server):
    key = domain.active_dkim_key()
    lines = [line for line in good_zone(domain) if not line.startswith(key.record_name)]
    lines.append(f'{key.record_name}. IN TXT "v=DKIM1; k=rsa; p="')
    dns_server.set_zone("good.test", lines)
    dkim = check_domain(domain).result("dkim")
    assert str(dkim.status) == "error" and "revoked" in dkim.message


def test_null_mx_is_noted(domain, dns_server):
    lines = [line for line in good_zone(domain) if " MX " not in line]
    dns_server.set_zone("good.test", [*lines, "good.test. IN MX 0 ."])
    mx = check_domain(domain).result("mx")
    assert str(mx.status) == "warning" and "null MX (RFC 7505)" in mx.message
    assert mx.points == 5


def test_return_path_wrong_target(domain, dns_server):
    lines = [
        line
        for line in good_zone(domain)
        if not line.startswith("rp.good.test") and "v=spf1" not in line
    ]
    dns_server.set_zone("good.test", [*lines, "rp.good.test. IN CNAME rp.elsewhere.test."])
    report = check_domain(domain)
    rp = report.result("return_path")
    assert str(rp.status) == "error"
    assert "points at rp.elsewhere.test., not rp.sendmsg.test" in rp.message
    # and the root has no SPF that includes the platform: nothing aligns, not verified
    assert report.verified is False


def test_servfail_keeps_the_state_and_marks_the_score_partial(domain, dns_server):
    dns_server.set_zone("good.test", good_zone(domain))
    assert check_domain(domain).verified
    dns_server.servfail("good.test")
    report = check_domain(domain)
    assert report.verified is None and report.partial
    assert str(report.result("dkim").status) == "unknown"
    assert "SERVFAIL" in report.result("dkim").message
    domain.refresh_from_db()
    assert domain.status == DomainStatus.VERIFIED and domain.score_partial
    # a later answer that confirms the record is gone does change it
    dns_server.set_zone("good.test", good_zone(domain, skip=("TXT",)))
    assert check_domain(domain).verified is False
    domain.refresh_from_db()
    assert domain.status == DomainStatus.PENDING
    assert DomainEvent.objects.filter(domain=domain, type="domain.unverified").exists()


def test_two_dropped_names_time_out_concurrently(domain, dns_server):
    key = domain.active_dkim_key()
    dns_server.set_zone("good.test", good_zone(domain))
    dns_server.drop(key.record_name)
    dns_server.drop("_dmarc.good.test")
    try:
        started = time.monotonic()
        report = check_domain(domain, timeout=1)
        elapsed = time.monotonic() - started
    finally:
        dns_server.clear_override(key.record_name)
        dns_server.clear_override("_dmarc.good.test")
    assert statuses(report)["dkim"] == "unknown" and statuses(report)["dmarc"] == "unknown"
    assert statuses(report)["return_path"] == "ok"
    assert elapsed < 2, elapsed


def test_pending_becomes_verified_when_records_appear(domain, dns_server):
    dns_server.set_zone("good.test", ["good.test. IN A 127.0.0.1"])
    assert check_domain(domain).verified is False
    domain.refresh_from_db()
    assert domain.status == DomainStatus.PENDING
    dns_server.set_zone("good.test", good_zone(domain))
    assert check_domain(domain).verified is True
    domain.refresh_from_db()
    assert domain.status == DomainStatus.VERIFIED
    types = set(domain.events.values_list("type", flat=True))
    assert {"domain.verified", "domain.score_changed", "domain.check_changed"} <= types
    assert domain.checks.count() == 2


def test_disabled_domain_stays_disabled_and_cannot_send(domain, dns_server):
    from delivery.accept import AcceptError, Sender, check_sender_domain

    dns_server.set_zone("good.test", good_zone(domain))
    check_domain(domain)
    domain.refresh_from_db()
    domain.disable()
    check_domain(domain)
    domain.refresh_from_db()
    assert domain.status == DomainStatus.DISABLED
    with pytest.raises(AcceptError):
        check_sender_domain(Sender(tenant_id=domain.tenant_id), "a@good.test", what="Sender")
    domain.enable()
    assert domain.status == DomainStatus.VERIFIED


def test_recheck_schedule_checks_due_domains(domain, dns_server):
    from datetime import timedelta

    from django.utils import timezone

    from domains.models import Domain
    from domains.tasks import due_domains, recheck_due

    dns_server.set_zone("good.test", good_zone(domain))
    assert list(due_domains()) == [domain]  # never checked
    assert recheck_due() == 1
    assert list(due_domains()) == []
    Domain.objects.filter(pk=domain.pk).update(checked_at=timezone.now() - timedelta(hours=2))
    assert list(due_domains()) == [domain]


def test_mx_message_names_hosts_once_dotted(domain, dns_server):
    dns_server.set_zone("good.test", good_zone(domain))
    mx = check_domain(domain).result("mx")
    assert mx.message == "good.test receives mail at mx.good.test." and mx.details["hosts"] == [
        "mx.good.test"
    ]
