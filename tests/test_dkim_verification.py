"""The independent DKIM check of received mail (tests/conftest.py, received_mail_dkim):
Mail::DKIM and OpenDKIM verify RSA and Ed25519 signatures alike, catch a bad one of
either, and the platform's relayed mail of a domain with Ed25519 carries both signatures."""

from __future__ import annotations

import base64
import re
import smtplib

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from delivery.accept import Sender, accept_message
from delivery.models import Source
from delivery.relay import deliver_message
from domains.checks.run import check_domain
from domains.dkim_keys import start_rotation
from tests.conftest import MX_ADDRESS, publish_domain, received_dkim_problems
from tests.peers.dkim_verifiers import (
    dkim_signatures,
    signature_problems,
    verify_each_signature,
    verify_messages,
)

DOMAIN = "verifiers.test"
MESSAGE = (
    b"From: Alice <alice@verifiers.test>\r\n"
    b"To: bob@dest.test\r\n"
    b"Subject: both algorithms\r\n"
    b"Message-ID: <both@verifiers.test>\r\n"
    b"\r\n"
    b"Signed twice: RSA and Ed25519.\r\n"
)
HEADERS = [b"from", b"to", b"subject", b"message-id"]


@pytest.fixture(scope="module")
def keys(dns_server) -> dict[str, bytes]:
    """An RSA and an Ed25519 key for verifiers.test, published; selector -> private key
    as dkimpy takes it."""
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ed_key = ed25519.Ed25519PrivateKey.generate()
    rsa_public = rsa_key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    ed_public = ed_key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    dns_server.set_zone(
        DOMAIN,
        [
            f'rsa1._domainkey IN TXT "v=DKIM1; k=rsa; p={base64.b64encode(rsa_public).decode()}"',
            f'ed1._domainkey IN TXT "v=DKIM1; k=ed25519; p={base64.b64encode(ed_public).decode()}"',
        ],
    )
    return {
        "rsa1": rsa_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        ),
        # RFC 8463 with dkimpy: the base64 of the raw 32-byte seed.
        "ed1": base64.b64encode(
            ed_key.private_bytes(
                serialization.Encoding.Raw,
                serialization.PrivateFormat.Raw,
                serialization.NoEncryption(),
            )
        ),
    }


def sign(keys: dict[str, bytes], *selectors: str, message: bytes = MESSAGE) -> bytes:
    signatures = b""
    for selector in selectors:
        signatures += dkim.sign(
            message,
            selector.encode(),
            DOMAIN.encode(),
            keys[selector],
            signature_algorithm=b"ed25519-sha256" if selector == "ed1" else b"rsa-sha256",
            canonicalize=(b"relaxed", b"relaxed"),
            include_headers=HEADERS,
        )
    return signatures + message


def verify(dns_server, message: bytes, tmp_path):
    return verify_each_signature(
        message, dns_host=dns_server.host, dns_port=dns_server.port, workdir=tmp_path
    )


def test_both_verifiers_pass_rsa_and_ed25519_signatures_each(keys, dns_server, tmp_path):
    verdicts = verify(dns_server, sign(keys, "rsa1", "ed1"), tmp_path)
    assert [(v.signature.algorithm, v.signature.selector) for v in verdicts] == [
        ("rsa-sha256", "rsa1"),
        ("ed25519-sha256", "ed1"),
    ]
    for verdict in verdicts:
        assert verdict.mail_dkim == "pass", verdict.describe()
        assert verdict.opendkim_ok, verdict.describe()
        assert f"s={verdict.signature.selector}" in verdict.opendkim_output
    assert signature_problems(verdicts) == []


def _corrupt_ed25519_b(message: bytes) -> bytes:
    """The Ed25519 signature's b= with one bit flipped; everything it covers unchanged."""
    field = next(s.field for s in dkim_signatures(message) if s.algorithm == "ed25519-sha256")
    match = re.search(rb"\bb=([A-Za-z0-9+/=\s]+)", field)
    assert match
    raw = bytearray(base64.b64decode(re.sub(rb"\s+", b"", match.group(1))))
    raw[10] ^= 0x01
    corrupted = field[: match.start(1)] + base64.b64encode(bytes(raw)) + b"\r\n"
    return message.replace(field, corrupted)


@pytest.mark.parametrize(
    ("tamper", "failing"),
    [
        pytest.param(
            lambda m: m.replace(b"Signed twice", b"Signed twice!"), {"rsa1", "ed1"}, id="body"
        ),
        pytest.param(
            lambda m: m.replace(b"Subject: both", b"Subject: Both"), {"rsa1", "ed1"}, id="header"
        ),
        pytest.param(_corrupt_ed25519_b, {"ed1"}, id="ed25519-signature"),
    ],
)
def test_both_verifiers_fail_a_bad_signature_of_either_algorithm(
    keys, dns_server, tmp_path, tamper, failing
):
    signed = sign(keys, "rsa1", "ed1")
    tampered = tamper(signed)
    assert tampered != signed
    verdicts = verify(dns_server, tampered, tmp_path)
    for verdict in verdicts:
        bad = verdict.signature.selector in failing
        assert (verdict.mail_dkim == "fail") is bad, verdict.describe()
        assert verdict.opendkim_ok is not bad, verdict.describe()
    problems = signature_problems(verdicts)
    assert len(problems) == len(failing)


