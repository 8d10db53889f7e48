"""VERP return paths map a bounce back to exactly one recipient, and resist forgery."""

from __future__ import annotations

import pytest

from delivery.accept import Sender, accept_message
from delivery.models import Recipient, Source
from delivery.verp import find_recipient, group_verp_address, is_return_path, verp_address

pytestmark = pytest.mark.django_db


def dsn(*recipients: str) -> bytes:
    fields = "".join(f"Final-Recipient: rfc822; {r}\r\nAction: failed\r\n\r\n" for r in recipients)
    return b"Content-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx\r\n\r\n" + (
        fields.encode()
    )


@pytest.fixture
def message(owner):
    from domains.models import Domain
    from domains.tenancy import add_domain

    domain = add_domain(tenant=owner[0], name="acme.test")
    Domain.objects.filter(pk=domain.pk).update(status="verified")
    return accept_message(
        sender=Sender(tenant_id=owner[0].pk),
        mail_from="news@acme.test",
        recipients=["ann@dest.test", "bob@dest.test", "cy@other.test"],
        raw=b"From: news@acme.test\r\nSubject: s\r\n\r\nx\r\n",
        source=Source.API,
    )


def shared(message, domain: str = "dest.test") -> str:
    return group_verp_address(
        tenant_id=message.tenant_id, message_id=message.pk, domain=domain, host="rp.acme.test"
    )


def test_a_per_recipient_return_path_names_its_recipient(message):
    ann = Recipient.objects.get(message=message, address="ann@dest.test")
    address = verp_address(
        tenant_id=ann.tenant_id, message_id=message.pk, recipient_id=ann.pk, host="rp.acme.test"
    )
    assert len(address.partition("@")[0]) <= 64
    assert find_recipient(address) == ann


def test_a_shared_return_path_maps_through_the_reported_recipient(message):
    address = shared(message)
    assert len(address.partition("@")[0]) <= 64
    assert is_return_path(address)
    bob = Recipient.objects.get(message=message, address="bob@dest.test")
    assert find_recipient(address, dsn("bob@dest.test")) == bob
    assert find_recipient(address, dsn("<BOB@dest.test>")) == bob


@pytest.mark.parametrize(
    "report",
    [
        b"Subject: your mail bounced\r\n\r\nsomething went wrong\r\n",  # names nobody
        dsn("cy@other.test"),  # a recipient of the message, but not at this domain
        dsn("ann@dest.test", "bob@dest.test"),  # not exactly one
        dsn("stranger@dest.test"),  # not a recipient at all
    ],
)
def test_a_shared_return_path_without_one_matching_recipient_maps_to_none(message, report):
    assert find_recipient(shared(message), report) is None


def test_forged_or_foreign_return_paths_are_not_ours(message):
    address = shared(message)
    local, _, host = address.partition("@")
    forged = f"{local[:-1]}{'a' if local[-1] != 'a' else 'b'}@{host}"
    assert not is_return_path(forged)
    assert not is_return_path(f"{local}@rp.globex.test")
    assert not is_return_path(shared(message, domain="nowhere.test"))
    assert find_recipient(forged, dsn("bob@dest.test")) is None
