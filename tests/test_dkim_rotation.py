"""DKIM key rotation and Ed25519 dual signing, end to end through DNS and the relay."""

from __future__ import annotations

import pytest

from delivery.accept import Sender, accept_message
from delivery.models import Source
from delivery.relay import deliver_message
from domains.checks.run import check_domain
from domains.dkim_keys import KeyActionError, start_rotation
from domains.models import KeyState
from tests.conftest import publish_domain
from tests.peers.dkim_verifiers import verify_mail_dkim_detailed

pytestmark = pytest.mark.django_db


def relay_one(domain, mx) -> bytes:
    message = accept_message(
        sender=Sender(tenant_id=domain.tenant_id),
        mail_from="news@acme.test",
        recipients=["alice@dest.test"],
        raw=b"From: news@acme.test\r\nTo: alice@dest.test\r\nSubject: keys\r\n\r\nHi.\r\n",
        source=Source.API,
    )
    count = len(mx.messages)
    deliver_message(message.pk)
    return mx.wait_for(count + 1)[-1].data


def signatures(data: bytes, dns_server) -> dict[str, str]:
    """selector -> Mail::DKIM's verdict, for each signature on ``data``."""
    results = verify_mail_dkim_detailed(data, dns_host=dns_server.host, dns_port=dns_server.port)
    verdicts = {}
    for result, detail in results:
        selector = detail.split("s=")[-1].split()[0].strip(",;)")
        verdicts[selector] = result
    return verdicts


def test_rotation_switches_signing_only_after_the_new_record_resolves(
    verified_domain, dns_server, mx
):
    old = verified_domain.active_dkim_key()
    new = start_rotation(domain=verified_domain)
    assert new.state == KeyState.PENDING
    with pytest.raises(KeyActionError, match="already waiting"):
        start_rotation(domain=verified_domain)

    # Not yet published: the check warns and the old key keeps signing.
    dkim = check_domain(verified_domain).result("dkim")
    assert str(dkim.status) == "warning" and new.record_name in dkim.message
    assert signatures(relay_one(verified_domain, mx), dns_server) == {old.selector: "pass"}

    publish_domain(dns_server, "acme.test")  # now lists both keys
    report = check_domain(verified_domain)
    assert str(report.result("dkim").status) == "ok"
    old.refresh_from_db()
    new.refresh_from_db()
    assert (old.state, new.state) == (KeyState.RETIRED, KeyState.ACTIVE)
    assert old.removable_after > new.activated_at
    assert {e.type for e in report.events} >= {"domain.key_activated", "domain.key_retired"}
    assert signatures(relay_one(verified_domain, mx), dns_server) == {new.selector: "pass"}

    # The retired key stays listed, marked removable after the grace period.
    from domains.records import records_for

    retired = [r for r in records_for(verified_domain) if r.host == old.record_name]
    assert retired and not retired[0].required and "remove it" in retired[0].purpose


def test_ed25519_dual_signing(verified_domain, dns_server, mx):
    import dkim

    rsa_key = verified_domain.active_dkim_key()
    ed_key = start_rotation(domain=verified_domain, algorithm="ed25519")
    assert ed_key.record_value.startswith("v=DKIM1; k=ed25519; p=")
    publish_domain(dns_server, "acme.test")
    check_domain(verified_domain)
    assert {k.algorithm for k in verified_domain.signing_keys()} == {"rsa", "ed25519"}

    data = relay_one(verified_domain, mx)
    assert data.count(b"DKIM-Signature:") == 2
    assert b"a=ed25519-sha256" in data and b"a=rsa-sha256" in data
    # Each signature verifies on its own: dkimpy checks both (RFC 8463 needs PyNaCl),
    # Mail::DKIM checks the RSA one at least.
    resolver = dns_server.resolver()

    def dnsfunc(name, timeout=5):
        answer = resolver.resolve(name.decode().rstrip("."), "TXT")
        return b"".join(answer[0].strings)

    verifier = dkim.DKIM(data)
    assert verifier.verify(idx=0, dnsfunc=dnsfunc) and verifier.verify(idx=1, dnsfunc=dnsfunc)
    assert signatures(data, dns_server)[rsa_key.selector] == "pass"


def test_a_retired_key_published_at_the_new_selector_is_called_stale(verified_domain, dns_server):
    old = verified_domain.active_dkim_key()
    new = start_rotation(domain=verified_domain)
    publish_domain(dns_server, "acme.test")
    check_domain(verified_domain)  # new key seen: it signs, the old one is retired
    # A later copy-paste puts the old key's value at the new selector.
    lines = [
        line
        for line in dns_server_zone_lines(verified_domain)
        if not line.startswith(new.record_name)
    ]
    lines.append(f'{new.record_name}. IN TXT "{old.record_value}"')
    dns_server.set_zone("acme.test", lines)
    dkim = check_domain(verified_domain).result("dkim")
    assert str(dkim.status) == "error" and "retired keys" in dkim.message


def dns_server_zone_lines(domain) -> list[str]:
    from domains.records import records_for

    return [r.zone_line() for r in records_for(domain)]