def test_an_ed25519_signature_alone_is_a_problem(keys, dns_server, tmp_path):
    verdicts = verify(dns_server, sign(keys, "ed1"), tmp_path)
    assert [v.ok for v in verdicts] == [True]
    assert signature_problems(verdicts) == [
        "ed25519-sha256 d=verifiers.test s=ed1: Ed25519 signature without an RSA one"
    ]


def test_a_message_with_a_nul_byte_is_left_to_mail_dkim(keys, dns_server, tmp_path):
    """`opendkim -t` cuts lines at a NUL byte (its test mode reads C strings), so only
    Mail::DKIM can judge such a message: a pass stands, a failure still fails."""
    with_nul = MESSAGE.replace(b"Signed twice", b"Signed\x00twice")
    signed = sign(keys, "rsa1", message=with_nul)
    [verdict] = verify(dns_server, signed, tmp_path)
    assert (verdict.mail_dkim, verdict.opendkim_ok, verdict.ok) == ("pass", None, True)
    [verdict] = verify(dns_server, signed.replace(b"twice", b"thrice"), tmp_path)
    assert (verdict.mail_dkim, verdict.ok) == ("fail", False)


def test_several_messages_are_verified_in_one_call(keys, dns_server, tmp_path):
    messages = [sign(keys, "rsa1"), MESSAGE, sign(keys, "rsa1", "ed1")]
    verdicts = verify_messages(
        messages, dns_host=dns_server.host, dns_port=dns_server.port, workdir=tmp_path
    )
    assert [[v.ok for v in found] for found in verdicts] == [[True], [], [True, True]]


def relay(domain, mx, subject: str) -> bytes:
    message = accept_message(
        sender=Sender(tenant_id=domain.tenant_id),
        mail_from="news@acme.test",
        recipients=["alice@dest.test"],
        raw=f"From: news@acme.test\r\nTo: alice@dest.test\r\nSubject: {subject}\r\n\r\n"
        "Hello.\r\n".encode(),
        source=Source.API,
    )
    count = len(mx.messages)
    deliver_message(message.pk)
    return mx.wait_for(count + 1)[-1].data


@pytest.mark.django_db
def test_relayed_mail_of_an_ed25519_domain_has_both_signatures_and_both_verify(
    verified_domain, dns_server, mx, tmp_path
):
    rsa_key = verified_domain.active_dkim_key()
    ed_key = start_rotation(domain=verified_domain, algorithm="ed25519")
    publish_domain(dns_server, "acme.test")
    check_domain(verified_domain)
    ed_key.refresh_from_db()
    assert ed_key.state == "active"

    data = relay(verified_domain, mx, "dual signed")
    verdicts = verify(dns_server, data, tmp_path)
    assert {
        (v.signature.algorithm, v.signature.selector, v.signature.domain) for v in verdicts
    } == {
        ("rsa-sha256", rsa_key.selector, "acme.test"),
        ("ed25519-sha256", ed_key.selector, "acme.test"),
    }
    assert all(v.ok for v in verdicts), [v.describe() for v in verdicts]
    # The check after the test (received_mail_dkim) verifies this message once more.


@pytest.mark.dkim_unchecked(reason="sends the receiver a tampered copy on purpose")
@pytest.mark.django_db
def test_the_check_of_received_mail_names_a_tampered_message(verified_domain, mx, tmp_path_factory):
    good = relay(verified_domain, mx, "original")
    tampered = good.replace(b"Subject: original", b"Subject: altered")
    with smtplib.SMTP(MX_ADDRESS, mx.port, timeout=10) as client:
        client.sendmail("intruder@elsewhere.test", ["bob@dest.test"], tampered)
    mx.wait_for(2)
    problems = received_dkim_problems(mx.messages, workdir_factory=tmp_path_factory)
    assert len(problems) == 1, problems
    assert problems[0].startswith("message to ['bob@dest.test'] from <intruder@elsewhere.test>")
    assert "Mail::DKIM 'fail" in problems[0] and "failed" in problems[0]
    # Unsigned mail is not the check's business.
    with smtplib.SMTP(MX_ADDRESS, mx.port, timeout=10) as client:
        client.sendmail("peer@elsewhere.test", ["bob@dest.test"], b"Subject: plain\r\n\r\nx\r\n")
    mx.wait_for(3)
    assert len(received_dkim_problems(mx.messages, workdir_factory=tmp_path_factory)) == 1
